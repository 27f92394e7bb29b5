"""The one training loop, shared by every task.

A task hands the Trainer a :class:`nlp_lstm.contract.Job` (read that module first): a model
whose ``forward(batch)`` returns ``(loss_sum, count)``, train/dev splits, ``predict`` and
``score`` functions, the monitored metric and the checkpoint bundle. The Trainer does the
rest: loaders (length-bucketed, sharded per rank), device placement, DistributedDataParallel
under torchrun, autocast (bf16/fp16), gradient accumulation and clipping, the optimizer and
LR schedule, evaluation with outputs gathered from every rank, early stopping, atomic
checkpoints with exact resume, a progress bar, CSV/TensorBoard logs and plots. Only the main
rank writes files; every rank takes the same decisions.
"""

from __future__ import annotations

import csv
import logging
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from nlp_lstm.checkpoint import Bundle, load_checkpoint, save_checkpoint
from nlp_lstm.contract import Job, Monitor, Predict, Score, Split
from nlp_lstm.data.batching import FixedBatchSampler, bucketed_loader, move_batch, pin_batch
from nlp_lstm.errors import ConfigError, UserError
from nlp_lstm.files import atomic_write
from nlp_lstm.train import distributed
from nlp_lstm.train.plots import plot_curves

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    """Settings of the ``trainer`` config section. These defaults are the only copy: the
    YAML under conf/ holds what differs (per-task recipes in ``task/``, hardware in
    ``trainer/``)."""

    max_epochs: int = 50
    batch_size: int = 32  # per process
    eval_batch_size: int = 256
    lr: float = 1e-3
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    lr_schedule: Literal["plateau", "decay", "cosine", "none"] = "plateau"
    lr_decay: float = 0.05  # decay: lr / (1 + lr_decay * epoch)
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["32", "bf16", "fp16"] = "32"
    strategy: Literal["auto", "ddp"] = "auto"  # auto: DDP when launched by torchrun
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 5.0
    ema_decay: float | None = None  # evaluate and save an exponential moving average of the weights
    patience: int = 10  # epochs without improvement before stopping; 0 = never stop early
    seed: int = 42
    resume: str | None = None  # a checkpoint path, or "auto" for the run folder's last.pt
    overwrite: bool = False  # train over a run folder that already holds checkpoints
    limit_train_batches: int | None = None
    limit_eval_batches: int | None = None
    log_every_n_steps: int = 50
    progress_bar: bool | None = (
        None  # None: a bar on a terminal, a line per quarter epoch elsewhere
    )
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


ONEDNN_CACHE = "16"


