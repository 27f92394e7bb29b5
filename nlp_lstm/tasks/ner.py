"""Named-entity recognition: word + char features -> BiLSTM -> CRF, on CoNLL files.

corpus (CoNLL) -> vocab + tag set -> the word-level pipeline (:mod:`nlp_lstm.tasks.words`:
batches, TokenEmbedder, BiLSTMEncoder) -> TaggingHead (CRF, constrained Viterbi) -> entity
P/R/F1 (conlleval's rules, equal to seqeval's default mode).

This file holds what makes the task: its configs, the tagger model, its scoring, raw-text
tagging with entity probabilities (:class:`Tagger`), and its CLI modes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from nlp_lstm.config import check_fields
from nlp_lstm.contract import Job, Split, length_batches
from nlp_lstm.data.batching import (
    MAX_WORD_CHARS,
    move_batch,
)
from nlp_lstm.data.conll import (
    Sentence,
    allowed_transitions,
    convert_tags,
    detect_scheme,
    looks_like_conll,
    read_conll,
    to_iob2,
)
from nlp_lstm.data.rawtext import Token, split_sentences, tokenize
from nlp_lstm.data.vectors import EmbeddingsConfig
from nlp_lstm.data.vocab import Vocab
from nlp_lstm.errors import ConfigError, DataError
from nlp_lstm.export import EmbedderGraph, PaddedRNN, export_config, graph_inputs
from nlp_lstm.files import read_lines
from nlp_lstm.modules.crf import CRF, chunk_log_probs, forward_backward, tag_marginals
from nlp_lstm.modules.heads import CRFImpl, TaggingHead
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
from nlp_lstm.train.metrics import entity_chunks, entity_scores, per_type_table
from nlp_lstm.train.trainer import resolve_device

log = logging.getLogger(__name__)

CORPUS_HINT = (
    "Put CoNLL-2003 at <data.root>/conll2003/{train,dev,test}.txt (set data.root=DIR or "
    "NLP_LSTM_DATA=DIR) or name files with data.train=/data.dev=/data.test=; see data/README.md"
)


@dataclass
class NERDataConfig:
    """The ``data`` group for NER."""

    root: str = "data"
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    token_column: int = 0
    tag_column: int = -1
    tag_scheme: Literal["iob2", "bioes"] = "bioes"
    min_freq: int = 1
    extend_vocab: bool = True
    # batch shapes rounded up to multiples of this (sentence and word length; unique words:
    # 4x): recurring shapes keep the heap from fragmenting (README: memory); 1: exact shapes
    pad_multiple: int = 8

    def __post_init__(self) -> None:
        check_fields(self, at_least_one=("min_freq", "pad_multiple"))


@dataclass
class NERModelConfig(WordModelConfig):
    """The ``model`` group for NER (see conf/model/bilstm_crf.yaml): the word-level
    encoder's settings, with NER's defaults, and the CRF's."""

    hidden_size: int = 200
    dropout: float = 0.5
    word_dropout: float = 0.05
    crf: bool = True
    crf_impl: CRFImpl = "fast"


SCHEMAS = {"data": NERDataConfig, "model": NERModelConfig}  # conf/ holds what differs
METRICS = {"f1": "max", "precision": "max", "recall": "max"}


# ---------------------------------------------------------------------------- model


