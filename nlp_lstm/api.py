"""``nlp_lstm.load(path)``: the predictor of any checkpoint, its task read from the file.

::

    import nlp_lstm
    tagger = nlp_lstm.load("runs/ner/.../checkpoints/best.pt")
    tagger("Peter Blackburn visited Berlin.")
    # [Entity(text='Peter Blackburn', label='PER', start=0, end=15, score=0.99...),
    #  Entity(text='Berlin', label='LOC', start=24, end=30, score=0.99...)]
"""

from __future__ import annotations

from pathlib import Path

import torch

from nlp_lstm.checkpoint import load_checkpoint
from nlp_lstm.config import task_module
from nlp_lstm.contract import Predictor
from nlp_lstm.errors import UserError

PRECISIONS = ("32", "bf16", "fp16")


def load(
    path: str | Path,
    device: str | torch.device = "auto",
    *,
    task: str | None = None,
    batch_size: int | None = None,
    precision: str = "32",
) -> Predictor:
    """The predictor of the checkpoint at ``path`` (a ``checkpoints/best.pt``).

    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or a ``torch.device``;
    ``task``: the task the checkpoint must be of (an error otherwise); ``batch_size``:
    how many sentences (prompts, windows) run at once (default: the evaluation batch size
    the model was trained with); ``precision``: ``32``, ``bf16`` or ``fp16`` autocast.
    A file that is not a checkpoint of this package, or of another task than ``task``,
    raises :class:`nlp_lstm.errors.UserError` (a ``ValueError``) saying so.
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"load takes a checkpoint path, not {type(path).__name__}")
    if str(precision) not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    checkpoint = load_checkpoint(path, task)
    name = checkpoint.bundle.task
    try:
        module = task_module(name)
    except UserError:
        raise UserError(f"{path}: a checkpoint of an unknown task {name!r}") from None
    return module.load(checkpoint, device, batch_size, str(precision))
