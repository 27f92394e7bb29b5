"""The task contract: what a task hands the Trainer. Read this first when writing a task.

A task is a module ``nlp_lstm/tasks/<name>.py`` with a config ``conf/task/<name>.yaml`` (that
folder is the list of tasks). Its ``MODES`` dict maps the modes it offers (``train``,
``test``, ``predict``) to functions ``(cfg, run_dir) -> None``; its ``SCHEMAS`` dict names
the dataclasses of its config sections, whose defaults are the only copy (conf/ holds what
differs). For training it builds a :class:`Job`:

- ``model``: an ``nn.Module`` whose ``forward(batch)`` returns ``(loss_sum, count)``: the loss
  summed over the units it is defined on (sentences, tokens, characters) and how many units
  there were. The Trainer calls ``model(batch)`` (so DistributedDataParallel syncs gradients),
  divides once, by the count of everything that goes into one optimizer step (accumulated
  micro-batches on every rank), and reports epoch losses weighted by counts.
- ``train`` and ``dev``: :class:`Split` s. The Trainer builds every loader from them
  (length-bucketed, sharded per rank under torchrun).
- ``predict(model, batch) -> list``: one output per example of the batch, in the order of
  ``batch.indices``. The Trainer runs it in eval mode under ``no_grad`` and autocast, puts
  the outputs in example order and gathers them from every rank.
- ``score(outputs, split) -> dict``: metrics of outputs for every example of ``split``
  (the Trainer passes the examples actually predicted when ``limit_eval_batches`` cuts
  evaluation short). Called once, on the main rank; every rank gets the result.
- ``monitor``: the metric to select checkpoints and stop early on, and its direction.
- ``bundle``: what the checkpoint carries to rebuild the model without the training data
  (:class:`nlp_lstm.checkpoint.Bundle`: configs and any number of vocabularies).

``mode=test`` and ``mode=predict`` reuse the same pieces: the task rebuilds its model from a
checkpoint's bundle, makes a :class:`Split` of the new data, and calls
``Trainer.evaluate`` (test) or ``Trainer.predict`` (predict).

A batch is a dataclass with an ``indices`` field (LongTensor of the positions it holds).
The Trainer moves its tensors to the device, except fields whose names end in ``lengths``
(CPU lengths for packing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from nlp_lstm.checkpoint import Bundle
from nlp_lstm.errors import ConfigError


@dataclass
class Split:
    """The examples of one split as the Trainer sees them.

    ``examples`` are whatever the task scores against (gold sentences, labels, texts),
    ``lengths`` their sizes for length bucketing, and ``collate(positions)`` turns a list
    of positions into a batch (``None`` for a split that is only scored).

    A split whose batches must come in a fixed order (a stateful model that carries its
    state from one batch to the next, as truncated backpropagation through time does)
    sets ``batches(batch_size, rank, world_size, train) -> list of position lists``: this
    rank's batches, in order. The Trainer then neither buckets nor shuffles it.
    """

    examples: Sequence[Any]
    lengths: Sequence[int]
    collate: Callable[[list[int]], Any] | None = None
    batches: Callable[[int, int, int, bool], list[list[int]]] | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def subset(self, positions: Sequence[int]) -> Split:
        """The examples at ``positions``, in that order (for scoring a cut evaluation)."""
        return Split(
            [self.examples[i] for i in positions], [self.lengths[i] for i in positions], None
        )


@dataclass(frozen=True)
class Monitor:
    """The metric that picks the best checkpoint and stops training early."""

    name: str
    mode: Literal["max", "min"] = "max"

    def better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` improves on ``best`` (None: nothing yet; NaN never improves)."""
        if value != value:  # NaN
            return False
        if best is None:
            return True
        return value > best if self.mode == "max" else value < best


Predict = Callable[[nn.Module, Any], list[Any]]
Score = Callable[[list[Any], Split], dict[str, Any]]


@dataclass
class Job:
    """Everything the Trainer needs from a task to train it (see the module docstring)."""

    model: nn.Module
    train: Split
    dev: Split
    predict: Predict
    score: Score
    monitor: Monitor
    bundle: Bundle


def choose_monitor(name: str, metrics: dict[str, Literal["max", "min"]], task: str) -> Monitor:
    """``task.monitor`` checked against the metrics a task reports (name -> direction)."""
    if name not in metrics:
        raise ConfigError(
            f"task.monitor={name!r} is not a metric of task {task} (choose from {', '.join(metrics)})"
        )
    return Monitor(name, metrics[name])
