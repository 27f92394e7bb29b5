"""Character-level language modelling: chars -> LSTM -> next-char scores; sampling.

corpus (plain text) -> char vocab -> windows of next-char predictions -> CharLanguageModel
(embedding -> LSTM -> linear) -> cross-entropy -> bits per character; mode=predict samples
continuations of prompts with temperature / top-k / top-p.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from nlp_lstm.config import check_fields, to_dataclass
from nlp_lstm.contract import Job, Predictor, Split
from nlp_lstm.data.text import IGNORE, CharBatch, CharStreams, CharWindows, split_text
from nlp_lstm.data.vocab import Vocab
from nlp_lstm.errors import ConfigError, DataError, UserError
from nlp_lstm.files import atomic_write_text, read_lines, read_text
from nlp_lstm.modules.encoder import CellKind
from nlp_lstm.modules.sampling import sample_next
from nlp_lstm.modules.step import rnn_step
from nlp_lstm.tasks.common import (
    check_output_format,
    checkpoint_for,
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
    task_configs,
    task_monitor,
)
from nlp_lstm.train.trainer import TrainerConfig, resolve_device

log = logging.getLogger(__name__)

CORPUS_HINT = (
    "Put tiny-shakespeare at <data.root>/tinyshakespeare/input.txt (set data.root=DIR or "
    "NLP_LSTM_DATA=DIR) or name a UTF-8 text file with data.train=; see data/README.md"
)
REPORTED = ("bpc", "loss", "perplexity", "chars")  # loss: nats per char


@dataclass
class CharLMDataConfig:
    """The ``data`` group for character language modelling."""

    root: str = "data"
    train: str | None = None
    dev: str | None = None  # None: the last dev_fraction of the training text
    test: str | None = None
    dev_fraction: float = 0.1
    seq_len: int = 128  # predictions per window (backpropagation reaches this far back)
    stateful: bool = True  # carry the state across windows (truncated BPTT); false: each
    # window starts without context and windows are shuffled
    eval_streams: int = 16  # dev/test text as this many streams (whatever the batch size)

    def __post_init__(self) -> None:
        check_fields(self, at_least_one=("seq_len", "eval_streams"))


@dataclass
class CharLMModelConfig:
    """The ``model`` group for character language modelling."""

    embedding_dim: int = 64
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.25
    cell: CellKind = "lstm"
    tie_weights: bool = False  # share the input and output char matrices (needs equal sizes)

    def __post_init__(self) -> None:
        check_fields(self, at_least_one=("embedding_dim", "hidden_size", "num_layers"),
                     probabilities=("dropout",))  # fmt: skip
        if self.tie_weights and self.embedding_dim != self.hidden_size:
            raise ConfigError(
                "tie_weights needs embedding_dim == hidden_size "
                f"({self.embedding_dim} != {self.hidden_size})"
            )


@dataclass
class SampleConfig:
    """The ``sample`` section: how ``mode=predict`` continues prompts."""

    prompt: str | None = None  # None: each line of input=FILE (or stdin) is a prompt
    length: int = 500  # characters generated per prompt
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 0  # 0 = no top-k cut
    top_p: float = 1.0  # 1 = no nucleus cut
    seed: int | None = None  # None: trainer.seed

    def __post_init__(self) -> None:
        check_fields(self)
        check_sampling(self.length, self.temperature, self.top_k, self.top_p)


SCHEMAS = {"data": CharLMDataConfig, "model": CharLMModelConfig, "sample": SampleConfig}
METRICS = {"bpc": "min", "loss": "min", "perplexity": "min"}


class CharLanguageModel(nn.Module):
    """Char embedding -> (multi-layer) LSTM or GRU -> linear scores over the char vocabulary.

    ``logits(inputs (B, T), state) -> (logits (B, T, V), state)``; the state carries over
    between calls, which is how :meth:`generate` extends a prompt one char at a time.
    ``forward(batch)`` is the training contract: summed loss and the chars it covers. For
    stream batches (``batch.reset`` not None) the model keeps the final state of each batch,
    detached, and starts the next batch from it unless ``batch.reset``: truncated
    backpropagation through time.
    """

    def __init__(self, config: CharLMModelConfig, num_chars: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_chars, config.embedding_dim, padding_idx=0)
        rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU}[config.cell]
        self.rnn = rnn_class(
            config.embedding_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden_size, num_chars)
        if config.tie_weights:  # CharLMModelConfig checked the sizes
            self.output.weight = self.embedding.weight
        self.carried = None  # the state at the end of the last stream batch

    def logits(self, inputs: Tensor, state=None) -> tuple[Tensor, object]:
        states, state = self.rnn(self.dropout(self.embedding(inputs)), state)
        return self.output(self.dropout(states)), state

    def nll(self, batch: CharBatch) -> Tensor:
        """Negative log-likelihood (nats) of each predicted char ``(B, T)``, 0 at padding."""
        state = None if batch.reset is None or batch.reset else self.carried
        logits, state = self.logits(batch.inputs, state)
        if batch.reset is not None:
            self.carried = _detached(state)
        return F.cross_entropy(
            logits.float().transpose(1, 2), batch.targets, ignore_index=IGNORE, reduction="none"
        )

    def forward(self, batch: CharBatch) -> tuple[Tensor, int]:
        """Negative log-likelihood summed over the batch's predicted chars, and their count."""
        return self.nll(batch).sum(), int(batch.lengths.sum())

    def generate(self, prompt: list[int], length: int, **options) -> list[int]:
        """``length`` char ids continuing ``prompt``, all at once (options as :meth:`stream`)."""
        return list(self.stream(prompt, length, **options))

    @torch.no_grad()
    def stream(
        self,
        prompt: list[int],
        length: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        banned: tuple[int, ...] = (0, 1),
    ) -> Iterator[int]:
        """``length`` char ids continuing ``prompt``, one at a time as each is sampled (ids
        ``banned``, padding and unknown by default, are never produced). The prompt is read
        once, then the state carries from one char to the next."""
        if not prompt:
            raise ValueError("generate needs a prompt of at least one char")
        device = self.output.weight.device
        logits, state = self.logits(torch.tensor([prompt], device=device))
        scores = logits[:, -1]
        for _ in range(length):
            scores = scores.float()
            scores[:, list(banned)] = float("-inf")
            next_id = sample_next(scores, temperature, top_k, top_p, generator)
            yield int(next_id)
            scores, state = self.step(next_id, state)

    def step(self, ids: Tensor, state) -> tuple[Tensor, object]:
        """Scores ``(N, V)`` of the char after ``ids`` ``(N,)``, and the new state: one
        recurrent step (:func:`nlp_lstm.modules.step.rnn_step`), as ``logits(ids[:, None],
        state)`` computes it."""
        output, state = rnn_step(self.rnn, self.dropout(self.embedding(ids)), state)
        return self.output(self.dropout(output)), state


