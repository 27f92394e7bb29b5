"""The checkpoint bundle: weights, what rebuilds the model, and (for last.pt) training state.

One file per checkpoint, written atomically and read with ``torch.load(weights_only=True)``:
everything in it is tensors or plain lists/dicts, so loading runs no pickled code::

    {"format": "nlp_lstm", "version": 2,
     "bundle": {"task", "config", "vocabs", "extras"},   # rebuilds the model (Bundle)
     "model": state_dict, "trainer": counters and history,
     # last.pt only, for exact resume:
     "optimizer", "scheduler", "scaler", "rng": [one state per rank]}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nlp_lstm.errors import UserError
from nlp_lstm.files import atomic_save

VERSION = 2
VOCAB_KEYS_V1 = ("words", "chars", "tags", "labels")


@dataclass
class Bundle:
    """What a task needs, besides the weights, to rebuild its model without training data.

    ``config``: the resolved config sections (task, data, model, embeddings, trainer...);
    ``vocabs``: any number of named token lists (word and char vocabularies, tag and label
    sets, a source and a target vocabulary); ``extras``: other small plain values.
    """

    task: str
    config: dict[str, Any]
    vocabs: dict[str, list[str]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """A loaded checkpoint: its bundle, model weights and the rest of its payload."""

    path: Path
    bundle: Bundle
    model: dict[str, Any]
    payload: dict[str, Any]

    @property
    def resumable(self) -> bool:
        return "optimizer" in self.payload


def save_checkpoint(path: str | Path, bundle: Bundle, model: dict[str, Any], **rest: Any) -> None:
    """Write a checkpoint atomically; ``rest`` holds the trainer and resume state."""
    payload = {
        "format": "nlp_lstm",
        "version": VERSION,
        "bundle": asdict(bundle),
        "model": model,
        **rest,
    }
    atomic_save(payload, path)


_kept: tuple[tuple, dict] | None = None  # (file identity, payload) kept for the next load


def load_checkpoint(path: str | Path, task: str | None = None, keep: bool = False) -> Checkpoint:
    """Load a checkpoint onto the CPU (``weights_only=True``: no pickled code runs); with
    ``task``, check it was trained for that task. Problems are one-line UserErrors.

    ``keep=True`` holds the payload for the next load of the same unchanged file (same
    path, size and modification time), which takes it instead of reading the file again."""
    global _kept
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    stat = path.stat()
    identity = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    payload = _kept[1] if _kept is not None and _kept[0] == identity else _read_payload(path)
    _kept = (identity, payload) if keep else None
    return _checkpoint_from(path, payload, task)


def _read_payload(path: Path) -> dict:
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a foreign or torn file
        raise UserError(
            f"{path}: not a readable nlp_lstm checkpoint ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise UserError(f"{path}: not an nlp_lstm checkpoint (no model weights)")
    return payload


def _checkpoint_from(path: Path, payload: dict, task: str | None) -> Checkpoint:
    if "bundle" in payload:
        bundle = Bundle(**payload["bundle"])
    elif "meta" in payload:  # version 1: vocabularies beside the config in "meta"
        meta = payload["meta"]
        bundle = Bundle(
            task=meta.get("task", "?"),
            config=meta.get("config", {}),
            vocabs={k: meta[k] for k in VOCAB_KEYS_V1 if k in meta},
            extras={k: v for k, v in meta.items() if k not in (*VOCAB_KEYS_V1, "task", "config")},
        )
    else:
        raise UserError(f"{path}: not an nlp_lstm checkpoint (no bundle)")
    if task is not None and bundle.task != task:
        raise UserError(f"{path}: a checkpoint of task {bundle.task!r}, not {task!r}")
    return Checkpoint(path, bundle, payload["model"], payload)
