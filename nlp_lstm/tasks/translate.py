"""Translation: an LSTM encoder-decoder with attention, beam search and sacreBLEU.

parallel text (``<prefix>.<lang>`` pairs) -> BPE or word tokenisers (HF ``tokenizers``) ->
length-bucketed batches -> source embedding -> BiLSTMEncoder -> AttentionDecoder (input
feeding) -> label-smoothed cross-entropy per target token; greedy or beam search ->
detokenised text -> sacreBLEU and chrF against the raw reference lines.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from nlp_lstm.config import check_fields, to_dataclass
from nlp_lstm.contract import Job, Predictor, Split, length_batches
from nlp_lstm.data.batching import lengths_mask, move_batch, pad
from nlp_lstm.data.parallel import (
    TokenizerKind,
    decode,
    encode,
    load_tokenizer,
    read_parallel,
    read_side,
    side_path,
    train_tokenizer,
)
from nlp_lstm.data.vectors import EmbeddingsConfig, pretrained_rows_for
from nlp_lstm.errors import ConfigError, UserError
from nlp_lstm.export import ExportConfig, StepwiseBiLSTM, export_config, export_graph
from nlp_lstm.modules.attention import AttentionKind
from nlp_lstm.modules.decoder import AttentionDecoder, DecoderState, Memory
from nlp_lstm.modules.dropout import Dropout
from nlp_lstm.modules.encoder import BiLSTMEncoder
from nlp_lstm.modules.loss import summed_cross_entropy
from nlp_lstm.modules.search import SpecialIds, beam_search, greedy_search
from nlp_lstm.tasks.common import (
    check_output_format,
    checkpoint_for,
    eval_batch_size,
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
    report_export,
    require_file,
    run_settings,
    saved_configs,
    task_configs,
    task_monitor,
)
from nlp_lstm.train.plots import plot_attention
from nlp_lstm.train.trainer import Trainer, resolve_device

log = logging.getLogger(__name__)

CORPUS_HINT = (
    "Put Multi30k at <data.root>/multi30k/{train,val}.{de,en} (set data.root=DIR or "
    "NLP_LSTM_DATA=DIR) or name file prefixes with data.train=/data.dev=/data.test= "
    "(data.test=/x/test2016 reads /x/test2016.de and /x/test2016.en); see data/README.md"
)
IDS = SpecialIds()
METRICS = {"bleu": "max", "chrf": "max"}


@dataclass
class TranslateDataConfig:
    """The ``data`` group for translation. ``train``/``dev``/``test`` are file prefixes."""

    root: str = "data"
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    src_lang: str = "de"
    tgt_lang: str = "en"
    tokenizer: TokenizerKind = "bpe"
    vocab_size: int = 8000  # per side (or in all, with joint_vocab)
    joint_vocab: bool = False  # one tokenizer trained on both sides
    min_freq: int = 1  # word tokenizer: keep words seen this often (BPE: pairs to merge)

    def __post_init__(self) -> None:
        check_fields(self, at_least_one=("vocab_size", "min_freq"))


@dataclass
class TranslateModelConfig:
    """The ``model`` group for translation."""

    embedding_dim: int = 256
    hidden_size: int = 512  # decoder size; the encoder runs hidden_size // 2 per direction
    num_layers: int = 1
    dropout: float = 0.3
    attention: AttentionKind = "luong_general"
    input_feeding: bool = True
    tie_embeddings: bool = True  # the output layer reuses the target embedding matrix
    label_smoothing: float = 0.1
    pretrained: Literal["none", "source", "target", "both"] = "none"  # rows from `embeddings`
    param_init: float = 0.0  # > 0: every weight uniform in +-param_init (OpenNMT-py's
    # param_init); 0: PyTorch's initialisation of each layer

    def __post_init__(self) -> None:
        check_fields(self, at_least_one=("embedding_dim", "hidden_size", "num_layers"),
                     probabilities=("dropout", "label_smoothing"))  # fmt: skip
        if self.param_init < 0:
            raise ConfigError(f"param_init must be 0 or more, got {self.param_init}")
        if self.hidden_size % 2:
            raise ConfigError(f"hidden_size must be even, got {self.hidden_size}")


@dataclass
class DecodeConfig:
    """The ``decode`` section: how test and predict translate (dev BLEU during training
    is always greedy). Output length is capped at ``max_len_a * source tokens + max_len_b``
    target tokens."""

    beam_size: int = 5
    length_penalty: float = 1.0  # hypothesis score / length ** length_penalty
    max_len_a: float = 1.5
    max_len_b: int = 10

    def __post_init__(self) -> None:
        check_fields(self, at_least_one=("beam_size",))


SCHEMAS = {"data": TranslateDataConfig, "model": TranslateModelConfig, "decode": DecodeConfig}


@dataclass
class PairBatch:
    """Padded source ids and, for training, target inputs (BOS first) and outputs (EOS last)."""

    source: Tensor  # (B, S)
    source_mask: Tensor  # (B, S)
    source_lengths: Tensor  # (B,) on the CPU
    indices: Tensor  # (B,)
    target_in: Tensor | None = None  # (B, T)
    target_out: Tensor | None = None  # (B, T), 0 at padding


class PairCollator:
    """Turns dataset positions into a :class:`PairBatch` (longest source first)."""

    def __init__(self, source: list[list[int]], target: list[list[int]] | None) -> None:
        self.source = source
        self.target = target
        self.lengths = [len(s) for s in source]

    def __call__(self, indices: list[int]) -> PairBatch:
        indices = sorted(indices, key=lambda i: -self.lengths[i])
        lengths = torch.tensor([self.lengths[i] for i in indices])
        batch = PairBatch(
            source=pad([self.source[i] for i in indices]),
            source_mask=lengths_mask(lengths, int(lengths.max())),
            source_lengths=lengths,
            indices=torch.tensor(indices),
        )
        if self.target is not None:
            batch.target_in = pad([[IDS.bos, *self.target[i]] for i in indices])
            batch.target_out = pad([[*self.target[i], IDS.eos] for i in indices])
        return batch


class Seq2Seq(nn.Module):
    """Source embedding -> BiLSTMEncoder -> AttentionDecoder.

    The encoder runs ``hidden_size // 2`` units per direction, so its states and its final
    ``(h, c)`` (both directions joined, layer by layer) have the decoder's size: the
    decoder starts from the encoder's final state and attends over its states.
    """

    def __init__(
        self,
        config: TranslateModelConfig,
        source_vocab: int,
        target_vocab: int,
        source_vectors: Tensor | None = None,
        target_vectors: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.label_smoothing = config.label_smoothing
        self.source_embedding = nn.Embedding(source_vocab, config.embedding_dim, padding_idx=0)
        self.embedding_dropout = Dropout(config.dropout)
        self.encoder = BiLSTMEncoder(
            config.embedding_dim, config.hidden_size // 2, config.num_layers, config.dropout
        )
        self.decoder = AttentionDecoder(
            target_vocab,
            config.embedding_dim,
            config.hidden_size,
            config.num_layers,
            config.dropout,
            config.attention,
            config.input_feeding,
            config.tie_embeddings,
        )
        if config.param_init > 0:
            with torch.no_grad():
                for parameter in self.parameters():
                    parameter.uniform_(-config.param_init, config.param_init)
                self.source_embedding.weight[0].zero_()  # padding rows stay zero
                self.decoder.embedding.weight[0].zero_()
        with torch.no_grad():
            if source_vectors is not None:
                self.source_embedding.weight.copy_(source_vectors)
            if target_vectors is not None:
                self.decoder.embedding.weight.copy_(target_vectors)

    def encode(self, batch: PairBatch) -> tuple[Memory, DecoderState]:
        """The attention memory of the source and the decoder's initial state."""
        inputs = self.embedding_dropout(self.source_embedding(batch.source))
        out = self.encoder(inputs, batch.source_lengths, batch.source_mask)

        def join(x: Tensor) -> Tensor:  # (layers * 2, B, H/2) -> (layers, B, H)
            layers2, rows, half = x.shape
            return x.view(layers2 // 2, 2, rows, half).transpose(1, 2).reshape(-1, rows, 2 * half)

        h, c = out.final
        memory = self.decoder.memory(out.states, batch.source_mask)
        return memory, self.decoder.initial_state((join(h), join(c)))

    def forward(self, batch: PairBatch) -> tuple[Tensor, Tensor]:
        """Label-smoothed cross-entropy summed over the target tokens (EOS included), and
        their count; the output layer runs over the real tokens only."""
        memory, state = self.encode(batch)
        attentional, _ = self.decoder.attend(batch.target_in, state, memory)
        real = batch.target_out != IDS.pad  # the output layer and loss skip the padding
        logits = self.decoder.logits(attentional[real])
        loss = summed_cross_entropy(logits, batch.target_out[real], self.label_smoothing)
        return loss, real.sum()

    def translate(
        self, batch: PairBatch, decode_cfg: DecodeConfig, beam_size: int
    ) -> tuple[list[list[int]], Tensor | None]:
        """Target ids of each source sentence (greedy when ``beam_size`` is 1, with the
        attention weights ``(B, T, S)``; else beam search, without them)."""
        memory, state = self.encode(batch)
        max_lens = (decode_cfg.max_len_a * batch.source_lengths + decode_cfg.max_len_b).long()
        if beam_size == 1:
            return greedy_search(self.decoder, memory, state, max_lens, IDS)
        ids = beam_search(
            self.decoder, memory, state, max_lens, beam_size, decode_cfg.length_penalty, IDS
        )
        return ids, None


def make_predict(target_tokenizer, decode_cfg: DecodeConfig, beam_size: int):
    """``predict(model, batch)``: the detokenised translation of each sentence."""

    def predict(model: Seq2Seq, batch: PairBatch) -> list[str]:
        ids, _ = model.translate(batch, decode_cfg, beam_size)
        return decode(target_tokenizer, ids)

    return predict


def bleu_scores(hypotheses: list[str], references: list[str]) -> dict:
    """sacreBLEU (default 13a tokenisation, cased) and chrF of detokenised output against
    the raw reference lines, with BLEU's signature and the sentence count."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu = BLEU()
    score = bleu.corpus_score(hypotheses, [references])
    chrf = CHRF().corpus_score(hypotheses, [references])
    return {
        "bleu": round(score.score, 2),
        "chrf": round(chrf.score, 2),
        "signature": str(bleu.get_signature()),
        "n": len(hypotheses),
    }


def score(outputs: list[str], split: Split) -> dict:
    """``score(outputs, split)`` against the split's reference lines."""
    return bleu_scores(outputs, list(split.examples))


def pair_split(source_ids: list[list[int]], target_ids, references: list[str] | None) -> Split:
    """A split for the Trainer: examples are the references (or the source lines)."""
    collator = PairCollator(source_ids, target_ids)
    tokens = None
    if target_ids is not None:  # a token budget counts the longer side (the target with EOS)
        tokens = [max(len(s), len(t) + 1) for s, t in zip(source_ids, target_ids, strict=True)]
    return Split(references, collator.lengths, collator, tokens=tokens)


# ---------------------------------------------------------------------------- corpus


def read_pairs(prefix: str | None, data: TranslateDataConfig, which: str):
    """The parallel text at ``prefix`` (both sides checked to exist first)."""
    if not prefix:
        raise UserError(f"no {which} file prefix given (data.{which}=PREFIX; {CORPUS_HINT})")
    for lang in (data.src_lang, data.tgt_lang):
        require_file(str(side_path(prefix, lang)), f"{which} file ({lang} side)", CORPUS_HINT)
    return read_parallel(prefix, data.src_lang, data.tgt_lang)


def pretrained_matrix(tokenizer, config: EmbeddingsConfig, dim: int) -> Tensor:
    """Embedding rows for a tokenizer's vocabulary: the pretrained vector of each token
    (its ``▁`` word-start mark removed) where the source has one, small random rows
    elsewhere, zeros for padding."""
    if config.dim != dim:
        raise ConfigError(
            f"model.embedding_dim={dim} must equal embeddings.dim={config.dim} to use "
            "pretrained vectors (model.pretrained)"
        )
    vocab = [tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size())]
    words = [token.removeprefix("▁") for token in vocab]
    found, rows = pretrained_rows_for(sorted(set(words) - {""}), config)
    by_word = dict(zip(found, rows, strict=True))
    matrix = torch.randn(len(vocab), dim) * 0.1
    hits = 0
    for index, word in enumerate(words):
        if word in by_word:
            matrix[index] = by_word[word]
            hits += 1
    matrix[IDS.pad] = 0.0
    log.info("pretrained vectors for %d of %d tokens (%s)", hits, len(vocab), config.name)
    return matrix


