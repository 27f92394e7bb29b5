"""Plain text for character language models: split, encoded and cut into windows."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nlp_lstm.data.batching import pad

IGNORE = -100  # target id that the loss skips (padding)


@dataclass
class CharBatch:
    """Windows of characters and, at each position, the character that follows."""

    inputs: Tensor  # (B, T) char ids, 0 at padding
    targets: Tensor  # (B, T) next-char ids, IGNORE at padding
    lengths: Tensor  # (B,) real positions per row, on the CPU
    indices: Tensor  # (B,) window positions


def split_text(text: str, dev_fraction: float) -> tuple[str, str]:
    """The first ``1 - dev_fraction`` of the characters and the rest (the standard
    tiny-shakespeare split is 0.9 / 0.1)."""
    if not 0.0 < dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be between 0 and 1, got {dev_fraction}")
    cut = int(len(text) * (1.0 - dev_fraction))
    return text[:cut], text[cut:]


class CharWindows:
    """Cuts a sequence of char ids into consecutive windows of ``seq_len`` predictions
    (window ``i`` reads ``ids[i*L : i*L+L]`` and predicts ``ids[i*L+1 : i*L+L+1]``), so
    every character after the first is predicted exactly once; the last window may be
    shorter. Called with window positions, it returns a :class:`CharBatch`."""

    def __init__(self, ids: list[int], seq_len: int) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be at least 1, got {seq_len}")
        self.ids = torch.tensor(ids, dtype=torch.long)
        predictions = max(len(ids) - 1, 0)
        self.starts = list(range(0, predictions, seq_len))
        self.lengths = [min(seq_len, predictions - start) for start in self.starts]

    def __len__(self) -> int:
        return len(self.starts)

    def __call__(self, indices: list[int]) -> CharBatch:
        indices = sorted(indices, key=lambda i: -self.lengths[i])
        rows = [(self.starts[i], self.lengths[i]) for i in indices]
        inputs = pad([self.ids[s : s + n].tolist() for s, n in rows])
        targets = pad([self.ids[s + 1 : s + n + 1].tolist() for s, n in rows], value=IGNORE)
        return CharBatch(inputs, targets, torch.tensor([n for _, n in rows]), torch.tensor(indices))
