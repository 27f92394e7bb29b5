"""Plumbing every task shares: config sections, files, reporting results."""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from nlp_lstm.config import plain, to_dataclass
from nlp_lstm.data.errors import DataError, UserError
from nlp_lstm.data.vectors import EmbeddingsConfig, pretrained_rows_for
from nlp_lstm.data.vocab import Vocab
from nlp_lstm.modules.embeddings import TokenEmbedder
from nlp_lstm.train.checkpoint import load_checkpoint
from nlp_lstm.train.trainer import Evaluate, Trainer, TrainerConfig, seed_everything

log = logging.getLogger(__name__)
D = TypeVar("D")
M = TypeVar("M")


@dataclass
class TrainingRun:
    """What a task's ``setup`` builds from the config and hands to the Trainer."""

    model: nn.Module
    train_loader: DataLoader
    dev_loader: DataLoader
    evaluate: Evaluate
    meta: dict[str, Any]  # saved in checkpoints: task, config, vocabularies
    trainer: Trainer

    def fit(self) -> dict[str, Any]:
        """Train; returns the best dev metrics, with the best weights left in the model."""
        best = self.trainer.fit(
            self.model, self.train_loader, self.dev_loader, self.evaluate, self.meta
        )
        monitor = self.trainer.monitor
        log.info(
            "best dev %s %.2f (epoch %d)", monitor, best[monitor], self.trainer.state.best_epoch
        )
        return best


def task_configs(
    cfg: DictConfig, run_dir: Path | None, data_class: type[D], model_class: type[M]
) -> tuple[D, M, EmbeddingsConfig, Trainer]:
    """A task's typed ``data``, ``model`` and ``embeddings`` configs and its Trainer, with
    every random generator seeded from ``trainer.seed``."""
    data = to_dataclass(data_class, cfg.data, "data")
    model = to_dataclass(model_class, cfg.model, "model")
    trainer = make_trainer(cfg, run_dir)
    seed_everything(trainer.config.seed)
    return data, model, embeddings_config(cfg), trainer


def saved_configs(
    payload: dict[str, Any], data_class: type[D], model_class: type[M]
) -> tuple[D, M, EmbeddingsConfig, Vocab, torch.Tensor]:
    """From a checkpoint: its typed ``data``, ``model`` and ``embeddings`` configs, its word
    vocabulary and a zero word matrix of the trained shape (``load_state_dict`` fills it)."""
    config = payload["meta"]["config"]
    words = Vocab.from_list(payload["meta"]["words"])
    placeholder = torch.zeros(len(words), payload["model"]["embedder.words.weight"].shape[1])
    return (
        to_dataclass(data_class, config["data"], "data"),
        to_dataclass(model_class, config["model"], "model"),
        to_dataclass(EmbeddingsConfig, config["embeddings"], "embeddings"),
        words,
        placeholder,
    )


def make_trainer(cfg: DictConfig, run_dir: Path | None) -> Trainer:
    """The Trainer for this run, from ``cfg.trainer`` and the task's monitored metric."""
    config = to_dataclass(TrainerConfig, cfg.trainer, "trainer")
    return Trainer(
        config, run_dir, monitor=cfg.task.monitor, mode=cfg.task.get("monitor_mode", "max")
    )


def embeddings_config(cfg: DictConfig) -> EmbeddingsConfig:
    return to_dataclass(EmbeddingsConfig, cfg.embeddings, "embeddings")


def require_file(path: str | None, what: str, hint: str) -> Path:
    """The path, or a one-line DataError saying where we looked and how to get the data."""
    if not path:
        raise UserError(f"no {what} given ({hint})")
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise DataError(resolved, None, f"{what} not found. {hint}")
    return resolved


def checkpoint_for(cfg: DictConfig, task: str) -> dict[str, Any]:
    """Load ``ckpt=PATH`` and check it was trained for ``task``."""
    if not cfg.ckpt:
        raise UserError(f"mode={cfg.mode} needs ckpt=PATH (a checkpoints/best.pt of a {task} run)")
    payload = load_checkpoint(cfg.ckpt)
    if payload["meta"].get("task") != task:
        raise UserError(
            f"{cfg.ckpt}: a checkpoint of task {payload['meta'].get('task')!r}, not {task!r}"
        )
    return payload


def report(metrics: dict[str, Any], path: Path) -> None:
    """Write metrics as JSON to ``path`` and print them as one JSON line on stdout."""
    text = json.dumps(metrics, sort_keys=False)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)
    print(text, flush=True)


def config_snapshot(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data, to store in checkpoints."""
    return {
        k: plain(cfg[k]) for k in ("task", "data", "model", "embeddings", "trainer") if k in cfg
    }


def input_lines_path(cfg: DictConfig, run_dir: Path) -> Path:
    """``input=FILE``, or stdin saved to the run folder so errors can name a line."""
    if cfg.input:
        return require_file(cfg.input, "input file", "pass input=FILE")
    saved = run_dir / "stdin.txt"
    saved.write_bytes(sys.stdin.buffer.read())
    return saved


@contextmanager
def output_stream(cfg: DictConfig):
    """``output=FILE`` (written whole at the end) or stdout."""
    if not cfg.output:
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(cfg.output).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        yield handle
    tmp.replace(path)


def extend_with_pretrained(
    words: Vocab, embedder: TokenEmbedder, sentences: list[list[str]], config: EmbeddingsConfig
) -> Vocab:
    """Give words unseen in training their pretrained vector, exactly as if they had been
    in the training vocabulary (rows that never get a gradient keep their pretrained
    values). Returns the grown vocabulary; the embedder grows in place."""
    unseen = list(dict.fromkeys(t for s in sentences for t in s if t not in words))
    found, rows = pretrained_rows_for(unseen, config)
    if not found:
        return words
    embedder.extend_vocab(rows)
    log.info("added %d of %d unseen words with pretrained vectors", len(found), len(unseen))
    return Vocab([*words.itos, *found])