def bound_cpu_kernel_cache() -> None:
    """Cap oneDNN's CPU primitive cache (unless the user set ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``).

    oneDNN (PyTorch's CPU kernels for convolutions and LSTMs) caches a compiled primitive,
    with its buffers, for every distinct input shape, up to 1,024 of them. Length-bucketed
    batches have ever-new shapes, so with the default the cache grows for epochs and holds
    hundreds of MiB (NER with the char CNN: ~220 MiB) while rarely being hit. The variable is
    read when the first primitive is made, so this must run before the first forward pass.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; under torchrun, this process's GPU."""
    if isinstance(name, torch.device):
        return name
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA device is available (use auto or cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", distributed.local_rank())
    return torch.device(name)


def check_config(config: TrainerConfig) -> None:
    """Reject settings that would train nothing or train wrongly, before any work."""
    if config.max_epochs < 1:
        raise ConfigError(f"trainer.max_epochs must be at least 1, got {config.max_epochs}")
    for name in ("batch_size", "eval_batch_size", "accumulate_grad_batches", "log_every_n_steps"):
        if getattr(config, name) < 1:
            raise ConfigError(f"trainer.{name} must be at least 1, got {getattr(config, name)}")
    for name in ("limit_train_batches", "limit_eval_batches"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(f"trainer.{name} must be at least 1 or null, got {value}")
    if config.lr <= 0:
        raise ConfigError(f"trainer.lr must be positive, got {config.lr}")
    if config.ema_decay is not None and not 0.0 < config.ema_decay < 1.0:
        raise ConfigError(f"trainer.ema_decay must be in (0, 1) or null, got {config.ema_decay}")
    if config.strategy == "ddp" and not distributed.launched_by_torchrun():
        raise ConfigError(
            "trainer.strategy=ddp needs several processes: launch with "
            "torchrun --nproc_per_node=N -m nlp_lstm ..."
        )


class Trainer:
    """Fits a :class:`~nlp_lstm.contract.Job`, and evaluates or predicts with a model.

    Args:
        config: trainer settings.
        run_dir: the run folder (checkpoints, metrics.csv, TensorBoard events, curves.png);
            ``None`` for a trainer used only to evaluate or predict.
    """

    def __init__(self, config: TrainerConfig, run_dir: str | Path | None = None) -> None:
        check_config(config)
        bound_cpu_kernel_cache()
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.device = resolve_device(config.device)
        precision = str(config.precision)
        if precision not in ("32", "bf16", "fp16"):
            raise ConfigError(
                f"trainer.precision must be 32, bf16 or fp16, not {config.precision!r}"
            )
        self.amp_dtype = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.rank = distributed.rank()
        self.world_size = distributed.world_size()
        self.is_main = self.rank == 0
        self.state = TrainState()
        self.monitor: Monitor | None = None

    # ------------------------------------------------------------------ data

    def loader(self, split: Split, train: bool) -> DataLoader:
        """This rank's length-bucketed batches of ``split``: shuffled per epoch (seeded)
        for training, longest first for evaluation; or, for a split that fixes its own
        batches (``split.batches``), those, in their order."""
        if split.collate is None:
            raise ValueError("this split has no collate function")
        batch_size = self.config.batch_size if train else self.config.eval_batch_size
        if split.batches is not None:
            batches = split.batches(batch_size, self.rank, self.world_size, train)
            return DataLoader(
                range(len(split)),
                batch_sampler=FixedBatchSampler(batches),
                collate_fn=split.collate,
            )
        return bucketed_loader(
            split.collate,
            split.lengths,
            batch_size,
            shuffle=train,
            seed=self.config.seed,
            rank=self.rank,
            world_size=self.world_size,
        )

    def batches(self, loader: Iterable[Any], limit: int | None = None) -> Iterator[Any]:
        """Batches moved to the device (pinned and non-blocking on CUDA)."""
        cuda = self.device.type == "cuda"
        for index, batch in enumerate(loader):
            if limit is not None and index >= limit:
                return
            yield move_batch(pin_batch(batch) if cuda else batch, self.device)

    def autocast(self):
        """The autocast context for this trainer's device and precision."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

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

    # ------------------------------------------------------------------ inference

    def predict(self, model: nn.Module, split: Split, predict: Predict) -> tuple[Split, list[Any]]:
        """``predict`` over ``split`` on every rank, gathered on the main rank in example
        order. Returns the examples predicted (all of them unless ``limit_eval_batches``
        cut the run short) and their outputs; other ranks get an empty split."""
        loader = self.loader(split, train=False)
        local: list[tuple[int, Any]] = []
        with self.inference(model):
            for batch in self.batches(loader, self.config.limit_eval_batches):
                outputs = predict(model, batch)
                positions = batch.indices.tolist()
                if len(outputs) != len(positions):
                    raise ValueError(
                        f"predict returned {len(outputs)} outputs for a batch of {len(positions)}"
                    )
                local += zip(positions, outputs, strict=True)
        gathered = distributed.gather_to_main(local)
        if gathered is None:
            return split.subset([]), []
        by_position = dict(pair for part in gathered for pair in part)
        positions = sorted(by_position)
        if len(positions) == len(split):
            return split, [by_position[i] for i in positions]
        log.info(
            "scored %d of %d examples (trainer.limit_eval_batches)", len(positions), len(split)
        )
        return split.subset(positions), [by_position[i] for i in positions]

    def evaluate(self, model: nn.Module, split: Split, predict: Predict, score: Score) -> dict:
        """Metrics of ``model`` on ``split``: predicted on every rank, scored once on the
        main rank, the same dict returned on every rank."""
        scored, outputs = self.predict(model, split, predict)
        metrics = score(outputs, scored) if self.is_main else None
        return distributed.broadcast_from_main(metrics)

    # ------------------------------------------------------------------ building

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        cfg = self.config
        params = parameter_groups(model, cfg.lr)
        choices = {
            "sgd": (torch.optim.SGD, {"momentum": cfg.momentum}),
            "adam": (torch.optim.Adam, {}),
            "adamw": (torch.optim.AdamW, {}),
        }
        optimizer_class, extra = choices[cfg.optimizer]
        kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, **extra}
        try:  # one fused kernel for all parameters (about 4x faster than the loop on the CPU)
            return optimizer_class(params, **kwargs, fused=True)
        except (RuntimeError, TypeError, ValueError):
            return optimizer_class(params, **kwargs)

    def _scheduler(self, optimizer: torch.optim.Optimizer, monitor: Monitor):
        cfg = self.config
        if cfg.lr_schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode=monitor.mode,
                factor=cfg.plateau_factor,
                patience=cfg.plateau_patience,
            )
        if cfg.lr_schedule == "decay":
            decay = cfg.lr_decay
            return torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda epoch: 1.0 / (1.0 + decay * epoch)
            )
        if cfg.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.max_epochs)
        return None

    def _engine(self, model: nn.Module) -> nn.Module:
        """What the training step calls: the model, or DDP around it under torchrun."""
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

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

    def _save(self, name: str, model: nn.Module, bundle: Bundle, resume_state=None) -> None:
        """Write ``checkpoints/<name>`` from the main rank; ``resume_state`` (optimizer,
        scheduler, scaler, per-rank RNG states) makes it a resumable last.pt."""
        if not self.is_main:
            return
        save_checkpoint(
            self.checkpoint_dir / name,
            bundle,
            model.state_dict(),
            trainer=asdict(self.state),
            **(resume_state or {}),
        )

    def _ema(self, model: nn.Module):
        """PyTorch's AveragedModel keeping an exponential moving average of the weights
        (and buffers), updated after every optimizer step, with a warm-up; None without
        ``ema_decay`` (see :func:`ema_with_warmup`)."""
        decay = self.config.ema_decay
        if decay is None:
            return None
        from torch.optim.swa_utils import AveragedModel

        return AveragedModel(model, multi_avg_fn=ema_with_warmup(decay), use_buffers=True)

    def _resume(self, model, optimizer, scheduler, scaler, ema=None) -> None:
        target = self.config.resume
        path = self.checkpoint_dir / "last.pt" if target == "auto" else Path(target)
        if target == "auto" and not path.is_file():
            log.info("resume=auto: no %s yet, starting fresh", path)
            return
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
        self.state = TrainState(**payload["trainer"])
        rng = payload["rng"]
        states = rng if isinstance(rng, list) else [rng]
        if len(states) == self.world_size:
            self._set_rng_state(states[self.rank])
        else:
            log.warning(
                "%s was written by %d processes, this run has %d: random streams restart",
                path,
                len(states),
                self.world_size,
            )
            seed_everything(self.config.seed + 1000 * self.state.epoch + self.rank)
        log.info("resumed from %s at epoch %d (step %d)", path, self.state.epoch, self.state.step)

    # ------------------------------------------------------------------ the loop

    def fit(self, job: Job) -> dict[str, Any]:
        """Train until ``max_epochs`` or early stopping; returns the best dev metrics and
        leaves the best weights in ``job.model`` (on every rank)."""
        cfg = self.config
        if self.run_dir is None:
            raise ValueError("fit needs a run folder")
        self.monitor = monitor = job.monitor
        model = job.model.to(self.device)
        optimizer = self._optimizer(model)
        scheduler = self._scheduler(optimizer, monitor)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        if self.is_main:  # temp files of an atomic write that a kill cut short
            for folder in (self.run_dir, self.checkpoint_dir):
                for stale in folder.glob(".*.tmp"):
                    stale.unlink(missing_ok=True)
        ema = self._ema(model)
        train_loader = self.loader(job.train, train=True)
        if cfg.resume:
            self._resume(model, optimizer, scheduler, scaler, ema)
        engine = self._engine(model)
        scored = ema.module if ema is not None else model  # the weights evaluated and saved

        writer = None
        if self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(
                str(self.run_dir / "tensorboard"), purge_step=self.state.step or None
            )
        best_metrics: dict[str, Any] = {}
        try:
            while self.state.epoch < cfg.max_epochs:
                if cfg.patience and self.state.bad_epochs >= cfg.patience:
                    log.info(
                        "early stopping: no %s improvement in %d epochs", monitor.name, cfg.patience
                    )
                    break
                self.state.epoch += 1
                epoch = self.state.epoch
                train_loader.batch_sampler.set_epoch(epoch)
                train_loss, seconds, examples = self._train_epoch(
                    engine, train_loader, optimizer, scaler, writer, ema
                )
                metrics = self.evaluate(scored, job.dev, job.predict, job.score)
                if monitor.name not in metrics:
                    raise KeyError(f"score() returned no {monitor.name!r} metric")
                value = float(metrics[monitor.name])
                lr = optimizer.param_groups[0]["lr"]
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(value)
                elif scheduler is not None:
                    scheduler.step()
                improved = monitor.better(value, self.state.best)
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
                    "train_examples_per_s": examples / max(seconds, 1e-9),
                    "peak_rss_mib": peak_rss_mib(),
                    **{
                        f"dev_{k}": float(v)
                        for k, v in metrics.items()
                        if isinstance(v, (int, float))
                    },
                }
                self.state.history.append(row)
                log.info(
                    "epoch %d/%d  loss %.4f  dev %s %.4g  (best %.4g @%d)  lr %.3g  %.1fs  "
                    "%.0f ex/s  peak %d MiB (now %d)",
                    epoch,
                    cfg.max_epochs,
                    train_loss,
                    monitor.name,
                    value,
                    self.state.best if self.state.best is not None else float("nan"),
                    self.state.best_epoch,
                    lr,
                    seconds,
                    row["train_examples_per_s"],
                    row["peak_rss_mib"],
                    current_rss_mib(),
                )
                if writer is not None:
                    for key, val in row.items():
                        if key.startswith("dev_"):
                            writer.add_scalar(f"dev/{key[4:]}", val, epoch)
                    writer.add_scalar("train/epoch_loss", train_loss, epoch)
                    writer.add_scalar("train/lr", lr, epoch)
                    writer.flush()
                if improved:
                    self._save("best.pt", scored, job.bundle)
                rng = distributed.all_gather(self._rng_state())
                resume_state = {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict(),
                    "rng": rng,
                    "ema": ema.state_dict() if ema is not None else None,
                }
                self._save("last.pt", model, job.bundle, resume_state)
                if self.is_main:
                    self._write_logs()
                distributed.barrier()
        except KeyboardInterrupt:
            log.warning(
                "interrupted at epoch %d, step %d (the last checkpoint is from epoch %d)",
                self.state.epoch,
                self.state.step,
                max(self.state.epoch - 1, 0),
            )
            raise
        finally:
            if writer is not None:
                writer.close()

        best_path = self.checkpoint_dir / "best.pt"
        if best_path.is_file():
            model.load_state_dict(load_checkpoint(best_path).model)
        if not best_metrics:  # resumed after the best epoch, or nothing improved: re-evaluate
            best_metrics = self.evaluate(model, job.dev, job.predict, job.score)
        return best_metrics

    def _train_epoch(
        self, engine, loader, optimizer, scaler, writer, ema=None
    ) -> tuple[float, float, int]:
        """One pass over this rank's batches. Each optimizer step divides the summed
        gradients once, by the count of every unit that went into them (all accumulated
        micro-batches on all ranks); returns the count-weighted mean loss over all ranks,
        the seconds taken and the examples seen by all ranks."""
        cfg = self.config
        engine.train()
        total_batches = len(loader)
        if cfg.limit_train_batches is not None:
            total_batches = min(total_batches, cfg.limit_train_batches)
        accumulate = cfg.accumulate_grad_batches
        zero = torch.zeros((), device=self.device, dtype=torch.float64)
        epoch_sum, epoch_count = zero.clone(), zero.clone()
        window_sum, window_count, step_count = zero.clone(), zero.clone(), zero.clone()
        examples = 0
        params = [p for group in optimizer.param_groups for p in group["params"]]
        bar = Progress(total_batches, self.state.epoch, cfg.progress_bar, self.is_main)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        for index, batch in enumerate(self.batches(loader, total_batches)):
            steps_now = (index + 1) % accumulate == 0 or index + 1 == total_batches
            loss_sum, count = self._forward_backward(engine, batch, scaler, sync=steps_now)
            epoch_sum += loss_sum
            epoch_count += count
            window_sum += loss_sum
            window_count += count
            step_count += count
            examples += len(batch.indices)
            if steps_now:
                self._step(optimizer, scaler, params, step_count)
                if ema is not None:
                    ema.update_parameters(engine.module if self.world_size > 1 else engine)
                step_count.zero_()
                self.state.step += 1
                if self.state.step % cfg.log_every_n_steps == 0:
                    # the one host sync per log interval
                    mean = (window_sum / window_count.clamp_min(1)).item()
                    if writer is not None:
                        writer.add_scalar("train/loss", mean, self.state.step)
                    bar.note(mean, examples / (time.perf_counter() - start))
                    window_sum.zero_()
                    window_count.zero_()
            bar.update(1)
        bar.close()
        totals = distributed.all_reduce_sum(
            torch.stack(
                [
                    epoch_sum,
                    epoch_count,
                    torch.tensor(float(examples), device=self.device, dtype=torch.float64),
                ]
            )
        ).tolist()
        seconds = time.perf_counter() - start
        return totals[0] / max(totals[1], 1.0), seconds, int(totals[2])

    def _forward_backward(self, engine, batch, scaler, sync: bool = True):
        """Summed loss of one batch, backpropagated (gradients add up until :meth:`_step`);
        ``sync=False`` skips DDP's gradient all-reduce for a micro-batch that does not step.
        Returns the detached loss sum and count as float64 tensors on the device."""
        ddp_skip = self.world_size > 1 and not sync
        with engine.no_sync() if ddp_skip else nullcontext():
            with self.autocast():
                loss_sum, count = engine(batch)
            scaler.scale(loss_sum).backward()
        count = torch.as_tensor(count, device=self.device).to(torch.float64)
        return loss_sum.detach().to(torch.float64), count

    def _step(self, optimizer, scaler, params, count: torch.Tensor) -> None:
        """Scale the summed gradients to a mean over ``count`` units on all ranks (DDP
        already averaged them over ranks), clip, and step. ``count`` is summed over ranks
        in place (the caller zeroes it for the next step)."""
        total = distributed.all_reduce_sum(count)  # a no-op in one process
        scaler.unscale_(optimizer)
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            factor = (self.world_size / total.clamp_min(1)).to(torch.float32)
            torch._foreach_mul_(grads, factor)
        if self.config.gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(params, self.config.gradient_clip_val, foreach=True)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def _write_logs(self) -> None:
        history = self.state.history
        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]

        def write(handle) -> None:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)

        atomic_write(self.run_dir / "metrics.csv", write, binary=False)
        try:
            plot_curves(history, self.run_dir / "curves.png", self.monitor.name, self.monitor.mode)
        except Exception as err:  # a plot must never stop training
            log.warning("could not draw curves.png: %s", err)


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay of the ``updates``-th average (1-based; the first copies the weights):
    ``min(decay, (1 + n) / (10 + n))`` with ``n = updates - 1``, as TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)`` and timm's EMA warm up. A short run then
    averages over the steps it has, never mostly over its first weights."""
    n = updates - 1
    return min(decay, (1 + n) / (10 + n))


def ema_with_warmup(decay: float):
    """``AveragedModel``'s ``multi_avg_fn`` for an EMA with warm-up (:func:`ema_decay_at`).
    The decay is computed on the device from the model's own count of updates
    (``n_averaged``, restored on resume), so a step never waits for the device."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:
        if not averaged:
            return
        if not torch.is_floating_point(averaged[0]):  # integer and boolean buffers
            torch._foreach_copy_(averaged, current)  # (counters, masks) follow the model
            return
        n = n_averaged.to(averaged[0].dtype)  # the updates before this one, the first a copy
        weight = 1.0 - torch.clamp((1 + n) / (10 + n), max=decay)
        torch._foreach_lerp_(averaged, current, weight)

    return update


def current_rss_mib() -> int:
    """This process's resident memory now, in MiB (0 where /proc does not say)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20)


def peak_rss_mib() -> int:
    """This process's peak resident memory so far, in MiB (0 where the OS does not say)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024))


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


class Progress:
    """An epoch's progress. On a terminal (or with ``trainer.progress_bar=true``) a tqdm bar;
    where stderr is a file or a pipe (CI, nohup, a scheduler) a bar would write every
    refresh as carriage-return fragments, so there one log line marks each quarter of the
    epoch instead (none with ``progress_bar=false``). Main rank only."""

    def __init__(self, total: int, epoch: int, setting: bool | None, is_main: bool) -> None:
        from tqdm import tqdm

        on_terminal = sys.stderr.isatty()
        show_bar = is_main and (setting if setting is not None else on_terminal)
        self.lines = is_main and setting is None and not on_terminal
        self.bar = tqdm(total=total, desc=f"epoch {epoch}", file=sys.stderr, disable=not show_bar,
                        leave=False, dynamic_ncols=True, mininterval=0.5)  # fmt: skip
        self.total, self.epoch, self.done = total, epoch, 0
        self.marks = {total * quarter // 4 for quarter in (1, 2, 3)} - {0, total}
        self.last = ""

    def note(self, loss: float, examples_per_s: float) -> None:
        """The latest training loss and speed (shown on the bar and in the lines)."""
        self.bar.set_postfix(loss=f"{loss:.3f}", ex_s=f"{examples_per_s:.0f}")
        self.last = f"  loss {loss:.4f}  {examples_per_s:.0f} ex/s"

    def update(self, batches: int = 1) -> None:
        self.bar.update(batches)
        self.done += batches
        if self.lines and self.done in self.marks:
            log.info("epoch %d: %d%% (%d/%d batches)%s", self.epoch,
                     100 * self.done // self.total, self.done, self.total, self.last)  # fmt: skip

    def close(self) -> None:
        self.bar.close()
