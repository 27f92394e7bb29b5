"""Sentence classification (sentiment): word vectors -> BiLSTM -> attention pooling -> classes.

corpus (CSV/TSV/JSONL via datasets) -> vocab + label set -> the word-level pipeline
(:mod:`nlp_lstm.tasks.words`: batches, TokenEmbedder, BiLSTMEncoder with attention pooling)
-> ClassifierHead -> accuracy, macro-F1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from nlp_lstm.config import check_fields
from nlp_lstm.contract import Job, Split, length_batches
from nlp_lstm.data.batching import (
    MAX_WORD_CHARS,
    move_batch,
)
from nlp_lstm.data.tables import (
    PTB_BRACKETS,
    LabelledTexts,
    Tokenizer,
    read_hub,
    read_labelled,
    tokenize_spans,
)
from nlp_lstm.data.vectors import EmbeddingsConfig
from nlp_lstm.data.vocab import Vocab
from nlp_lstm.errors import ConfigError, DataError
from nlp_lstm.export import EmbedderGraph, PaddedRNN, export_config, graph_inputs
from nlp_lstm.files import read_lines
from nlp_lstm.modules.heads import ClassifierHead
from nlp_lstm.modules.pooling import PoolingKind, masked_max, masked_mean
from nlp_lstm.tasks.common import (
    check_output_format,
    checkpoint_for,
    eval_batch_size,
    export_model,
    fit,
    input_lines_path,
    json_line,
    load_weights,
    make_bundle,
    make_trainer,
    on_main,
    output_stream,
    predictor_for_run,
    report,
    require_file,
    run_settings,
    saved_configs,
    task_configs,
    task_monitor,
    word_placeholder,
)
from nlp_lstm.tasks.words import (
    WordBatch,
    WordModelConfig,
    WordPredictor,
    build_word_vocabs,
    word_encoder,
    word_split,
)
from nlp_lstm.train.metrics import classification_scores
from nlp_lstm.train.plots import plot_confusion
from nlp_lstm.train.trainer import resolve_device

log = logging.getLogger(__name__)

CORPUS_HINT = (
    "Put SST-2 at <data.root>/sst2/{train_phrases,train,dev,test}.tsv (set data.root=DIR or "
    "NLP_LSTM_DATA=DIR) or name CSV/TSV/JSONL files with data.train=/data.dev=/data.test=; "
    "see data/README.md"
)
REPORTED = ("accuracy", "macro_f1", "n")


@dataclass
class SentimentDataConfig:
    """The ``data`` group for sentence classification."""

    root: str = "data"
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    text_field: str = "sentence"
    label_field: str = "label"
    hf_name: str | None = None  # a hub dataset; train/dev/test then name its splits
    hf_config: str | None = None
    tokenizer: Tokenizer = "whitespace"
    lowercase: bool = False
    min_freq: int = 1
    extend_vocab: bool = True
    cache_dir: str | None = None
    # batch shapes rounded up to multiples of this (sentence and, with char features, word
    # length; unique words: 4x), as for NER: recurring shapes keep the heap whole; 1: exact
    pad_multiple: int = 8

    def __post_init__(self) -> None:
        check_fields(self, at_least_one=("min_freq", "pad_multiple"))


@dataclass
class SentimentModelConfig(WordModelConfig):
    """The ``model`` group for sentence classification: the word-level encoder's settings,
    with the measured SST-2 recipe's defaults (README), and the pooling and classifier."""

    hidden_size: int = 300  # per direction; 300 beat 150 on phrase-level SST-2 (README)
    dropout: float = 0.3  # with chars and the static swap: the measured SST-2 recipe (README)
    pooling: PoolingKind = "attention"
    classifier_hidden: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.classifier_hidden < 0:
            raise ConfigError(f"classifier_hidden must be 0 or more, got {self.classifier_hidden}")


SCHEMAS = {"data": SentimentDataConfig, "model": SentimentModelConfig}  # conf/ holds what differs
METRICS = {"accuracy": "max", "macro_f1": "max"}


