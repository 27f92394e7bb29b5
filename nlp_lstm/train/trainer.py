"""The one training loop, shared by every task.

A task hands the Trainer a :class:`nlp_lstm.contract.Job` (read that module first): a model
whose ``forward(batch)`` returns ``(loss_sum, count)``, train/dev splits, ``predict`` and
``score`` functions, the monitored metric and the checkpoint bundle. The Trainer does the
rest: loaders (length-bucketed, sharded per rank), device placement, DistributedDataParallel
under torchrun, autocast (bf16/fp16), gradient accumulation and clipping, evaluation with
outputs gathered from every rank, and early stopping. Beside it: ``settings`` (the config),
``optim`` (optimizer, LR schedule, EMA), ``checkpointing`` (checkpoints, exact resume),
``runlog`` (log lines, progress, metrics.csv, TensorBoard, plots) and ``process`` (threads,
kernel cache, seeds: set once where the process starts, never by the Trainer). Only the
main rank writes files; every rank takes the same decisions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from nlp_lstm.contract import Job, Predict, Score, Split
from nlp_lstm.data.batching import FixedBatchSampler, bucketed_loader, move_batch, pin_batch
from nlp_lstm.errors import ConfigError
from nlp_lstm.train import checkpointing, distributed
from nlp_lstm.train.checkpointing import TrainState
from nlp_lstm.train.optim import (
    build_ema,
    build_optimizer,
    build_scheduler,
    parameter_groups,
    step_scheduler,
)
from nlp_lstm.train.process import resolve_device, seed_everything
from nlp_lstm.train.runlog import Progress, RunLog, epoch_row, peak_rss_mib
from nlp_lstm.train.settings import TrainerConfig

# what other modules import from here
__all__ = ["Trainer", "TrainerConfig", "TrainState", "parameter_groups", "peak_rss_mib",
           "resolve_device", "seed_everything"]  # fmt: skip

log = logging.getLogger(__name__)

AMP_DTYPES = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Trainer:
    """Fits a :class:`~nlp_lstm.contract.Job`, and evaluates or predicts with a model.

    Args:
        config: trainer settings.
        run_dir: the run folder (checkpoints, metrics.csv, TensorBoard events, curves.png);
            ``None`` for a trainer used only to evaluate or predict.
    """

    def __init__(self, config: TrainerConfig, run_dir: str | Path | None = None) -> None:
        if config.strategy == "ddp" and not distributed.launched_by_torchrun():
            raise ConfigError(
                "trainer.strategy=ddp needs several processes: launch with "
                "torchrun --nproc_per_node=N -m nlp_lstm ..."
            )
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.device = resolve_device(config.device)
        self.amp_dtype = AMP_DTYPES[config.precision]
        self.rank = distributed.rank()
        self.world_size = distributed.world_size()
        self.is_main = self.rank == 0
        self.state = TrainState()
        self.deadline: float | None = None  # trainer.max_minutes, from the start of fit

    @property
    def checkpoint_dir(self) -> Path:
        if self.run_dir is None:
            raise ValueError("this Trainer has no run folder")
        return self.run_dir / "checkpoints"

    # ------------------------------------------------------------------ the loop

    def fit(self, job: Job) -> dict[str, Any]:
        """Train until ``max_epochs`` or early stopping; returns the best dev metrics and
        leaves the best weights in ``job.model`` (on every rank)."""
        cfg, state, monitor = self.config, self.state, job.monitor
        if self.run_dir is None:
            raise ValueError("fit needs a run folder")
        model = job.model.to(self.device)
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, monitor)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        if self.is_main:
            checkpointing.remove_torn_writes(self.run_dir)
        ema = build_ema(model, cfg.ema_decay)
        train_loader = self.loader(job.train, train=True)
        if cfg.resume:
            resumed = checkpointing.resume(cfg.resume, self.checkpoint_dir, model, optimizer,
                                           scheduler, scaler, ema, cfg.seed)  # fmt: skip
            self.state = state = resumed or state
        engine = distributed.wrap(model, self.device)
        scored = ema.module if ema is not None else model  # the weights evaluated and saved
        runlog = RunLog(self.run_dir, monitor, cfg.max_epochs, self.is_main, state.step)
        best_metrics: dict[str, Any] = {}
        if cfg.max_minutes is not None:
            self.deadline = time.perf_counter() + 60 * cfg.max_minutes
        try:
            while state.epoch < cfg.max_epochs:
                if cfg.patience and state.bad_epochs >= cfg.patience:
                    log.info(
                        "early stopping: no %s improvement in %d epochs", monitor.name, cfg.patience
                    )
                    break
                if self.out_of_time():
                    log.info("trainer.max_minutes=%g reached: training stops", cfg.max_minutes)
                    break
                state.epoch += 1
                train_loader.batch_sampler.set_epoch(state.epoch)
                loss, seconds, examples, units = self.train_epoch(
                    engine, train_loader, optimizer, scaler, runlog, ema
                )
                metrics = self.evaluate(scored, job.dev, job.predict, job.score)
                if monitor.name not in metrics:
                    raise KeyError(f"score() returned no {monitor.name!r} metric")
                value = float(metrics[monitor.name])
                lr = optimizer.param_groups[0]["lr"]
                step_scheduler(scheduler, value)
                improved = monitor.better(value, state.best)
                if improved:
                    state.best, state.best_epoch, state.bad_epochs = value, state.epoch, 0
                    best_metrics = metrics
                else:
                    state.bad_epochs += 1
                row = epoch_row(
                    state.epoch, state.step, loss, lr, seconds, examples, metrics, units
                )
                state.history.append(row)
                runlog.epoch(row, value, state.best, state.best_epoch)
                if improved and self.is_main:
                    checkpointing.save(self.checkpoint_dir / "best.pt", scored, job.bundle, state)
                training = checkpointing.training_state(optimizer, scheduler, scaler, ema)
                if self.is_main:
                    checkpointing.save(
                        self.checkpoint_dir / "last.pt", model, job.bundle, state, training
                    )
                runlog.write(state.history)
                distributed.barrier()
        except KeyboardInterrupt:
            log.warning(
                "interrupted at epoch %d, step %d (the last checkpoint is from epoch %d)",
                state.epoch,
                state.step,
                max(state.epoch - 1, 0),
            )
            raise
        finally:
            runlog.close()

        checkpointing.load_best(model, self.checkpoint_dir)
        if not best_metrics:  # resumed after the best epoch, or nothing improved: re-evaluate
            best_metrics = self.evaluate(model, job.dev, job.predict, job.score)
        return best_metrics

    def train_epoch(
        self, engine: nn.Module, loader: DataLoader, optimizer, scaler, runlog: RunLog, ema=None
    ) -> tuple[float, float, int, float]:
        """One pass over this rank's batches, stepping every ``accumulate_grad_batches``
        (cut short at ``trainer.max_minutes``). Returns the count-weighted mean loss over
        all ranks, the seconds taken, the examples seen by all ranks and the units the loss
        counts (tokens, characters, values)."""
        cfg = self.config
        engine.train()
        total_batches = len(loader)
        if cfg.limit_train_batches is not None:
            total_batches = min(total_batches, cfg.limit_train_batches)
        zero = torch.zeros((), device=self.device, dtype=torch.float64)
        epoch_sum, epoch_count = zero.clone(), zero.clone()
        window_sum, window_count, step_count = zero.clone(), zero.clone(), zero.clone()
        examples = 0
        bar = Progress(total_batches, self.state.epoch, cfg.progress_bar, self.is_main)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        for index, batch in enumerate(self.batches(loader, total_batches)):
            steps_now = (index + 1) % cfg.accumulate_grad_batches == 0 or index + 1 == total_batches
            loss_sum, count = self.forward_backward(engine, batch, scaler, sync=steps_now)
            epoch_sum += loss_sum
            epoch_count += count
            window_sum += loss_sum
            window_count += count
            step_count += count
            examples += len(batch.indices)
            if steps_now:
                self.optimizer_step(optimizer, scaler, step_count)
                if ema is not None:
                    ema.update_parameters(engine.module if self.world_size > 1 else engine)
                step_count.zero_()
                self.state.step += 1
                if self.state.step % cfg.log_every_n_steps == 0:
                    # the one host sync per log interval
                    mean = (window_sum / window_count.clamp_min(1)).item()
                    runlog.train_loss(self.state.step, mean)
                    bar.note(mean, examples / (time.perf_counter() - start))
                    window_sum.zero_()
                    window_count.zero_()
            bar.update(1)
            if steps_now and self.out_of_time():
                break
        bar.close()
        seen = torch.tensor(float(examples), device=self.device, dtype=torch.float64)
        totals = distributed.all_reduce_sum(torch.stack([epoch_sum, epoch_count, seen])).tolist()
        seconds = time.perf_counter() - start
        return totals[0] / max(totals[1], 1.0), seconds, int(totals[2]), totals[1]

    def out_of_time(self) -> bool:
        """Whether ``trainer.max_minutes`` has run out (every rank agrees: rank 0's clock)."""
        if self.deadline is None:
            return False
        return bool(distributed.broadcast_from_main(time.perf_counter() > self.deadline))

    # ------------------------------------------------------------------ one step

    def train_step(self, engine: nn.Module, batch: Any, optimizer, scaler):
        """One batch, one optimizer step (no accumulation): :meth:`forward_backward` then
        :meth:`optimizer_step`. Returns the batch's loss sum and count."""
        loss_sum, count = self.forward_backward(engine, batch, scaler)
        self.optimizer_step(optimizer, scaler, count.clone())
        return loss_sum, count

    def forward_backward(self, engine: nn.Module, batch: Any, scaler, sync: bool = True):
        """Summed loss of one batch, backpropagated (gradients add up until
        :meth:`optimizer_step`); ``sync=False`` skips DDP's gradient all-reduce for a
        micro-batch that does not step. Returns the detached loss sum and count as float64
        tensors on the device."""
        ddp_skip = self.world_size > 1 and not sync
        with engine.no_sync() if ddp_skip else nullcontext():
            with self.autocast():
                loss_sum, count = engine(batch)
            scaler.scale(loss_sum).backward()
        count = torch.as_tensor(count, device=self.device).to(torch.float64)
        return loss_sum.detach().to(torch.float64), count

    def optimizer_step(self, optimizer, scaler, count: torch.Tensor) -> None:
        """Scale the summed gradients to a mean over ``count`` units on all ranks (DDP
        already averaged them over ranks), clip, step and zero them. ``count`` is summed
        over ranks in place."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
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

    # ------------------------------------------------------------------ inference

    def evaluate(self, model: nn.Module, split: Split, predict: Predict, score: Score) -> dict:
        """Metrics of ``model`` on ``split``: predicted on every rank, scored once on the
        main rank, the same dict returned on every rank."""
        scored, outputs = self.predict(model, split, predict)
        metrics = score(outputs, scored) if self.is_main else None
        return distributed.broadcast_from_main(metrics)

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

    # ------------------------------------------------------------------ data

    def loader(self, split: Split, train: bool) -> DataLoader:
        """This rank's length-bucketed batches of ``split``: shuffled per epoch (seeded)
        for training, longest first for evaluation; or, for a split that fixes its own
        batches (``split.batches``), those, in their order."""
        if split.collate is None:
            raise ValueError("this split has no collate function")
        batch_size = self.config.batch_size if train else self.config.eval_batch_size
        max_tokens = self.config.batch_tokens if train else None
        if split.batches is not None:
            if max_tokens is not None:
                raise ConfigError("trainer.batch_tokens does not apply to a split that fixes "
                                  "its own batches (charlm's streams): use trainer.batch_size")  # fmt: skip
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
            max_tokens=max_tokens,
            tokens=split.tokens,
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