def build_tokenizers(data: TranslateDataConfig, pairs) -> tuple:
    """Source and target tokenizers trained on the training text (one, with joint_vocab)."""
    if data.joint_vocab:
        joint = train_tokenizer(
            pairs.source + pairs.target, data.tokenizer, data.vocab_size, data.min_freq
        )
        return joint, joint
    return (
        train_tokenizer(pairs.source, data.tokenizer, data.vocab_size, data.min_freq),
        train_tokenizer(pairs.target, data.tokenizer, data.vocab_size, data.min_freq),
    )


def setup(cfg: DictConfig, run_dir: Path | None):
    """Read the parallel text, train the tokenizers and build the model: the training Job."""
    data, model_cfg, emb_cfg, trainer = task_configs(
        cfg, run_dir, TranslateDataConfig, TranslateModelConfig
    )
    monitor = task_monitor(cfg, METRICS)
    train_pairs = read_pairs(data.train, data, "train")
    dev_pairs = read_pairs(data.dev, data, "dev")
    source_tok, target_tok = build_tokenizers(data, train_pairs)
    log.info(
        "%d training pairs, %d dev; %s vocabularies: %d %s, %d %s",
        len(train_pairs),
        len(dev_pairs),
        data.tokenizer,
        source_tok.get_vocab_size(),
        data.src_lang,
        target_tok.get_vocab_size(),
        data.tgt_lang,
    )
    use = model_cfg.pretrained
    model = Seq2Seq(
        model_cfg,
        source_tok.get_vocab_size(),
        target_tok.get_vocab_size(),
        pretrained_matrix(source_tok, emb_cfg, model_cfg.embedding_dim)
        if use in ("source", "both")
        else None,
        pretrained_matrix(target_tok, emb_cfg, model_cfg.embedding_dim)
        if use in ("target", "both")
        else None,
    )
    decode_cfg = to_dataclass(DecodeConfig, cfg.decode, "decode")
    job = Job(
        model=model,
        train=pair_split(
            encode(source_tok, train_pairs.source),
            encode(target_tok, train_pairs.target),
            train_pairs.target,
        ),
        dev=pair_split(encode(source_tok, dev_pairs.source), None, dev_pairs.target),
        predict=make_predict(target_tok, decode_cfg, beam_size=1),
        score=score,
        monitor=monitor,
        bundle=make_bundle(
            cfg, {}, source_tokenizer=source_tok.to_str(), target_tokenizer=target_tok.to_str()
        ),
    )
    return job, trainer, (source_tok, target_tok, dev_pairs, decode_cfg)