class AttentionClassifier(nn.Module):
    """TokenEmbedder -> BiLSTMEncoder with pooling -> ClassifierHead."""

    def __init__(
        self,
        config: SentimentModelConfig,
        vectors: Tensor,
        embeddings: EmbeddingsConfig,
        num_classes: int,
        num_chars: int = 0,
    ) -> None:
        super().__init__()
        self.embedder, self.encoder = word_encoder(
            config, vectors, embeddings, num_chars, pooling=config.pooling
        )
        self.head = ClassifierHead(
            self.encoder.output_size, num_classes, config.classifier_hidden, config.dropout
        )

    def scores(self, batch: WordBatch) -> tuple[Tensor, Tensor | None]:
        """Class scores ``(B, C)`` and attention weights ``(B, T)`` (None without attention)."""
        embedded = self.embedder(batch.words, batch.chars, batch.char_index, batch.char_lengths)
        out = self.encoder(embedded, batch.lengths, batch.mask)
        return self.head(out.pooled), out.attention

    def forward(self, batch: WordBatch) -> tuple[Tensor, int]:
        """Cross-entropy summed over the batch's sentences, and their count."""
        logits, _ = self.scores(batch)
        return F.cross_entropy(logits.float(), batch.targets, reduction="sum"), len(batch.targets)


@dataclass
class Classified:
    """One sentence's predicted class, class probabilities and attention weights."""

    label: int
    probabilities: list[float]
    attention: list[float] | None


def predict(model: AttentionClassifier, batch: WordBatch) -> list[Classified]:
    """Class, probabilities and attention weights of each sentence of the batch."""
    logits, weights = model.scores(batch)
    probs = torch.softmax(logits.float(), -1).cpu().tolist()
    rows = weights.float().cpu().tolist() if weights is not None else [None] * len(probs)
    return [
        Classified(max(range(len(p)), key=p.__getitem__), p, w[:n] if w is not None else None)
        for p, w, n in zip(probs, rows, batch.lengths.tolist(), strict=True)
    ]


def make_score(num_classes: int):
    """``score(outputs, split)``: accuracy, macro-F1, n and the confusion matrix against the
    split's gold label ids."""

    def score(outputs: list[Classified], split: Split) -> dict:
        return classification_scores(list(split.examples), [o.label for o in outputs], num_classes)

    return score


# ---------------------------------------------------------------------------- corpus


def read_split(data: SentimentDataConfig, which: str) -> LabelledTexts:
    """The train/dev/test split named by the config, from a local table or the hub."""
    target = getattr(data, which)
    if data.hf_name:
        return read_hub(
            data.hf_name,
            data.hf_config,
            target,
            data.text_field,
            data.label_field,
            data.tokenizer,
            data.lowercase,
            data.cache_dir,
        )
    path = require_file(target, f"{which} file (data.{which})", CORPUS_HINT)
    return read_labelled(
        path, data.text_field, data.label_field, data.tokenizer, data.lowercase, data.cache_dir
    )


def label_ids(texts: LabelledTexts, labels: Vocab) -> list[int]:
    """Label ids; a label outside the training label set is a DataError at its line."""
    ids = []
    for label, line in zip(texts.labels, texts.lines, strict=True):
        if label not in labels:
            raise DataError(
                texts.path,
                line,
                f"unknown label {label!r} (training labels: {', '.join(labels.itos)})",
            )
        ids.append(labels[label])
    return ids


def _sorted_labels(values: set[str]) -> list[str]:
    numeric = all(v.lstrip("-").isdigit() for v in values)
    return sorted(values, key=int) if numeric else sorted(values)