class BiLSTMCRFTagger(nn.Module):
    """TokenEmbedder -> BiLSTMEncoder -> TaggingHead."""

    def __init__(
        self,
        config: NERModelConfig,
        vectors: Tensor,
        embeddings: EmbeddingsConfig,
        num_chars: int,
        tags: list[str],
        scheme: str,
    ) -> None:
        super().__init__()
        self.embedder, self.encoder = word_encoder(config, vectors, embeddings, num_chars)
        constraints = tuple(torch.tensor(m) for m in allowed_transitions(tags, scheme))
        self.head = TaggingHead(
            self.encoder.output_size, len(tags), config.crf, config.crf_impl, constraints
        )

    def states(self, batch: WordBatch) -> Tensor:
        embedded = self.embedder(batch.words, batch.chars, batch.char_index, batch.char_lengths)
        return self.encoder(embedded, batch.lengths, batch.mask).states

    def forward(self, batch: WordBatch) -> tuple[Tensor, int]:
        """Negative log-likelihood summed over the batch's sentences, and their count."""
        return self.head.loss(self.states(batch), batch.targets, batch.mask), batch.mask.shape[0]

    def decode(self, batch: WordBatch) -> Tensor:
        """Best tag ids ``(B, T)`` (constrained Viterbi with a CRF), 0 at padding."""
        return self.head.decode(self.states(batch), batch.mask)


def predict(model: BiLSTMCRFTagger, batch: WordBatch) -> list[list[int]]:
    """Tag ids of each sentence of the batch."""
    paths = model.decode(batch).cpu().tolist()
    return [path[:length] for path, length in zip(paths, batch.lengths.tolist(), strict=True)]


def make_score(tags: Vocab, scheme: str):
    """``score(outputs, split)``: entity P/R/F1 of predicted tag ids against the split's
    gold IOB2 tags."""

    def score(outputs: list[list[int]], split: Split) -> dict:
        predicted = [to_iob2(tags.decode(path), scheme) for path in outputs]
        scores = entity_scores([s.tags for s in split.examples], predicted)
        log.info("entity scores:\n%s", per_type_table(scores))
        return scores

    return score


# ---------------------------------------------------------------------------- corpus


def _read(path: Path, data: NERDataConfig, what: str) -> list[Sentence]:
    return read_conll(path, data.token_column, data.tag_column, what=what)


def _with_iob2_tags(sentences: list[Sentence]) -> list[Sentence]:
    """The sentences with their gold tags in IOB2, the scheme scores are computed in."""
    scheme = detect_scheme([s.tags for s in sentences])
    return [Sentence(s.tokens, to_iob2(s.tags, scheme), s.line) for s in sentences]


def setup(cfg: DictConfig, run_dir: Path | None):
    """Read the corpus, build vocabularies, vectors and the model: the training Job."""
    data, model_cfg, emb_cfg, trainer = task_configs(cfg, run_dir, NERDataConfig, NERModelConfig)
    monitor = task_monitor(cfg, METRICS)

    train_path = require_file(data.train, "training file (data.train)", CORPUS_HINT)
    dev_path = require_file(data.dev, "dev file (data.dev)", CORPUS_HINT)
    train_sents = _read(train_path, data, "training file")
    dev_sents = _read(dev_path, data, "dev file")
    has_test = data.test and Path(data.test).is_file()
    test_sents = _read(Path(data.test), data, "test file") if has_test else []

    source_scheme = detect_scheme([s.tags for s in train_sents])
    log.info(
        "training tags look like %s; training in %s", source_scheme.upper(), data.tag_scheme.upper()
    )
    train_tags = [convert_tags(s.tags, source_scheme, data.tag_scheme) for s in train_sents]
    tag_vocab = Vocab(
        sorted({t for tags in train_tags for t in tags}, key=lambda t: (t != "O", t[2:], t)),
        specials=(),
    )

    extra = dev_sents + test_sents if data.extend_vocab else []
    vocabs = build_word_vocabs([s.tokens for s in train_sents], [s.tokens for s in extra],
                               emb_cfg, data.min_freq, trainer.config.seed)  # fmt: skip
    words, chars = vocabs.words, vocabs.chars
    log.info("vocab %d words, %d tags %s", len(words), len(tag_vocab), tag_vocab.itos)
    dev_sents = _with_iob2_tags(dev_sents)
    job = Job(
        model=BiLSTMCRFTagger(
            model_cfg, vocabs.vectors, emb_cfg, len(chars), tag_vocab.itos, data.tag_scheme
        ),
        train=word_split(
            [s.tokens for s in train_sents],
            [tag_vocab.encode(t) for t in train_tags],
            words,
            chars,
            data.pad_multiple,
            examples=train_sents,
        ),  # fmt: skip
        dev=word_split(
            [s.tokens for s in dev_sents], None, words, chars, data.pad_multiple, examples=dev_sents
        ),  # fmt: skip
        predict=predict,
        score=make_score(tag_vocab, data.tag_scheme),
        monitor=monitor,
        bundle=make_bundle(
            cfg, {"words": words, "chars": chars, "tags": tag_vocab}, scheme=data.tag_scheme
        ),
    )
    return job, trainer


