"""The record of a training run: each epoch's row (history, its log line), TensorBoard
events, metrics.csv and curves.png in the run folder, the progress of an epoch, and the
process's memory for the row. Only the main rank writes files."""

from __future__ import annotations

import csv
import logging
import os
import sys
from pathlib import Path
from typing import Any

from nlp_lstm.contract import Monitor
from nlp_lstm.files import atomic_write
from nlp_lstm.train.plots import plot_curves

log = logging.getLogger("nlp_lstm.train.trainer")  # the run's lines, as the Trainer's


def epoch_row(
    epoch: int,
    step: int,
    train_loss: float,
    lr: float,
    seconds: float,
    examples: int,
    metrics: dict[str, Any],
    units: float = 0.0,
) -> dict[str, float]:
    """One epoch's row of the history (and of metrics.csv): counters, training loss and
    speed (examples, and the units the loss counts: tokens, characters, values), peak
    memory, and the numeric dev metrics as ``dev_<name>``."""
    return {
        "epoch": epoch,
        "step": step,
        "train_loss": train_loss,
        "lr": lr,
        "epoch_seconds": seconds,
        "train_examples_per_s": examples / max(seconds, 1e-9),
        "train_units_per_s": units / max(seconds, 1e-9),
        "peak_rss_mib": peak_rss_mib(),
        **{f"dev_{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
    }


class RunLog:
    """Where a run's numbers go: log lines on every rank; TensorBoard events
    (``tensorboard/``, continued from ``step`` on resume), metrics.csv and curves.png from
    the main rank."""

    def __init__(
        self, run_dir: Path, monitor: Monitor, max_epochs: int, is_main: bool, step: int = 0
    ) -> None:
        self.run_dir, self.monitor, self.max_epochs, self.is_main = (
            run_dir, monitor, max_epochs, is_main,
        )  # fmt: skip
        self.writer = None
        if is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step or None)

    def train_loss(self, step: int, loss: float) -> None:
        """The mean training loss of the last ``log_every_n_steps`` steps."""
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)

    def epoch(self, row: dict[str, float], value: float, best: float | None, best_epoch: int):
        """An epoch's log line and TensorBoard scalars; ``value`` is its monitored metric."""
        log.info(
            "epoch %d/%d  loss %.4f  dev %s %.4g  (best %.4g @%d)  lr %.3g  %.1fs  "
            "%.0f ex/s  peak %d MiB (now %d)",
            row["epoch"],
            self.max_epochs,
            row["train_loss"],
            self.monitor.name,
            value,
            best if best is not None else float("nan"),
            best_epoch,
            row["lr"],
            row["epoch_seconds"],
            row["train_examples_per_s"],
            row["peak_rss_mib"],
            current_rss_mib(),
        )
        if self.writer is not None:
            epoch = row["epoch"]
            for key, val in row.items():
                if key.startswith("dev_"):
                    self.writer.add_scalar(f"dev/{key[4:]}", val, epoch)
            self.writer.add_scalar("train/epoch_loss", row["train_loss"], epoch)
            self.writer.add_scalar("train/lr", row["lr"], epoch)
            self.writer.flush()

    def write(self, history: list[dict[str, float]]) -> None:
        """metrics.csv (every key any row has, in order of appearance) and curves.png."""
        if not self.is_main:
            return
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

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


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