def setup(cfg: DictConfig, run_dir: Path | None):
    """Read the tables, build vocabulary, label set, vectors and the model: the training Job."""
    data, model_cfg, emb_cfg, trainer = task_configs(
        cfg, run_dir, SentimentDataConfig, SentimentModelConfig
    )
    monitor = task_monitor(cfg, METRICS)

    train_texts = read_split(data, "train")
    dev_texts = read_split(data, "dev")
    has_test = data.test and (data.hf_name or Path(data.test).expanduser().is_file())
    test_texts = read_split(data, "test") if has_test and data.extend_vocab else None
    labels = Vocab(_sorted_labels(set(train_texts.labels)), specials=())
    if len(labels) < 2:
        raise DataError(train_texts.path, None, f"needs at least two labels, found {labels.itos}")

    extra = dev_texts.tokens + (test_texts.tokens if test_texts else [])
    vocabs = build_word_vocabs(train_texts.tokens, extra if data.extend_vocab else [], emb_cfg,
                               data.min_freq, trainer.config.seed, chars=model_cfg.char != "none")  # fmt: skip
    words, chars = vocabs.words, vocabs.chars
    log.info("%d training sentences, %d dev; labels %s; vocab %d words",
             len(train_texts.tokens), len(dev_texts.tokens), labels.itos, len(words))  # fmt: skip
    job = Job(
        model=AttentionClassifier(
            model_cfg, vocabs.vectors, emb_cfg, len(labels), len(chars) if chars else 0
        ),
        train=word_split(
            train_texts.tokens, label_ids(train_texts, labels), words, chars, data.pad_multiple
        ),  # fmt: skip
        dev=word_split(
            dev_texts.tokens, label_ids(dev_texts, labels), words, chars, data.pad_multiple
        ),  # fmt: skip
        predict=predict,
        score=make_score(len(labels)),
        monitor=monitor,
        bundle=make_bundle(
            cfg, {"words": words, "labels": labels, **({"chars": chars} if chars else {})}
        ),
    )
    return job, trainer