def _detached(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def predict(model: CharLanguageModel, batch: CharBatch) -> list[tuple[float, int]]:
    """Summed negative log-likelihood (nats) and predicted chars of each window."""
    sums = model.nll(batch).sum(1).double().cpu().tolist()
    return list(zip(sums, batch.lengths.tolist(), strict=True))


def score(outputs: list[tuple[float, int]], split: Split) -> dict:
    """Bits per character, perplexity and mean loss (nats) over every predicted char."""
    count = sum(n for _, n in outputs)
    if count == 0:
        raise ValueError("nothing to score")
    nats = sum(total for total, _ in outputs) / count
    return {
        "bpc": round(nats / math.log(2), 4),
        "perplexity": round(math.exp(nats), 4),
        "loss": round(nats, 4),
        "chars": count,
    }


def window_split(windows: CharWindows | CharStreams) -> Split:
    """Windows of a text as a split (its examples are the window positions); stream
    windows come in their fixed order."""
    batches = windows.batches if isinstance(windows, CharStreams) else None
    return Split(range(len(windows)), windows.lengths, windows, batches)


def text_windows(ids: list[int], data: CharLMDataConfig, streams: int) -> CharWindows | CharStreams:
    """Stream windows (``data.stateful``) over ``streams`` streams, else stateless windows."""
    if data.stateful:
        return CharStreams(ids, data.seq_len, streams)
    return CharWindows(ids, data.seq_len)


# ---------------------------------------------------------------------------- corpus


def encode_text(text: str, chars: Vocab, path: str | Path) -> list[int]:
    """Char ids; chars unseen in training become the unknown id and are counted in the log."""
    unseen = {c for c in set(text) if c not in chars}
    if unseen:
        count = sum(text.count(c) for c in unseen)
        log.warning(
            "%s: %d chars (%d kinds, e.g. %s) never seen in training are scored as unknown",
            path,
            count,
            len(unseen),
            ", ".join(repr(c) for c in sorted(unseen)[:5]),
        )
    return chars.encode(text)


def read_corpus(data: CharLMDataConfig) -> tuple[str, str, str]:
    """Training text, dev text and where the dev text came from."""
    path = require_file(data.train, "train file (data.train)", CORPUS_HINT)
    train_text = read_text(path, "train file")
    if data.dev:
        dev_path = require_file(data.dev, "dev file (data.dev)", CORPUS_HINT)
        return train_text, read_text(dev_path, "dev file"), str(dev_path)
    try:
        train_text, dev_text = split_text(train_text, data.dev_fraction)
    except ValueError as err:
        raise ConfigError(f"data.dev_fraction: {err}") from None
    if len(train_text) < 2 or len(dev_text) < 2:
        raise DataError(path, None, "too short to split into train and dev text")
    return train_text, dev_text, f"{path} (last {data.dev_fraction:.0%})"


def setup(cfg: DictConfig, run_dir: Path | None):
    """Read the text, build the char vocabulary, the windows and the model: the training Job."""
    data, model_cfg, _, trainer = task_configs(cfg, run_dir, CharLMDataConfig, CharLMModelConfig)
    monitor = task_monitor(cfg, METRICS)
    train_text, dev_text, dev_name = read_corpus(data)
    chars = Vocab(sorted(set(train_text)))
    if len(dev_text) < 2:
        raise DataError(dev_name, None, "dev text needs at least two characters to score")
    streams = trainer.config.batch_size * trainer.world_size  # each rank: batch_size streams
    train_windows = text_windows(chars.encode(train_text), data, streams)
    dev_windows = text_windows(encode_text(dev_text, chars, dev_name), data, data.eval_streams)
    log.info(
        "%s train chars, %s dev chars (%s); %d distinct chars; %d + %d windows of %d%s",
        f"{len(train_text):,}",
        f"{len(dev_text):,}",
        dev_name,
        len(chars) - 2,
        len(train_windows),
        len(dev_windows),
        data.seq_len,
        f" in {streams} + {data.eval_streams} streams (state carried)" if data.stateful else "",
    )
    job = Job(
        model=CharLanguageModel(model_cfg, len(chars)),
        train=window_split(train_windows),
        dev=window_split(dev_windows),
        predict=predict,
        score=score,
        monitor=monitor,
        bundle=make_bundle(cfg, {"chars": chars}),
    )
    return job, trainer


def train(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=train``: fit on data.train, select on dev bits per character; a sample of
    the best model goes to the run folder (``sample.txt``)."""
    job, trainer = setup(cfg, run_dir)
    best = fit(job, trainer)
    report({k: best[k] for k in REPORTED}, run_dir / "metrics.json")
    sample = _sample_config(cfg)
    generator = Generator(job.model, job.bundle, trainer.device)
    text = _start(generator.chars) + generator.generate(
        "", **_sampling(sample, trainer.config.seed)
    )
    on_main(atomic_write_text, run_dir / "sample.txt", text + "\n")
    log.info("a %d-char sample of the best model is in %s", sample.length, run_dir / "sample.txt")


# ---------------------------------------------------------------------------- inference


def _sample_config(cfg: DictConfig) -> SampleConfig:
    return to_dataclass(SampleConfig, cfg.get("sample"), "sample")


def _start(chars: Vocab) -> str:
    """The prompt of an unprompted sample: a newline, or (for a text without one) the
    vocabulary's first char after the specials."""
    return "\n" if "\n" in chars else chars.itos[2]


@dataclass(frozen=True)
class Generation:
    """A prompt and the text sampled to continue it (the prompt not repeated)."""

    prompt: str
    text: str


class Generator(Predictor):
    """The character language model's predictor: :meth:`generate` continues a prompt,
    :meth:`stream` yields the continuation a character at a time as it is sampled, and
    :meth:`score` gives a text's bits per character. ``generator(prompt)`` (or a list of
    prompts) returns :class:`Generation` s with the sampling settings as keywords.

    Sampling: ``temperature`` (0: greedy), ``top_k`` (0: off) and ``top_p`` (1: off) may
    be combined; ``seed`` makes a sample repeatable (None: a fresh random seed). An empty
    prompt starts where an unprompted sample does (a new line). A prompt character never
    seen in training is a ValueError."""

    task = "charlm"
    input_kind = "a str (a prompt)"

    def __init__(self, model: CharLanguageModel, bundle, device, batch_size=64, precision="32"):
        super().__init__(model, bundle, device, batch_size, precision)
        self.chars = Vocab.from_list(bundle.vocabs["chars"])

    def check_input(self, item, position: int) -> None:
        super().check_input(item, position)
        unseen = sorted({c for c in item if c not in self.chars})
        if unseen:
            raise ValueError(
                f"input {position}: prompt chars never seen in training: "
                + ", ".join(map(repr, unseen))
            )

    def run(self, prompts: list[str], **sampling) -> list[Generation]:
        return [Generation(p, "".join(self._stream(p, **sampling))) for p in prompts]

    def generate(self, prompt: str, length: int = 500, temperature: float = 0.8,
                 top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> str:  # fmt: skip
        """``length`` characters continuing ``prompt``."""
        return self(prompt, length=length, temperature=temperature, top_k=top_k,
                    top_p=top_p, seed=seed).text  # fmt: skip

    def stream(self, prompt: str, length: int = 500, temperature: float = 0.8,
               top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> Iterator[str]:  # fmt: skip
        """The characters continuing ``prompt``, yielded one at a time as each is sampled
        (the same characters :meth:`generate` returns for the same seed)."""
        self.check_input(prompt, 0)
        steps = self._stream(prompt, length, temperature, top_k, top_p, seed)
        while True:
            with self.lock:  # one step at a time: other calls may run between characters
                char = next(steps, None)
            if char is None:
                return
            yield char

    def _stream(self, prompt: str, length: int = 500, temperature: float = 0.8,
                top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> Iterator[str]:  # fmt: skip
        check_sampling(length, temperature, top_k, top_p)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed) if seed is not None else generator.seed()
        ids = self.model.stream(self.chars.encode(prompt or _start(self.chars)), length,
                                temperature, top_k, top_p, generator)  # fmt: skip
        while True:
            with self.inference():
                char_id = next(ids, None)
            if char_id is None:
                return
            yield self.chars.itos[char_id]

    def score(self, text: str) -> float:
        """Bits per character of ``text`` (every char after the first, read in one pass;
        chars never seen in training count as unknown)."""
        if not isinstance(text, str) or len(text) < 2:
            raise ValueError("score needs a text of at least two characters")
        ids = torch.tensor([self.chars.encode(text)], device=self.device)
        with self.lock, self.inference():
            logits, _ = self.model.logits(ids[:, :-1])
            nats = F.cross_entropy(logits[0].float(), ids[0, 1:], reduction="sum")
        return round(float(nats) / (len(text) - 1) / math.log(2), 6)


def check_sampling(length: int, temperature: float, top_k: int, top_p: float) -> None:
    """Sampling settings in range, or a ValueError naming the one that is not."""
    for name, value in (("length", length), ("temperature", temperature), ("top_k", top_k)):
        if value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value}")
    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")


def load(
    checkpoint, device="auto", batch_size: int | None = None, precision: str = "32"
) -> Generator:
    """The :class:`Generator` of a checkpoint (no training data needed)."""
    bundle = checkpoint.bundle
    chars = Vocab.from_list(bundle.vocabs["chars"])
    model = CharLanguageModel(
        to_dataclass(CharLMModelConfig, bundle.config["model"], "model"), len(chars)
    )
    load_weights(model, checkpoint)
    return Generator(model, bundle, resolve_device(device), batch_size or 64, precision)


def _sampling(sample: SampleConfig, default_seed: int) -> dict:
    """The keyword arguments of :meth:`Generator.generate` from the ``sample`` section."""
    seed = sample.seed if sample.seed is not None else default_seed
    return {"length": sample.length, "temperature": sample.temperature, "top_k": sample.top_k,
            "top_p": sample.top_p, "seed": seed}  # fmt: skip


def test(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=test ckpt=PATH data.test=FILE``: bits per character of a text file."""
    trainer = make_trainer(cfg, None)
    checkpoint = checkpoint_for(cfg, "charlm")
    generator = load(checkpoint, trainer.device)
    data = run_settings(checkpoint.bundle, cfg, CharLMDataConfig)
    path = require_file(data.test, "test file (data.test)", CORPUS_HINT)
    text = read_text(path, "test file")
    if len(text) < 2:
        raise DataError(path, None, "test file needs at least two characters")
    windows = text_windows(encode_text(text, generator.chars, path), data, data.eval_streams)
    scores = trainer.evaluate(generator.model, window_split(windows), predict, score)
    report({k: scores[k] for k in REPORTED}, run_dir / "test_metrics.json")


def predict_mode(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=predict ckpt=PATH [sample.prompt=TEXT | input=FILE] [output=FILE]``: for each
    prompt (``sample.prompt``, else each non-empty input line), the prompt and its sampled
    continuation, written as it is sampled, followed by a blank line
    (``output_format=jsonl``: each :class:`Generation` as JSON)."""
    output_format = check_output_format(cfg)
    sample = _sample_config(cfg)
    generator = predictor_for_run(cfg, "charlm")
    if sample.prompt is not None:
        prompts = [(None, None, sample.prompt)]
    else:
        path = input_lines_path(cfg, run_dir)
        prompts = [
            (path, n, line)
            for n, line in enumerate(read_lines(path, "input file"), start=1)
            if line.strip()
        ]
        if not prompts:
            raise DataError(path, None, "input holds no prompt")
    for path, line, prompt in prompts:
        unseen = sorted({c for c in prompt if c not in generator.chars})
        if unseen:
            message = f"prompt chars never seen in training: {', '.join(map(repr, unseen))}"
            raise DataError(path, line, message) if path else UserError(f"sample.prompt: {message}")
    sampling = _sampling(sample, to_dataclass(TrainerConfig, cfg.trainer, "trainer").seed)
    with output_stream(cfg) as out:
        for _, _, prompt in prompts:
            if output_format == "jsonl":
                out.write(json_line(generator(prompt, **sampling)))
                continue
            out.write(prompt or _start(generator.chars))
            for char in generator.stream(prompt, **sampling):
                out.write(char)
                out.flush()
            out.write("\n\n")
    log.info("sampled %d continuations of %d chars", len(prompts), sample.length)


MODES = {"train": train, "test": test, "predict": predict_mode}
