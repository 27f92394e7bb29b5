"""Plumbing every task shares: typed configs, the Trainer, checkpoints, files, results."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from omegaconf import DictConfig

from nlp_lstm.checkpoint import Bundle, Checkpoint, load_checkpoint
from nlp_lstm.config import check_fields, plain, to_dataclass
from nlp_lstm.contract import Job, Monitor, choose_monitor
from nlp_lstm.data.vectors import EmbeddingsConfig, pretrained_rows_for
from nlp_lstm.data.vocab import Vocab
from nlp_lstm.errors import ConfigError, DataError, UserError
from nlp_lstm.export import ExportConfig, export_config, export_graph
from nlp_lstm.files import atomic_write_text
from nlp_lstm.modules.embeddings import TokenEmbedder
from nlp_lstm.train import distributed
from nlp_lstm.train.trainer import Trainer, TrainerConfig, seed_everything

log = logging.getLogger(__name__)
D = TypeVar("D")
M = TypeVar("M")

SECTIONS = ("task", "data", "model", "embeddings", "trainer")


@dataclass
class TaskConfig:
    """The ``task`` section: which task, and which of its metrics to select on."""

    name: str
    monitor: str

    def __post_init__(self) -> None:
        check_fields(self)


def task_monitor(cfg: DictConfig, metrics: dict[str, Literal["max", "min"]]) -> Monitor:
    """The monitored metric of ``cfg.task``, checked against the task's own metrics."""
    task = to_dataclass(TaskConfig, cfg.task, "task")
    return choose_monitor(task.monitor, metrics, task.name)


def task_configs(
    cfg: DictConfig, run_dir: Path | None, data_class: type[D], model_class: type[M]
) -> tuple[D, M, EmbeddingsConfig, Trainer]:
    """A task's typed ``data``, ``model`` and ``embeddings`` configs and its Trainer, with
    every random generator seeded from ``trainer.seed`` (plus the rank under torchrun, so
    each process draws its own dropout masks)."""
    data = to_dataclass(data_class, cfg.data, "data")
    model = to_dataclass(model_class, cfg.model, "model")
    embeddings = to_dataclass(EmbeddingsConfig, cfg.embeddings, "embeddings")
    trainer = make_trainer(cfg, run_dir)
    seed_everything(trainer.config.seed + trainer.rank)  # DDP copies rank 0's weights
    return data, model, embeddings, trainer


def make_trainer(cfg: DictConfig, run_dir: Path | None) -> Trainer:
    """The Trainer for this run, from ``cfg.trainer``."""
    return Trainer(to_dataclass(TrainerConfig, cfg.trainer, "trainer"), run_dir)


def fit(job: Job, trainer: Trainer) -> dict[str, Any]:
    """Train the job; returns the best dev metrics, with the best weights in the model."""
    log.info(
        "model: %s parameters\n%s", f"{sum(p.numel() for p in job.model.parameters()):,}", job.model
    )
    best = trainer.fit(job)
    name = job.monitor.name
    log.info("best dev %s %.4g (epoch %d)", name, best[name], trainer.state.best_epoch)
    return best


def make_bundle(cfg: DictConfig, vocabs: dict[str, Vocab], **extras: Any) -> Bundle:
    """The checkpoint bundle of a run: its resolved config, vocabularies and extras."""
    return Bundle(
        task=cfg.task.name,
        config={k: plain(cfg[k]) for k in SECTIONS if k in cfg},
        vocabs={name: vocab.to_list() for name, vocab in vocabs.items()},
        extras=extras,
    )


def saved_configs(
    source: Checkpoint | Bundle, data_class: type[D], model_class: type[M]
) -> tuple[D, M, EmbeddingsConfig]:
    """The typed ``data``, ``model`` and ``embeddings`` configs a checkpoint (or its
    bundle) was trained with."""
    config = (source.bundle if isinstance(source, Checkpoint) else source).config
    return (
        to_dataclass(data_class, config["data"], "data"),
        to_dataclass(model_class, config["model"], "model"),
        to_dataclass(EmbeddingsConfig, config.get("embeddings", {}), "embeddings"),
    )


