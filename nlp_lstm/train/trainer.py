"""The one training loop, shared by every task.

A task hands the Trainer a model with ``loss(batch) -> Tensor``, data loaders of batch
dataclasses (with a CPU ``lengths`` field) and ``evaluate(model, batches) -> dict``. The
Trainer does the rest: device placement, autocast (bf16/fp16), gradient accumulation and
clipping, the optimizer and LR schedule, evaluation and early stopping on one metric,
atomic checkpoints with exact resume, a progress bar, CSV/TensorBoard logs and plots.
"""

from __future__ import annotations

import csv
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from nlp_lstm.data.batching import move_batch, pin_batch
from nlp_lstm.data.errors import ConfigError, UserError
from nlp_lstm.train.checkpoint import atomic_save, load_checkpoint
from nlp_lstm.train.plots import plot_curves

log = logging.getLogger(__name__)

Evaluate = Callable[[nn.Module, Iterable[Any]], dict[str, Any]]
T = TypeVar("T")


@dataclass
class TrainerConfig:
    """Settings of the ``trainer`` config group."""

    max_epochs: int = 50
    batch_size: int = 32
    eval_batch_size: int = 256
    lr: float = 1e-3
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: Literal["plateau", "decay", "cosine", "none"] = "plateau"
    lr_decay: float = 0.05  # decay: lr / (1 + lr_decay * epoch)
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["32", "bf16", "fp16"] = "32"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 5.0
    patience: int = 10  # epochs without improvement before stopping; 0 = never stop early
    seed: int = 42
    resume: str | None = None  # a checkpoint path, or "auto" for the run folder's last.pt
    limit_train_batches: int | None = None
    limit_eval_batches: int | None = None
    log_every_n_steps: int = 50
    progress_bar: bool = True
    num_threads: int | None = None


@dataclass
class TrainState:
    """Counters that a checkpoint carries so training resumes where it stopped."""

    epoch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA device is available (use auto or cpu)")
    return torch.device(name)