def timed_evaluate(trainer: Trainer, model: Seq2Seq, split: Split, predict) -> dict:
    """``trainer.evaluate`` with the seconds it took."""
    start = time.perf_counter()
    scores = trainer.evaluate(model, split, predict, score)
    return {**scores, "seconds": round(time.perf_counter() - start, 2)}


def train(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=train``: fit on data.train selecting on greedy dev BLEU; then score dev with
    beam search too, draw attention.png and report both."""
    job, trainer, (source_tok, target_tok, dev_pairs, decode_cfg) = setup(cfg, run_dir)
    fit(job, trainer)
    model = job.model
    greedy = timed_evaluate(trainer, model, job.dev, job.predict)
    beam = timed_evaluate(
        trainer, model, job.dev, make_predict(target_tok, decode_cfg, decode_cfg.beam_size)
    )
    on_main(draw_attention, trainer, model, source_tok, target_tok, dev_pairs.source[:4],
            decode_cfg, run_dir / "attention.png")  # fmt: skip
    report(
        {
            "bleu": beam["bleu"],
            "chrf": beam["chrf"],
            "beam_size": decode_cfg.beam_size,
            "greedy_bleu": greedy["bleu"],
            "greedy_chrf": greedy["chrf"],
            "beam_seconds": beam["seconds"],
            "greedy_seconds": greedy["seconds"],
            "signature": beam["signature"],
            "n": beam["n"],
        },
        run_dir / "metrics.json",
    )


def draw_attention(
    trainer: Trainer, model: Seq2Seq, source_tok, target_tok, sentences, decode_cfg, path: Path
) -> None:
    """Greedy translations of ``sentences`` and their attention heatmaps in one PNG."""
    ids = encode(source_tok, sentences)
    batch = PairCollator(ids, None)(list(range(len(ids))))
    with trainer.inference(model):
        batch = next(trainer.batches([batch]))
        outputs, weights = model.translate(batch, decode_cfg, beam_size=1)
    panels = []
    for row, position in enumerate(batch.indices.tolist()):
        source = [source_tok.id_to_token(i) for i in ids[position]]
        output = [target_tok.id_to_token(i) for i in outputs[row]] + ["</s>"]
        panels.append(
            (source, output, weights[row, : len(output), : len(source)].float().cpu().numpy())
        )
    plot_attention(panels, path)


# ---------------------------------------------------------------------------- inference


@dataclass(frozen=True)
class Translation:
    """A translation: its ``text`` (detokenised), ``score`` (its log-probability under the
    model, EOS included), the source and target tokens the model read and wrote (the
    target ends in ``</s>``), and ``attention`` ``(target tokens, source tokens)``: where
    each target token looked (None when not asked for)."""

    text: str
    score: float
    source_tokens: tuple[str, ...]
    target_tokens: tuple[str, ...]
    attention: np.ndarray | None = None


class Translator(Predictor):
    """The translation predictor: ``translator("Ein Hund läuft.")`` -> :class:`Translation`;
    :meth:`translate` takes a list and decoding options (``beam_size``, 1: greedy).
    Sentences are batched by source length and decoded together."""

    task = "translate"
    input_kind = "a non-empty str"

    def __init__(self, model: Seq2Seq, bundle, device, batch_size=64, precision="32",
                 decode: DecodeConfig | None = None):  # fmt: skip
        super().__init__(model, bundle, device, batch_size, precision)
        self.data = saved_configs(bundle, TranslateDataConfig, TranslateModelConfig)[0]
        self.decoding = decode or DecodeConfig()
        self.source_tokenizer = load_tokenizer(bundle.extras["source_tokenizer"])
        self.target_tokenizer = load_tokenizer(bundle.extras["target_tokenizer"])

    def check_input(self, item, position: int) -> None:
        super().check_input(item, position)
        if not item.strip():
            raise ValueError(f"input {position}: an empty sentence has no translation")

    def translate(self, sources, beam_size: int | None = None, attention: bool = True):
        """Translations of ``sources`` (one str, or a list) with a beam of ``beam_size``
        (default: ``decode.beam_size``, 5)."""
        return self(sources, beam_size=beam_size, attention=attention)

    def run(self, sources: list[str], beam_size: int | None = None,
            attention: bool = True) -> list[Translation]:  # fmt: skip
        beam = self.decoding.beam_size if beam_size is None else beam_size
        if beam < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam}")
        source_ids = encode(self.source_tokenizer, sources)
        collate = PairCollator(source_ids, None)
        results: list[Translation | None] = [None] * len(sources)
        for positions in length_batches(collate.lengths, self.batch_size):
            batch = move_batch(collate(positions), self.device)
            with self.inference():
                ids, _ = self.model.translate(batch, self.decoding, beam)
                scores, weights = forced_scores(self.model, batch, ids)
            texts = decode(self.target_tokenizer, ids)
            for row, position in enumerate(batch.indices.tolist()):
                source = [self.source_tokenizer.id_to_token(i) for i in source_ids[position]]
                target = [self.target_tokenizer.id_to_token(i) for i in ids[row]] + ["</s>"]
                table = weights[row, : len(target), : len(source)].float().cpu().numpy()
                results[position] = Translation(texts[row], round(scores[row], 6), tuple(source),
                                                tuple(target), table if attention else None)  # fmt: skip
        return results


def forced_scores(model: Seq2Seq, batch: PairBatch, outputs: list[list[int]]):
    """Log-probability of each output (EOS included) and its attention ``(N, T, S)``,
    read by teacher-forcing the outputs through the decoder (the same arithmetic as the
    search that found them)."""
    target_in = pad([[IDS.bos, *out] for out in outputs]).to(batch.source.device)
    target_out = pad([[*out, IDS.eos] for out in outputs]).to(batch.source.device)
    memory, state = model.encode(batch)
    logits, weights = model.decoder(target_in, state, memory)
    log_probs = torch.log_softmax(logits.float(), -1).gather(2, target_out.unsqueeze(2)).squeeze(2)
    return log_probs.masked_fill(target_out == IDS.pad, 0.0).sum(1).tolist(), weights


def load(checkpoint, device="auto", batch_size: int | None = None, precision: str = "32",
         decode: DecodeConfig | None = None) -> Translator:  # fmt: skip
    """The :class:`Translator` of a checkpoint, tokenizers included (no data needed)."""
    bundle = checkpoint.bundle
    _, model_cfg, _ = saved_configs(bundle, TranslateDataConfig, TranslateModelConfig)
    sizes = [load_tokenizer(bundle.extras[k]).get_vocab_size()
             for k in ("source_tokenizer", "target_tokenizer")]  # fmt: skip
    model = Seq2Seq(model_cfg, *sizes)
    load_weights(model, checkpoint)
    return Translator(model, bundle, resolve_device(device), batch_size or eval_batch_size(bundle),
                      precision, decode)  # fmt: skip


def translator_for_run(cfg: DictConfig) -> Translator:
    """The run's translator, decoding as ``cfg.decode`` says."""
    translator = predictor_for_run(cfg, "translate")
    translator.decoding = to_dataclass(DecodeConfig, cfg.decode, "decode")
    return translator


def test(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=test ckpt=PATH data.test=PREFIX``: translate ``PREFIX.<src>`` and print
    sacreBLEU and chrF against ``PREFIX.<tgt>`` as one JSON line."""
    trainer = make_trainer(cfg, None)
    translator = translator_for_run(cfg)
    data = run_settings(translator.bundle, cfg, TranslateDataConfig)
    pairs = read_pairs(data.test, data, "test")
    split = pair_split(encode(translator.source_tokenizer, pairs.source), None, pairs.target)
    decode_cfg = translator.decoding
    predict = make_predict(translator.target_tokenizer, decode_cfg, decode_cfg.beam_size)
    scores = trainer.evaluate(translator.model, split, predict, score)
    report(scores, run_dir / "test_metrics.json")


def predict_mode(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=predict ckpt=PATH input=FILE output=FILE`` (or stdin/stdout): one
    translation a line, in input order (``output_format=jsonl``: each
    :class:`Translation` as JSON, attention included)."""
    output_format = check_output_format(cfg)
    translator = translator_for_run(cfg)
    path = input_lines_path(cfg, run_dir)
    lines = read_side(path, "input file")  # an empty line is an error naming it
    outputs = translator.translate(lines, attention=output_format == "jsonl")
    with output_stream(cfg) as out:
        for result in outputs:
            out.write(json_line(result) if output_format == "jsonl" else result.text + "\n")
    log.info("translated %d lines", len(outputs))


# ---------------------------------------------------------------------------- export


class EncoderGraph(nn.Module):
    """The encoder as an exportable graph: ``source (B, S)`` ids and ``lengths (B,)`` ->
    the attention memory (``states``, ``keys`` ``(B, S, H)``, ``mask`` ``(B, S)``) and the
    decoder's first state (``h``, ``c`` ``(layers, B, H)``, ``feed`` ``(B, H)``)."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.embedding = model.source_embedding
        self.rnn = StepwiseBiLSTM(model.encoder.rnn)
        self.attention = model.decoder.attention
        self.hidden = model.decoder.hidden_size

    def forward(
        self, source: Tensor, lengths: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        states, h_n, c_n = self.rnn(self.embedding(source), lengths)
        mask = torch.arange(source.shape[1], device=source.device).unsqueeze(0) < lengths.unsqueeze(
            1
        )
        layers = h_n.shape[0] // 2  # both directions of a layer, joined as Seq2Seq.encode does
        rows = h_n.shape[1]
        h = h_n.view(layers, 2, rows, -1).transpose(1, 2).reshape(layers, rows, self.hidden)
        c = c_n.view(layers, 2, rows, -1).transpose(1, 2).reshape(layers, rows, self.hidden)
        feed = states.new_zeros(rows, self.hidden)
        return states, self.attention.keys(states), mask, h, c, feed


class StepGraph(nn.Module):
    """One decoder step as an exportable graph: the previous ``tokens (B,)``, the state
    (``h``, ``c``, ``feed``) and the memory -> next-token log-probabilities ``(B, V)``, the
    new state and the attention weights ``(B, S)``. Search (greedy, beam) is the caller's
    loop, as in :mod:`nlp_lstm.modules.search`."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        decoder = model.decoder
        self.embedding = decoder.embedding
        self.input_feeding = decoder.input_feeding
        self.rnn = decoder.rnn
        self.attention = decoder.attention
        self.combine = decoder.combine
        self.out_proj = decoder.out_proj
        self.generator = decoder.generator

    def forward(
        self,
        tokens: Tensor,
        h: Tensor,
        c: Tensor,
        feed: Tensor,
        states: Tensor,
        keys: Tensor,
        mask: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        inputs = self.embedding(tokens)
        if self.input_feeding:
            inputs = torch.cat([inputs, feed], dim=-1)
        output, (h, c) = self.rnn(inputs.unsqueeze(1), (h, c))
        output = output.squeeze(1)
        context, weights = self.attention(output, states, keys, mask)
        attentional = torch.tanh(self.combine(torch.cat([context, output], dim=-1)))
        projected = self.out_proj(attentional) if self.out_proj is not None else attentional
        log_probs = torch.log_softmax(self.generator(projected).float(), dim=-1)
        return log_probs, h, c, attentional, weights


def step_path(path: str | Path) -> Path:
    """Where the decoder step of a translate export goes: ``mt.onnx`` -> ``mt.step.onnx``."""
    path = Path(path).expanduser()
    return path.with_name(f"{path.stem}.step{path.suffix}")


def export_graphs(model: Seq2Seq, config: ExportConfig, metadata: dict) -> Path:
    """Write the encoder at ``config.path`` and the decoder step beside it
    (:func:`step_path`), each with its JSON; returns the encoder's path."""
    model.eval()
    source, lengths = pad([[5, 6, 7, 8], [9, 10]]), torch.tensor([4, 2])
    with torch.no_grad():
        states, keys, mask, h, c, feed = EncoderGraph(model)(source, lengths)
    batch_source = {0: "batch", 1: "source"}
    state = {"h": {1: "batch"}, "c": {1: "batch"}, "feed": {0: "batch"}}
    memory = {"states": batch_source, "keys": batch_source, "mask": batch_source}
    tokens = torch.tensor([IDS.bos, IDS.bos])
    step_config = dataclasses.replace(config, path=str(step_path(config.path)))
    export_graph(StepGraph(model), (tokens, h, c, feed, states, keys, mask),
                 {"tokens": {0: "batch"}, **state, **memory},
                 {"log_probs": {0: "batch"}, **state, "weights": batch_source},
                 {"task": "translate", "part": "step"}, step_config)  # fmt: skip
    return export_graph(EncoderGraph(model), (source, lengths),
                        {"source": batch_source, "lengths": {0: "batch"}}, {**memory, **state},
                        {**metadata, "part": "encoder"}, config)  # fmt: skip


def export_mode(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=export ckpt=PATH export.format=torchscript|onnx export.path=FILE``: the
    encoder at FILE and one decoder step beside it (``<stem>.step<suffix>``), with
    FILE.json holding both tokenizers, the special ids and the decoding settings."""
    config = export_config(cfg)
    translator = load(checkpoint_for(cfg, "translate"), "cpu")
    metadata = {
        "task": "translate",
        "step": step_path(config.path).name,
        "source_tokenizer": translator.source_tokenizer.to_str(),
        "target_tokenizer": translator.target_tokenizer.to_str(),
        "special_ids": {"pad": IDS.pad, "unk": IDS.unk, "bos": IDS.bos, "eos": IDS.eos},
        "decode": dataclasses.asdict(to_dataclass(DecodeConfig, cfg.decode, "decode")),
    }
    report_export(export_graphs(translator.model, config, metadata), config, run_dir)


MODES = {"train": train, "test": test, "predict": predict_mode, "export": export_mode}