# The one rule for mode=test, predict and export: the checkpoint decides what the model is
# and how it reads its input (every model, embeddings and data setting: tokenizer, case,
# tag scheme, languages, look-back ...); the command line decides which files to read and
# write and what their columns are called (these data keys, input=, output=), how to run
# (trainer.device, precision, eval_batch_size, num_threads) and how to decode, sample or
# export (decode.*, sample.*, export.*).
RUN_DATA_KEYS = (
    "root", "train", "dev", "test", "path", "token_column", "tag_column",
    "text_field", "label_field", "hf_name", "hf_config", "cache_dir",
)  # fmt: skip


def run_settings(bundle: Bundle, cfg: DictConfig, data_class: type[D]) -> D:
    """The ``data`` settings of a test/predict run: the checkpoint's, with the files and
    their column names (``RUN_DATA_KEYS``) taken from this run's config."""
    data = dict(bundle.config.get("data", {}))
    given = plain(cfg.get("data")) or {}
    data.update({key: given[key] for key in RUN_DATA_KEYS if key in given and key in data})
    return to_dataclass(data_class, data, "data")


def eval_batch_size(bundle: Bundle) -> int:
    """The evaluation batch size a model was trained with (its predictor's default)."""
    return int(bundle.config.get("trainer", {}).get("eval_batch_size") or 64)


def predictor_for_run(cfg: DictConfig, task: str):
    """The predictor of ``ckpt=PATH`` for a test/predict/export run, on this run's device,
    precision and evaluation batch size (``trainer.*``)."""
    from nlp_lstm.config import task_module

    trainer = make_trainer(cfg, None)
    checkpoint = checkpoint_for(cfg, task)
    config = trainer.config
    return task_module(task).load(
        checkpoint, trainer.device, config.eval_batch_size, str(config.precision)
    )


def word_placeholder(words: Vocab | list[str], embeddings: EmbeddingsConfig) -> torch.Tensor:
    """A zero word matrix of the trained shape, for ``load_state_dict`` to fill."""
    return torch.zeros(len(words), embeddings.dim)


def load_weights(model: torch.nn.Module, checkpoint: Checkpoint) -> None:
    """Load a checkpoint's weights, with a one-line error when they do not fit the model."""
    try:
        model.load_state_dict(checkpoint.model)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise UserError(
            f"{checkpoint.path}: weights do not fit the model its config describes "
            f"({first[1].strip() if len(first) > 1 else first[0]})"
        ) from None


def require_file(path: str | None, what: str, hint: str) -> Path:
    """The path, or a one-line DataError saying where we looked and how to get the data."""
    if not path:
        raise UserError(f"no {what} given ({hint})")
    resolved = Path(path).expanduser()
    if resolved.is_dir():
        raise DataError(resolved, None, f"{what} is a directory, not a file")
    if not resolved.is_file():
        raise DataError(resolved, None, f"{what} not found. {hint}")
    return resolved


def checkpoint_for(cfg: DictConfig, task: str) -> Checkpoint:
    """Load ``ckpt=PATH`` and check it was trained for ``task``."""
    if not cfg.ckpt:
        raise UserError(f"mode={cfg.mode} needs ckpt=PATH (a checkpoints/best.pt of a {task} run)")
    return load_checkpoint(cfg.ckpt, task)


def on_main(write: Callable[..., Any], *args: Any) -> None:
    """Call ``write(*args)`` (a plot, a sample file) on the main rank only: under torchrun
    the other ranks write nothing."""
    if distributed.is_main():
        write(*args)


def report(metrics: dict[str, Any], path: Path) -> None:
    """Write metrics as JSON to ``path`` and print them as one JSON line on stdout (the
    main rank only). In a ``--multirun`` sweep the line starts with the job's number and
    overrides, so each line says which job it belongs to."""
    if not distributed.is_main():
        return
    text = json.dumps(metrics, sort_keys=False)
    atomic_write_text(path, text + "\n")
    print(json.dumps({**sweep_job(), **metrics}) if sweep_job() else text, flush=True)