class Trainer:
    """Fits a model on a train loader, early-stopping on ``monitor`` of the dev metrics.

    Args:
        config: trainer settings.
        run_dir: the run folder (checkpoints, metrics.csv, TensorBoard events, curves.png);
            ``None`` for a trainer used only to evaluate.
        monitor: the metric key of ``evaluate``'s result to select and early-stop on.
        mode: ``max`` or ``min`` for the monitored metric.
    """

    def __init__(
        self,
        config: TrainerConfig,
        run_dir: str | Path | None = None,
        monitor: str = "f1",
        mode: str = "max",
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.monitor = monitor
        self.mode = mode
        self.device = resolve_device(config.device)
        precision = str(config.precision)
        if precision not in ("32", "bf16", "fp16"):
            raise ConfigError(
                f"trainer.precision must be 32, bf16 or fp16, not {config.precision!r}"
            )
        self.amp_dtype = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.state = TrainState()

    # ------------------------------------------------------------------ helpers

    def autocast(self):
        """The autocast context for this trainer's device and precision."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def batches(self, loader: Iterable[Any], limit: int | None = None) -> Iterator[Any]:
        """Batches moved to the device (pinned and non-blocking on CUDA)."""
        cuda = self.device.type == "cuda"
        for index, batch in enumerate(loader):
            if limit is not None and index >= limit:
                return
            yield move_batch(pin_batch(batch) if cuda else batch, self.device)

    @contextmanager
    def inference(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model on this trainer's device in eval mode, under no_grad and autocast;
        its training mode is restored afterwards."""
        model.to(self.device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self.autocast():
                yield model
        finally:
            model.train(was_training)

    def evaluate(
        self,
        model: nn.Module,
        loader: DataLoader,
        evaluate: Callable[[nn.Module, Iterable[Any]], T],
    ) -> T:
        """Run ``evaluate(model, batches)`` over ``loader`` under :meth:`inference` and
        return its result (metrics, or predictions for inference modes)."""
        with self.inference(model):
            return evaluate(model, self.batches(loader, self.config.limit_eval_batches))

    def _better(self, value: float) -> bool:
        if self.state.best is None:
            return not math.isnan(value)
        return value > self.state.best if self.mode == "max" else value < self.state.best

    # ------------------------------------------------------------------ building

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        cfg = self.config
        params = parameter_groups(model, cfg.lr)
        choices = {
            "sgd": (torch.optim.SGD, {"momentum": cfg.momentum}),
            "adam": (torch.optim.Adam, {}),
            "adamw": (torch.optim.AdamW, {}),
        }
        if cfg.optimizer not in choices:
            raise ConfigError(
                f"trainer.optimizer must be sgd, adam or adamw, not {cfg.optimizer!r}"
            )
        optimizer_class, extra = choices[cfg.optimizer]
        kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, **extra}
        try:  # one fused kernel for all parameters (about 4x faster than the loop on the CPU)
            return optimizer_class(params, **kwargs, fused=True)
        except (RuntimeError, TypeError, ValueError):
            return optimizer_class(params, **kwargs)

    def _scheduler(self, optimizer: torch.optim.Optimizer):
        cfg = self.config
        if cfg.lr_schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=self.mode, factor=cfg.plateau_factor, patience=cfg.plateau_patience
            )
        if cfg.lr_schedule == "decay":
            decay = cfg.lr_decay
            return torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda epoch: 1.0 / (1.0 + decay * epoch)
            )
        if cfg.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(cfg.max_epochs, 1)
            )
        if cfg.lr_schedule == "none":
            return None
        raise ConfigError(
            f"trainer.lr_schedule must be plateau, decay, cosine or none, not {cfg.lr_schedule!r}"
        )

    # ------------------------------------------------------------------ checkpoints

    @property
    def checkpoint_dir(self) -> Path:
        if self.run_dir is None:
            raise ValueError("this Trainer has no run folder")
        return self.run_dir / "checkpoints"

    @staticmethod
    def _rng_state() -> dict[str, Any]:
        state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def _set_rng_state(state: dict[str, Any]) -> None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def _save(self, path: Path, model, meta, optimizer=None, scheduler=None, scaler=None) -> None:
        payload = {
            "version": 1,
            "meta": meta,
            "model": model.state_dict(),
            "trainer": asdict(self.state),
        }
        if optimizer is not None:
            payload.update(
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict() if scheduler is not None else None,
                scaler=scaler.state_dict(),
                rng=self._rng_state(),
            )
        atomic_save(payload, path)

    def _resume(self, model, optimizer, scheduler, scaler) -> None:
        target = self.config.resume
        if target == "auto":
            path = self.checkpoint_dir / "last.pt"
            if not path.is_file():
                log.info("resume=auto: no %s yet, starting fresh", path)
                return
        else:
            path = Path(target)
        payload = load_checkpoint(path)
        if "optimizer" not in payload:
            raise UserError(f"{path}: holds weights only (best.pt?); resume needs a last.pt")
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        if scheduler is not None and payload.get("scheduler") is not None:
            scheduler.load_state_dict(payload["scheduler"])
        scaler.load_state_dict(payload["scaler"])
        self.state = TrainState(**payload["trainer"])
        self._set_rng_state(payload["rng"])
        log.info("resumed from %s at epoch %d (step %d)", path, self.state.epoch, self.state.step)

    # ------------------------------------------------------------------ the loop

    def fit(
        self,
        model: nn.Module,
        train_loader: DataLoader,
        dev_loader: DataLoader,
        evaluate: Evaluate,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Train until ``max_epochs`` or early stopping; returns the best dev metrics and
        leaves the best weights in ``model``."""
        cfg = self.config
        if self.run_dir is None:
            raise ValueError("fit needs a run folder")
        if cfg.accumulate_grad_batches < 1:
            raise ConfigError("trainer.accumulate_grad_batches must be at least 1")
        meta = meta or {}
        model.to(self.device)
        optimizer = self._optimizer(model)
        scheduler = self._scheduler(optimizer)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        if cfg.resume:
            self._resume(model, optimizer, scheduler, scaler)

        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(
            str(self.run_dir / "tensorboard"), purge_step=self.state.step or None
        )
        best_metrics: dict[str, Any] = {}
        try:
            while self.state.epoch < cfg.max_epochs:
                if cfg.patience and self.state.bad_epochs >= cfg.patience:
                    log.info(
                        "early stopping: no %s improvement in %d epochs", self.monitor, cfg.patience
                    )
                    break
                self.state.epoch += 1
                epoch = self.state.epoch
                sampler = getattr(train_loader, "batch_sampler", None)
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(epoch)
                train_loss, seconds, sentences = self._train_epoch(
                    model, train_loader, optimizer, scaler, writer
                )
                metrics = self.evaluate(model, dev_loader, evaluate)
                if self.monitor not in metrics:
                    raise KeyError(f"evaluate() returned no {self.monitor!r} metric")
                value = float(metrics[self.monitor])
                lr = optimizer.param_groups[0]["lr"]
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(value)
                elif scheduler is not None:
                    scheduler.step()
                improved = self._better(value)
                if improved:
                    self.state.best, self.state.best_epoch, self.state.bad_epochs = value, epoch, 0
                    best_metrics = metrics
                else:
                    self.state.bad_epochs += 1
                row = {
                    "epoch": epoch,
                    "step": self.state.step,
                    "train_loss": train_loss,
                    "lr": lr,
                    "epoch_seconds": seconds,
                    "train_sents_per_s": sentences / max(seconds, 1e-9),
                    **{
                        f"dev_{k}": float(v)
                        for k, v in metrics.items()
                        if isinstance(v, (int, float))
                    },
                }
                self.state.history.append(row)
                log.info(
                    "epoch %d/%d  loss %.4f  dev %s %.2f  (best %.2f @%d)  lr %.3g  %.1fs  %.0f sent/s",
                    epoch,
                    cfg.max_epochs,
                    train_loss,
                    self.monitor,
                    value,
                    self.state.best if self.state.best is not None else float("nan"),
                    self.state.best_epoch,
                    lr,
                    seconds,
                    row["train_sents_per_s"],
                )
                for key, val in row.items():
                    if key.startswith("dev_"):
                        writer.add_scalar(f"dev/{key[4:]}", val, epoch)
                writer.add_scalar("train/epoch_loss", train_loss, epoch)
                writer.add_scalar("train/lr", lr, epoch)
                writer.flush()
                if improved:
                    self._save(self.checkpoint_dir / "best.pt", model, meta)
                self._save(
                    self.checkpoint_dir / "last.pt", model, meta, optimizer, scheduler, scaler
                )
                self._write_logs()
        finally:
            writer.close()

        best_path = self.checkpoint_dir / "best.pt"
        if best_path.is_file():
            model.load_state_dict(load_checkpoint(best_path)["model"])
        if not best_metrics:  # resumed after the best epoch, or nothing improved: re-evaluate
            best_metrics = self.evaluate(model, dev_loader, evaluate)
        return best_metrics

    def _train_epoch(self, model, loader, optimizer, scaler, writer) -> tuple[float, float, int]:
        cfg = self.config
        model.train()
        total_batches = len(loader)
        if cfg.limit_train_batches is not None:
            total_batches = min(total_batches, cfg.limit_train_batches)
        accumulate = cfg.accumulate_grad_batches
        epoch_loss = torch.zeros((), device=self.device)
        window_loss = torch.zeros((), device=self.device)
        window_batches = 0
        sentences = 0
        params = [p for group in optimizer.param_groups for p in group["params"]]
        bar = _progress(total_batches, f"epoch {self.state.epoch}", cfg.progress_bar)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        for index, batch in enumerate(self.batches(loader, total_batches)):
            with self.autocast():
                loss = model.loss(batch)
            scaler.scale(loss / accumulate).backward()
            epoch_loss += loss.detach()
            window_loss += loss.detach()
            window_batches += 1
            sentences += batch.lengths.shape[0]
            if (index + 1) % accumulate == 0 or index + 1 == total_batches:
                if cfg.gradient_clip_val:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, cfg.gradient_clip_val, foreach=True)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                self.state.step += 1
                if self.state.step % cfg.log_every_n_steps == 0:
                    mean = (
                        window_loss / window_batches
                    ).item()  # the one host sync per log interval
                    writer.add_scalar("train/loss", mean, self.state.step)
                    bar.set_postfix(
                        loss=f"{mean:.3f}",
                        sent_s=f"{sentences / (time.perf_counter() - start):.0f}",
                    )
                    window_loss.zero_()
                    window_batches = 0
            bar.update(1)
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return (epoch_loss / max(total_batches, 1)).item(), seconds, sentences

    def _write_logs(self) -> None:
        history = self.state.history
        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]
        tmp = self.run_dir / ".metrics.csv.tmp"
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)
        tmp.replace(self.run_dir / "metrics.csv")
        try:
            plot_curves(history, self.run_dir / "curves.png", self.monitor, self.mode)
        except Exception as err:  # a plot must never stop training
            log.warning("could not draw curves.png: %s", err)


def parameter_groups(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """Optimizer groups: every trainable parameter at ``lr``, except those held directly by
    a submodule with an ``lr_scale`` attribute (e.g. the word matrix of a TokenEmbedder),
    which train at ``lr * lr_scale``. Schedules then scale every group alike."""
    scaled: dict[float, list[nn.Parameter]] = {}
    claimed: set[int] = set()
    for module in model.modules():
        scale = getattr(module, "lr_scale", None)
        if scale is None or float(scale) == 1.0:
            continue
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        scaled.setdefault(float(scale), []).extend(own)
        claimed.update(id(p) for p in own)
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in claimed]
    groups = [{"params": rest, "lr": lr}] if rest else []
    return groups + [{"params": ps, "lr": lr * scale} for scale, ps in scaled.items() if ps]


def _progress(total: int, description: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=description,
        file=sys.stderr,
        disable=not enabled,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
    )
