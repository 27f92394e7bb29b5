"""The Trainer's checkpoints (through :mod:`nlp_lstm.checkpoint`): best.pt holds the best
weights, last.pt also everything that resumes training exactly (optimizer, schedule,
GradScaler, EMA, every rank's random state and the :class:`TrainState` counters)."""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nlp_lstm.checkpoint import Bundle, load_checkpoint, save_checkpoint
from nlp_lstm.errors import UserError
from nlp_lstm.train import distributed
from nlp_lstm.train.process import seed_everything

log = logging.getLogger("nlp_lstm.train.trainer")  # resume's lines, as the Trainer's


@dataclass
class TrainState:
    """Counters that a checkpoint carries so training resumes where it stopped."""

    epoch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def save(
    path: Path,
    model: nn.Module,
    bundle: Bundle,
    state: TrainState,
    training: dict[str, Any] | None = None,
) -> None:
    """Write the checkpoint at ``path``; ``training`` (from :func:`training_state`) makes it
    a resumable last.pt. Call it on the main rank only."""
    save_checkpoint(path, bundle, model.state_dict(), trainer=asdict(state), **(training or {}))


def training_state(optimizer, scheduler, scaler, ema=None) -> dict[str, Any]:
    """What last.pt carries besides the weights and counters. Every rank must call it: it
    gathers each rank's random state."""
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict(),
        "rng": distributed.all_gather(rng_state()),
        "ema": ema.state_dict() if ema is not None else None,
    }


def resume(
    target: str, folder: Path, model, optimizer, scheduler, scaler, ema, seed: int
) -> TrainState | None:
    """Load last.pt (``target``: a path, or ``auto`` for ``folder/last.pt``) into the model,
    optimizer, schedule, scaler and EMA, restore this rank's random state, and return the
    counters; None for ``auto`` when there is no last.pt yet."""
    path = folder / "last.pt" if target == "auto" else Path(target)
    if target == "auto" and not path.is_file():
        log.info("resume=auto: no %s yet, starting fresh", path)
        return None
    checkpoint = load_checkpoint(path)
    if not checkpoint.resumable:
        raise UserError(f"{path}: holds weights only (best.pt?); resume needs a last.pt")
    payload = checkpoint.payload
    model.load_state_dict(checkpoint.model)
    optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None and payload.get("scheduler") is not None:
        scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    if ema is not None:
        if payload.get("ema") is None:
            raise UserError(f"{path}: trained without trainer.ema_decay; resume without it")
        ema.load_state_dict(payload["ema"])
    state = TrainState(**payload["trainer"])
    rng = payload["rng"]
    states = rng if isinstance(rng, list) else [rng]  # one state, before per-rank states
    rank, world_size = distributed.rank(), distributed.world_size()
    if len(states) == world_size:
        set_rng_state(states[rank])
    else:
        log.warning(
            "%s was written by %d processes, this run has %d: random streams restart",
            path,
            len(states),
            world_size,
        )
        seed_everything(seed + 1000 * state.epoch + rank)
    log.info("resumed from %s at epoch %d (step %d)", path, state.epoch, state.step)
    return state


def load_best(model: nn.Module, folder: Path) -> None:
    """Put ``folder/best.pt``'s weights into ``model`` (if there is one)."""
    path = folder / "best.pt"
    if path.is_file():
        model.load_state_dict(load_checkpoint(path).model)


def remove_torn_writes(run_dir: Path) -> None:
    """Delete the temporary files of atomic writes that a kill cut short."""
    for folder in (run_dir, run_dir / "checkpoints"):
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """This process's Python and torch (CPU and CUDA) random states."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (Python's state comes back as lists)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