def train(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=train``: fit on data.train, select on dev accuracy, write the run folder."""
    job, trainer = setup(cfg, run_dir)
    best = fit(job, trainer)
    labels = job.bundle.vocabs["labels"]
    on_main(
        plot_confusion, best["confusion"], labels, run_dir / "confusion.png", "dev (best epoch)"
    )
    report({k: best[k] for k in REPORTED}, run_dir / "metrics.json")


# ---------------------------------------------------------------------------- inference


@dataclass(frozen=True)
class WeightedToken:
    """A token of the input (``text[start:end]``, before lower-casing) and the weight the
    attention pooling gave it (the weights of a text sum to one)."""

    text: str
    start: int
    end: int
    weight: float


@dataclass(frozen=True)
class Prediction:
    """A text's class: its ``label``, that label's probability (``score``), every label's
    probability and each token's attention weight (uniform without attention pooling)."""

    label: str
    score: float
    probs: dict[str, float]
    attention: tuple[WeightedToken, ...]


class Classifier(WordPredictor):
    """The sentiment (text classification) predictor: ``classifier("a gorgeous film")`` ->
    :class:`Prediction`; a list of texts -> a list. Texts are tokenised as the training
    data was (``data.tokenizer``, ``data.lowercase`` of the checkpoint) and classified in
    batches by length; words never seen in training get their pretrained vector when one
    exists."""

    task = "sentiment"
    input_kind = "a non-empty str"
    data_config, model_config = SentimentDataConfig, SentimentModelConfig

    def __init__(self, model: AttentionClassifier, bundle, device, batch_size=256, precision="32"):
        super().__init__(model, bundle, device, batch_size, precision)
        self.labels = Vocab.from_list(bundle.vocabs["labels"], specials=())

    def check_input(self, item, position: int) -> None:
        super().check_input(item, position)
        if not item.strip():
            raise ValueError(f"input {position}: an empty text has no class")

    def tokenize(self, text: str) -> list[tuple[str, int, int]]:
        """The tokens the model reads from ``text``, with their offsets."""
        return tokenize_spans(text, self.data.tokenizer, self.data.lowercase)

    def run(self, texts: list[str]) -> list[Prediction]:
        spans = [self.tokenize(text) for text in texts]
        split = self.split([[token for token, _, _ in s] for s in spans])
        outputs: list[Classified | None] = [None] * len(texts)
        for positions in length_batches(split.lengths, self.batch_size):
            batch = move_batch(split.collate(positions), self.device)
            with self.inference():
                for row, result in zip(batch.indices.tolist(), predict(self.model, batch), strict=True):  # fmt: skip
                    outputs[row] = result
        results = []
        for text, tokens, out in zip(texts, spans, outputs, strict=True):
            weights = out.attention or [1.0 / len(tokens)] * len(tokens)
            attention = tuple(
                WeightedToken(text[a:b], a, b, round(w, 6))
                for (_, a, b), w in zip(tokens, weights, strict=True)
            )
            probs = {name: round(p, 6) for name, p in zip(self.labels.itos, out.probabilities, strict=True)}  # fmt: skip
            label = self.labels.itos[out.label]
            results.append(Prediction(label, probs[label], probs, attention))
        return results


def load(
    checkpoint, device="auto", batch_size: int | None = None, precision: str = "32"
) -> Classifier:
    """The :class:`Classifier` of a checkpoint (no training data needed)."""
    bundle = checkpoint.bundle
    _, model_cfg, emb_cfg = saved_configs(bundle, SentimentDataConfig, SentimentModelConfig)
    labels = bundle.vocabs["labels"]
    chars = bundle.vocabs.get("chars")
    model = AttentionClassifier(model_cfg, word_placeholder(bundle.vocabs["words"], emb_cfg), emb_cfg,
                                len(labels), len(chars) if chars is not None else 0)  # fmt: skip
    load_weights(model, checkpoint)
    return Classifier(model, bundle, resolve_device(device),
                      batch_size or eval_batch_size(bundle), precision)  # fmt: skip


def test(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=test ckpt=PATH data.test=FILE``: accuracy, macro-F1 and n of a labelled table."""
    trainer = make_trainer(cfg, None)
    checkpoint = checkpoint_for(cfg, "sentiment")
    classifier = load(checkpoint, trainer.device)
    texts = read_split(run_settings(checkpoint.bundle, cfg, SentimentDataConfig), "test")
    split = classifier.split(texts.tokens, label_ids(texts, classifier.labels))
    scores = trainer.evaluate(classifier.model, split, predict, make_score(len(classifier.labels)))
    on_main(plot_confusion, scores["confusion"], classifier.labels.itos,
            run_dir / "confusion.png", "test")  # fmt: skip
    report({k: scores[k] for k in REPORTED}, run_dir / "test_metrics.json")


def predict_mode(cfg: DictConfig, run_dir: Path, top_words: int = 3) -> None:
    """``mode=predict ckpt=PATH input=FILE output=FILE`` (or stdin/stdout): for each line of
    text, ``label<TAB>probability<TAB>word:weight ...<TAB>text``, the words being those the
    attention pooling weighted most (``output_format=jsonl``: each line's
    :class:`Prediction` as JSON, what ``nlp_lstm.load`` gives)."""
    output_format = check_output_format(cfg)
    classifier = predictor_for_run(cfg, "sentiment")
    path = input_lines_path(cfg, run_dir)
    lines = [line for line in read_lines(path, "input file") if line.strip()]
    if not lines:
        raise DataError(path, None, "input holds no text")
    predictions = classifier.predict(lines)
    with output_stream(cfg) as out:
        for text, result in zip(lines, predictions, strict=True):
            if output_format == "jsonl":
                out.write(json_line(result))
                continue
            top = "-"
            if classifier.model.encoder.attention is not None:
                ranked = sorted(result.attention, key=lambda t: -t.weight)[:top_words]
                top = " ".join(f"{t.text}:{t.weight:.2f}" for t in ranked)
            out.write(f"{result.label}\t{result.score:.4f}\t{top}\t{text}\n")
    log.info("classified %d lines", len(predictions))


# ---------------------------------------------------------------------------- export


class ClassifierGraph(nn.Module):
    """The classifier as one exportable graph over plain tensors: ``words (B, T)`` and
    ``lengths (B,)`` -> class probabilities ``(B, C)`` and pooling weights ``(B, T)``
    (uniform over real tokens for pooling other than attention). The same weights and
    results as :class:`AttentionClassifier`; :func:`classifier_graph` picks this one or
    :class:`CharClassifierGraph`."""

    def __init__(self, classifier: AttentionClassifier) -> None:
        super().__init__()
        encoder = classifier.encoder
        self.embed = EmbedderGraph(classifier.embedder)
        self.rnn = PaddedRNN(encoder.rnn)
        self.pooling = encoder.pooling or "last"
        self.attention = encoder.attention
        self.head = classifier.head

    def forward(self, words: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.classify(self.embed(words, None), lengths)

    def classify(self, embedded: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Probabilities and pooling weights from embedded tokens ``(B, T, D)``."""
        states, final = self.rnn(embedded, lengths)
        steps = embedded.shape[1]
        mask = torch.arange(steps, device=embedded.device).unsqueeze(0) < lengths.unsqueeze(1)
        weights = mask.float() / lengths.unsqueeze(1).float()
        if self.attention is not None:
            pooled, weights = self.attention(states, mask)
        elif self.pooling == "mean":
            pooled = masked_mean(states, mask)
        elif self.pooling == "max":
            pooled = masked_max(states, mask)
        else:
            pooled = final
        return torch.softmax(self.head(pooled).float(), dim=-1), weights


class CharClassifierGraph(ClassifierGraph):
    """:class:`ClassifierGraph` of a model with char features: it reads ``chars (B, T, L)``
    too, each token's char ids (see :func:`nlp_lstm.export.graph_inputs`)."""

    def forward(self, words: Tensor, lengths: Tensor, chars: Tensor) -> tuple[Tensor, Tensor]:
        return self.classify(self.embed(words, chars), lengths)


def classifier_graph(classifier: AttentionClassifier) -> ClassifierGraph:
    """The exportable graph of a classifier, with a ``chars`` input when it reads them."""
    has_chars = classifier.embedder.chars is not None
    return (CharClassifierGraph if has_chars else ClassifierGraph)(classifier)


def export_mode(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=export ckpt=PATH export.format=torchscript|onnx export.path=FILE``: the
    classifier as one graph returning class probabilities, and FILE.json with its
    vocabulary, labels and tokenisation."""
    export_config(cfg)  # a missing export.path fails before any work
    classifier = load(checkpoint_for(cfg, "sentiment"), "cpu")
    sentences = [["a", "gripping", "film", "."], ["dull", "."]]
    word_ids, char_ids, lengths = graph_inputs(sentences, classifier.words, classifier.chars)
    example = (word_ids, lengths) if char_ids is None else (word_ids, lengths, char_ids)
    metadata = {
        "task": "sentiment",
        "words": classifier.words.itos,
        "labels": classifier.labels.itos,
        "tokenizer": classifier.data.tokenizer,
        "lowercase": classifier.data.lowercase,
        "ptb_brackets": PTB_BRACKETS,
        "pad_id": 0,
        "unk_id": 1,
    }
    inputs = {"words": {0: "batch", 1: "tokens"}, "lengths": {0: "batch"}}
    if classifier.chars is not None:
        metadata |= {"chars": classifier.chars.itos, "max_word_chars": MAX_WORD_CHARS}
        inputs["chars"] = {0: "batch", 1: "tokens", 2: "chars"}
    outputs = {"probabilities": {0: "batch"}, "weights": {0: "batch", 1: "tokens"}}
    export_model(
        cfg, run_dir, classifier_graph(classifier.model), example, inputs, outputs, metadata
    )


MODES = {"train": train, "test": test, "predict": predict_mode, "export": export_mode}