def train(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=train``: fit on data.train, select on data.dev, write the run folder."""
    job, trainer = setup(cfg, run_dir)
    report(fit(job, trainer), run_dir / "metrics.json")


# ---------------------------------------------------------------------------- inference


@dataclass(frozen=True)
class Entity:
    """An entity found in a text: ``text[start:end] == entity.text`` in the caller's text.
    ``score`` is its probability under the CRF: the summed probability of every tag path
    that yields exactly this entity (forward-backward over the constrained transitions)."""

    text: str
    label: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class TaggedText:
    """One input, tagged: its tokens (with offsets), sentences (token ranges
    ``[first, end)``), one IOB2 tag per token, its entities and, on request, each token's
    tag marginals ``(tokens, len(Tagger.tag_set))`` in the model's own scheme."""

    text: str
    tokens: tuple[Token, ...]
    sentences: tuple[tuple[int, int], ...]
    tags: tuple[str, ...]
    entities: tuple[Entity, ...]
    marginals: np.ndarray | None = None


def chunk_masks(tags: list[str], kinds: list[str]) -> tuple[Tensor, Tensor]:
    """For chunks of the given types, the tags that open one (B-, S-) and those that
    continue one (I-, E-), as ``(chunks, tags)`` boolean masks (see
    :func:`nlp_lstm.modules.crf.chunk_log_probs`)."""
    types = sorted(set(kinds))
    row = {kind: i for i, kind in enumerate(types)}
    opens = torch.zeros(len(types), len(tags), dtype=torch.bool)
    continues = torch.zeros(len(types), len(tags), dtype=torch.bool)
    for k, tag in enumerate(tags):
        if tag[2:] in row:
            (opens if tag[0] in "BS" else continues)[row[tag[2:]], k] = True
    index = torch.tensor([row[kind] for kind in kinds], dtype=torch.long)
    return opens[index], continues[index]


class Tagger(WordPredictor):
    """The NER predictor: raw text (or token lists) in, entities with character offsets
    and probabilities out. ``tagger("Peter Blackburn visited Berlin.")`` -> a list of
    :class:`Entity`; ``tagger([text, ...])`` -> one list per text; a token list
    (``[["Peter", "Blackburn"]]``) is one already tokenised sentence, its offsets into the
    tokens joined by single spaces. :meth:`tag` returns everything (:class:`TaggedText`).

    Raw text is cut into tokens and sentences as CoNLL-2003 is
    (:mod:`nlp_lstm.data.rawtext`), and tagged sentence by sentence, batched by length.
    Words never seen in training get their pretrained vector when one exists.
    """

    task = "ner"
    input_kind = "a str (raw text) or a list of str (tokens)"
    data_config, model_config = NERDataConfig, NERModelConfig

    def __init__(self, model: BiLSTMCRFTagger, bundle, device, batch_size=64, precision="32"):
        super().__init__(model, bundle, device, batch_size, precision)
        self.tags = Vocab.from_list(bundle.vocabs["tags"], specials=())
        self.scheme = bundle.extras["scheme"]

    @property
    def tag_set(self) -> list[str]:
        """The model's tags (in its own scheme), the columns of ``TaggedText.marginals``."""
        return list(self.tags.itos)

    @property
    def labels(self) -> list[str]:
        """The entity types the model knows."""
        return sorted({t[2:] for t in self.tags.itos if t != "O"})

    def check_input(self, item, position: int) -> None:
        if isinstance(item, str):
            return
        if not isinstance(item, (list, tuple)):
            raise TypeError(
                f"input {position}: expected {self.input_kind}, got {type(item).__name__}"
            )
        for token in item:
            if not isinstance(token, str) or not token or token != token.strip() or " " in token:
                raise ValueError(
                    f"input {position}: tokens must be non-empty strings without spaces, "
                    f"got {token!r}"
                )

    def run(self, inputs: list, marginals: bool = False, whole: bool = False) -> list:
        tagged = self._tag(inputs, marginals)
        return tagged if whole else [t.entities for t in tagged]

    def tag(self, inputs, marginals: bool = False) -> list[TaggedText]:
        """Tokens, sentences, IOB2 tags, entities and (``marginals=True``) per-token tag
        marginals of each input; one input (not in a list) gives one :class:`TaggedText`."""
        if self.is_single(inputs):
            return self.tag([inputs], marginals)[0]
        return self.predict(inputs, marginals=marginals, whole=True)

    # ------------------------------------------------------------------ internals

    def _tag(self, inputs: list, marginals: bool) -> list[TaggedText]:
        pieces = [cut_input(item) for item in inputs]  # (text, tokens, sentence ranges)
        words = [[t.text for t in tokens[a:b]] for _, tokens, ranges in pieces for a, b in ranges]
        tagged = self._tag_sentences(words, marginals)
        results, done = [], 0
        for text, tokens, ranges in pieces:
            tags: list[str] = []
            entities: list[Entity] = []
            parts = []
            mine, done = tagged[done : done + len(ranges)], done + len(ranges)
            for (unit_tags, chunks, probs), (first_token, _) in zip(mine, ranges, strict=True):
                tags += unit_tags
                for kind, first, last, score in chunks:
                    start, end = tokens[first_token + first].start, tokens[first_token + last].end
                    entities.append(Entity(text[start:end], kind, start, end, score))
                parts.append(probs)
            table = None
            if marginals:
                table = np.concatenate(parts) if parts else np.zeros((0, len(self.tags)))
            results.append(TaggedText(text, tuple(tokens), tuple(ranges), tuple(tags),
                                      tuple(entities), table))  # fmt: skip
        return results

    def _tag_sentences(self, sentences: list[list[str]], marginals: bool) -> list[tuple]:
        """``(IOB2 tags, entities, marginals or None)`` of each token list, in order,
        batched by length."""
        out: list[tuple] = [None] * len(sentences)
        split = self.split(sentences)
        for positions in length_batches(split.lengths, self.batch_size):
            batch = move_batch(split.collate(positions), self.device)
            with self.inference():
                paths, chunks, table = decode_with_scores(self.model, batch, self.tags.itos,
                                                          self.scheme, marginals)  # fmt: skip
            for row, unit in enumerate(batch.indices.tolist()):
                probs = table[row, : len(paths[row])] if table is not None else None
                out[unit] = (paths[row], chunks[row], probs)
        return out


def cut_input(item: str | list[str]) -> tuple[str, list[Token], list[tuple[int, int]]]:
    """An input's text, its tokens and its sentences (token ranges): raw text is cut as
    CoNLL is; a token list is one sentence, its offsets into the tokens joined by spaces."""
    if isinstance(item, str):
        tokens, ranges, first = tokenize(item), [], 0
        for sentence in split_sentences(item, tokens):
            ranges.append((first, first + len(sentence)))
            first += len(sentence)
        return item, tokens, ranges
    tokens, at = [], 0
    for token in item:
        tokens.append(Token(token, at, at + len(token)))
        at += len(token) + 1
    return " ".join(item), tokens, [(0, len(tokens))] if tokens else []


def decode_with_scores(model: BiLSTMCRFTagger, batch: WordBatch, tags: list[str], scheme: str,
                       marginals: bool = False):  # fmt: skip
    """Each sentence's best tags (in IOB2), its entities ``(type, first, last,
    probability)`` and (with ``marginals``) the tag marginals ``(B, T, K)`` as a NumPy
    array."""
    head = model.head
    emissions = head(model.states(batch))
    best = head.decode_emissions(emissions, batch.mask)
    lengths = batch.lengths.tolist()
    paths = [
        to_iob2([tags[k] for k in path[:n]], scheme)
        for path, n in zip(best.cpu().tolist(), lengths, strict=True)
    ]
    spans = [
        (row, kind, first, last)
        for row, path in enumerate(paths)
        for kind, first, last in entity_chunks(path)
    ]
    chunks: list[list[tuple[str, int, int, float]]] = [[] for _ in paths]
    table = None
    if spans or marginals:
        start, end, trans = head.potentials()
        mask = batch.mask
        log_alpha, log_beta, log_z = forward_backward(emissions, mask, start, end, trans)
        if spans:
            opens, continues = chunk_masks(tags, [kind for _, kind, _, _ in spans])
            device = emissions.device
            rows, firsts, lasts = (
                torch.tensor([span[i] for span in spans], device=device) for i in (0, 2, 3)
            )
            scores = chunk_log_probs(
                log_alpha, log_beta, log_z, emissions, trans, end,
                batch.lengths.to(device), rows, firsts, lasts,
                opens.to(device), continues.to(device),
            ).exp().tolist()  # fmt: skip
            for (row, kind, first, last), score in zip(spans, scores, strict=True):
                chunks[row].append((kind, first, last, round(min(score, 1.0), 6)))
        if marginals:
            table = tag_marginals(log_alpha, log_beta, log_z, mask).float().cpu().numpy()
    return paths, chunks, table


def load(checkpoint, device="auto", batch_size: int | None = None, precision: str = "32") -> Tagger:
    """The :class:`Tagger` of a checkpoint (no training data needed)."""
    bundle = checkpoint.bundle
    _, model_cfg, emb_cfg = saved_configs(bundle, NERDataConfig, NERModelConfig)
    vocabs = bundle.vocabs  # the Tagger builds the Vocabs; the model needs only sizes
    model = BiLSTMCRFTagger(model_cfg, word_placeholder(vocabs["words"], emb_cfg), emb_cfg,
                            len(vocabs["chars"]), vocabs["tags"], bundle.extras["scheme"])  # fmt: skip
    load_weights(model, checkpoint)
    return Tagger(model, bundle, resolve_device(device), batch_size or eval_batch_size(bundle),
                  precision)  # fmt: skip


def test(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=test ckpt=PATH data.test=FILE``: entity scores of a CoNLL file."""
    trainer = make_trainer(cfg, None)
    checkpoint = checkpoint_for(cfg, "ner")
    tagger = load(checkpoint, trainer.device)
    data = run_settings(checkpoint.bundle, cfg, NERDataConfig)
    path = require_file(data.test, "test file (data.test)", CORPUS_HINT)
    sentences = _with_iob2_tags(_read(path, data, "test file"))
    split = tagger.split([s.tokens for s in sentences], examples=sentences)
    scores = trainer.evaluate(tagger.model, split, predict, make_score(tagger.tags, tagger.scheme))
    report(scores, run_dir / "test_metrics.json")


INPUT_FORMATS = ("text", "tokens", "conll")


def predict_mode(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=predict ckpt=PATH input=FILE output=FILE``: tag each line of raw text
    (``input_format=text``: cut into tokens and sentences as CoNLL is), of whitespace-
    separated tokens (``tokens``: a sentence a line) or a CoNLL file (``conll``), writing
    ``token<TAB>tag`` lines and a blank line after each sentence; ``output_format=jsonl``
    writes each input's entities as one JSON line instead (what ``nlp_lstm.load`` gives).
    The format is never guessed: a line of raw text whose last word looks like a tag
    ("Drive north on I-95") stays text."""
    input_format = cfg.get("input_format", "text")
    if input_format not in INPUT_FORMATS:
        raise ConfigError(f"input_format must be one of {', '.join(INPUT_FORMATS)}, not {input_format!r}")  # fmt: skip
    output_format = check_output_format(cfg)
    predictor = predictor_for_run(cfg, "ner")
    path = input_lines_path(cfg, run_dir)
    if input_format == "conll":
        inputs = [s.tokens for s in _read(path, run_settings(predictor.bundle, cfg, NERDataConfig), "input file")]  # fmt: skip
    else:
        lines = [line for line in read_lines(path, "input file") if line.strip()]
        inputs = [line.split() for line in lines] if input_format == "tokens" else lines
        if input_format == "text" and looks_like_conll(path):
            log.warning("the input looks like a CoNLL file: pass input_format=conll to read it so")
    if not inputs:
        raise DataError(path, None, "input holds no sentences")
    tagged = predictor.tag(inputs)
    with output_stream(cfg) as out:
        for result in tagged:
            if output_format == "jsonl":
                out.write(json_line({"text": result.text, "entities": result.entities}))
                continue
            for first, end in result.sentences:
                for token, tag in zip(
                    result.tokens[first:end], result.tags[first:end], strict=True
                ):
                    out.write(f"{token.text}\t{tag}\n")
                out.write("\n")
    log.info("tagged %d inputs (input_format=%s)", len(tagged), input_format)


# ---------------------------------------------------------------------------- export


class TaggerGraph(nn.Module):
    """The tagger as one exportable graph over plain tensors:
    ``words (B, T)``, ``chars (B, T, L)`` (each token's char ids, 0-padded; padding tokens
    all 0) and ``lengths (B,)`` -> tag ids ``(B, T)``, 0 at padding (constrained Viterbi
    with a CRF). The same weights and results as :class:`BiLSTMCRFTagger`."""

    def __init__(self, tagger: BiLSTMCRFTagger) -> None:
        super().__init__()
        embedder, head = tagger.embedder, tagger.head
        if head.crf is not None and not isinstance(head.crf, CRF):
            raise ConfigError(
                "export needs model.crf_impl=fast (pytorch-crf's CRF is not exported)"
            )
        self.embed = EmbedderGraph(embedder)
        self.encoder = PaddedRNN(tagger.encoder.rnn)
        self.projection = head.projection
        self.crf = head.crf

    def forward(self, words: Tensor, chars: Tensor, lengths: Tensor) -> Tensor:
        steps = words.shape[1]
        states, _ = self.encoder(self.embed(words, chars), lengths)
        emissions = self.projection(states)
        mask = torch.arange(steps, device=words.device).unsqueeze(0) < lengths.unsqueeze(1)
        if self.crf is not None:
            return self.crf.viterbi(emissions, mask)[0]
        return emissions.argmax(2).masked_fill(~mask, 0)


def export_mode(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=export ckpt=PATH export.format=torchscript|onnx export.path=FILE``: the
    tagger with its Viterbi as one graph returning tag ids, and FILE.json with its
    vocabularies and tag set."""
    export_config(cfg)  # a missing export.path fails before any work
    tagger = load(checkpoint_for(cfg, "ner"), "cpu")
    example = graph_inputs([["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]],
                           tagger.words, tagger.chars)  # fmt: skip
    metadata = {
        "task": "ner",
        "words": tagger.words.itos,
        "chars": tagger.chars.itos,
        "tags": tagger.tags.itos,
        "tag_scheme": tagger.scheme,
        "pad_id": 0,
        "unk_id": 1,
        "max_word_chars": MAX_WORD_CHARS,
    }
    batch_tokens = {0: "batch", 1: "tokens"}
    inputs = {"words": batch_tokens, "chars": {**batch_tokens, 2: "chars"}, "lengths": {0: "batch"}}
    export_model(
        cfg,
        run_dir,
        TaggerGraph(tagger.model.cpu()),
        example,
        inputs,
        {"tags": batch_tokens},
        metadata,
    )


MODES = {"train": train, "test": test, "predict": predict_mode, "export": export_mode}