def sweep_job() -> dict[str, Any]:
    """``{"job": N, "overrides": [...]}`` inside a Hydra ``--multirun`` job, else ``{}``."""
    if "hydra" not in sys.modules:  # a quick predict call: no Hydra at all
        return {}
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return {}
    return {"job": hydra.job.num, "overrides": list(hydra.overrides.task)}


def input_lines_path(cfg: DictConfig, run_dir: Path) -> Path:
    """``input=FILE``, or stdin saved to the run folder so errors can name a line."""
    if cfg.input:
        return require_file(cfg.input, "input file", "pass input=FILE")
    saved = run_dir / "stdin.txt"
    saved.write_bytes(sys.stdin.buffer.read())
    return saved


@contextmanager
def output_stream(cfg: DictConfig):
    """Where ``mode=predict`` writes: ``output=FILE`` (written whole and atomically at the
    end) or stdout. The one writer of output files: under torchrun only the main rank
    writes; the others write into a buffer that is dropped."""
    if not distributed.is_main():
        yield io.StringIO()
        return
    if not cfg.get("output"):
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(cfg.output).expanduser()
    if path.is_dir():
        raise UserError(f"output={cfg.output} is a directory; name a file")
    buffer = io.StringIO()
    yield buffer
    atomic_write_text(path, buffer.getvalue())


OUTPUT_FORMATS = ("text", "jsonl")


def check_output_format(cfg: DictConfig) -> str:
    """``output_format``: ``text`` (the task's plain lines) or ``jsonl`` (one JSON object
    per input: the Python API's result)."""
    value = cfg.get("output_format") or "text"
    if value not in OUTPUT_FORMATS:
        raise ConfigError(f"output_format must be text or jsonl, not {value!r}")
    return value


def plain_result(value: Any) -> Any:
    """A predictor's result as plain JSON-ready values (dataclasses and named tuples to
    dicts, arrays and tuples to lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_result(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple (Token)
        return {k: plain_result(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {str(k): plain_result(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_result(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def json_line(value: Any) -> str:
    """One JSON line of a result (see :func:`plain_result`)."""
    return json.dumps(plain_result(value), ensure_ascii=False) + "\n"


def extend_with_pretrained(
    words: Vocab,
    embedder: TokenEmbedder,
    sentences: list[list[str]],
    config: EmbeddingsConfig,
    looked_up: set[str] | None = None,
) -> Vocab:
    """Give words unseen in training their pretrained vector, exactly as if they had been
    in the training vocabulary (rows that never get a gradient keep their pretrained
    values). Returns the grown vocabulary; the embedder grows in place. ``looked_up``
    remembers the words already searched for (found or not), so a predictor searches the
    vectors for a word once."""
    unseen = list(dict.fromkeys(t for s in sentences for t in s if t not in words))
    if looked_up is not None:
        unseen = [word for word in unseen if word not in looked_up]
        looked_up.update(unseen)
    found, rows = pretrained_rows_for(unseen, config)
    if not found:
        return words
    embedder.extend_vocab(rows)
    log.info("added %d of %d unseen words with pretrained vectors", len(found), len(unseen))
    return Vocab([*words.itos, *found])


def export_model(
    cfg: DictConfig,
    run_dir: Path,
    graph: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    inputs: dict[str, dict[int, str]],
    outputs: dict[str, dict[int, str]],
    metadata: dict[str, Any],
) -> None:
    """``mode=export``: write the task's graph as ``cfg.export`` says (see
    :func:`nlp_lstm.export.export_graph`) and print one JSON line describing it."""
    config = export_config(cfg)
    report_export(export_graph(graph, example, inputs, outputs, metadata, config), config, run_dir)


def report_export(path: Path, config: ExportConfig, run_dir: Path) -> None:
    """One JSON line describing what ``mode=export`` wrote."""
    described = {"path": str(path), "format": config.format, "quantize": config.quantize}
    report({**described, "bytes": path.stat().st_size}, run_dir / "export.json")
