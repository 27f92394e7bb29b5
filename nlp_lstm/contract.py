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

Using a trained model is the other half. A task's ``load(checkpoint, device) ->
Predictor`` rebuilds its model from a checkpoint's bundle alone (no training data); a
:class:`Predictor` takes a list of inputs (raw text, prompts, tables) and returns one
typed, frozen result per input, in input order, batching by length internally under
``torch.inference_mode``. ``nlp_lstm.load(path)`` picks the task from the checkpoint.
``mode=predict`` writes what the predictor returns, ``mode=export`` exports the
predictor's model, and ``mode=test`` scores the predictor's model on a labelled split
through ``Trainer.evaluate`` (sharded under torchrun). Which settings come from where is
one rule, :func:`nlp_lstm.tasks.common.run_settings`: the checkpoint decides the model and
how it reads its input; the command line decides which files to read and write and how to
run.

A batch is a dataclass with an ``indices`` field (LongTensor of the positions it holds).
The Trainer moves its tensors to the device, except fields whose names end in ``lengths``
(CPU lengths for packing).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from nlp_lstm.checkpoint import Bundle
from nlp_lstm.errors import ConfigError


@dataclass
class Split:
    """The examples of one split as the Trainer sees them.

    ``examples`` are whatever the task scores against (gold sentences, labels, texts),
    ``lengths`` their sizes for length bucketing, and ``collate(positions)`` turns a list
    of positions into a batch (``None`` for a split that is only scored).

    ``tokens`` (optional) is what a token budget (``trainer.batch_tokens``) counts of each
    example, if not its length (translate: the longer of source and target).

    A split whose batches must come in a fixed order (a stateful model that carries its
    state from one batch to the next, as truncated backpropagation through time does)
    sets ``batches(batch_size, rank, world_size, train) -> list of position lists``: this
    rank's batches, in order. The Trainer then neither buckets nor shuffles it.
    """

    examples: Sequence[Any]
    lengths: Sequence[int]
    collate: Callable[[list[int]], Any] | None = None
    batches: Callable[[int, int, int, bool], list[list[int]]] | None = None
    tokens: Sequence[int] | None = None

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


class Predictor:
    """A trained model ready to use: ``predict(inputs)`` returns one result per input, in
    input order; calling the predictor takes one input (one result) or a list (a list).

    It knows its ``task``, the ``config`` it was trained with and its vocabularies
    (``bundle``). Calls are serialised by a lock, so one predictor may be shared by
    several threads and gives what sequential calls give; torch's own threads
    (``torch.set_num_threads``) parallelise each call. Each task's subclass names its
    input and result types and adds its own methods (``translate``, ``generate``, ...).
    """

    task: ClassVar[str] = ""
    input_kind: ClassVar[str] = "a str"

    def __init__(
        self,
        model: nn.Module,
        bundle: Bundle,
        device: torch.device,
        batch_size: int = 64,
        precision: str = "32",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model.to(device).eval()
        self.bundle = bundle
        self.device = device
        self.batch_size = batch_size
        self.amp_dtype = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.lock = threading.RLock()

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config sections the model was trained with."""
        return self.bundle.config

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        return f"{type(self).__name__}(task={self.task!r}, parameters={params:,}, device={self.device})"

    def __call__(self, inputs: Any, **options: Any) -> Any:
        """One input -> its result; a list (or tuple) of inputs -> a list of results."""
        if self.is_single(inputs):
            return self.predict([inputs], **options)[0]
        return self.predict(inputs, **options)

    def is_single(self, inputs: Any) -> bool:
        """Whether ``inputs`` is one input rather than a list of them."""
        return isinstance(inputs, str)

    def predict(self, inputs: Sequence[Any], **options: Any) -> list[Any]:
        """One result per input, in order (an empty list gives an empty list)."""
        if inputs is None or isinstance(inputs, (str, bytes)) or not hasattr(inputs, "__len__"):
            raise TypeError(
                f"{type(self).__name__}.predict takes a list of inputs ({self.input_kind} "
                f"each), not {type(inputs).__name__}"
            )
        inputs = list(inputs)
        for position, item in enumerate(inputs):
            self.check_input(item, position)
        if not inputs:
            return []
        with self.lock, collector_paused():
            return self.run(inputs, **options)

    def check_input(self, item: Any, position: int) -> None:
        """Raise a TypeError/ValueError naming the input at ``position`` if it is unusable."""
        if not isinstance(item, str):
            raise TypeError(
                f"input {position}: expected {self.input_kind}, got {type(item).__name__}"
            )

    def run(self, inputs: list[Any], **options: Any) -> list[Any]:
        """The task's work on checked inputs, under the lock."""
        raise NotImplementedError

    @contextmanager
    def inference(self) -> Iterator[None]:
        """``torch.inference_mode`` and autocast at the predictor's precision."""
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else nullcontext()
        )
        with torch.inference_mode(), autocast:
            yield


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused for the duration of a call. A call over many
    inputs makes hundreds of thousands of short-lived objects (tokens, ids, results) and
    no cycles: reference counting frees them, and the collector's passes over the whole
    heap cost ~10% of a call (measured on CoNLL dev text). It runs again afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Positions ``0..len(lengths)-1`` in batches of at most ``batch_size``, longest first,
    so that each batch pads little."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
