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
    reset: bool | None = None  # streams: True at a stream's first window (None: stateless)


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


class CharStreams:
    """The text laid out as ``streams`` parallel streams for truncated backpropagation
    through time (char-rnn, pytorch/examples' word_language_model).

    The ``len(ids) - 1`` predictions are cut into ``streams`` consecutive spans, one per
    stream, and each span into windows of ``seq_len`` predictions: window ``k`` of stream
    ``s`` is position ``s * windows + k``. A batch holds window ``k`` of several streams, the
    next batch window ``k + 1`` of the same streams, so a model can carry its state across
    batches; every char after the first is predicted exactly once, with all of its stream
    before it. Short or empty windows at a span's end are padded (targets IGNORE).
    """

    def __init__(self, ids: list[int], seq_len: int, streams: int) -> None:
        if seq_len < 1 or streams < 1:
            raise ValueError("seq_len and streams must be at least 1")
        self.ids = torch.tensor(ids, dtype=torch.long)
        self.seq_len = seq_len
        self.streams = streams
        predictions = max(len(ids) - 1, 0)
        self.span = -(-predictions // streams)  # ceil
        self.windows = max(-(-self.span // seq_len), 1)
        self.spans = [
            (min(s * self.span, predictions), min((s + 1) * self.span, predictions))
            for s in range(streams)
        ]
        self.lengths = [
            max(0, min(seq_len, end - (start + k * seq_len)))
            for start, end in self.spans
            for k in range(self.windows)
        ]

    def __len__(self) -> int:
        return len(self.lengths)

    def window(self, position: int) -> tuple[int, int, int]:
        """``(stream, window index, first prediction)`` of a position."""
        stream, k = divmod(position, self.windows)
        return stream, k, self.spans[stream][0] + k * self.seq_len

    def batches(self, batch_size: int, rank: int, world_size: int, train: bool) -> list[list[int]]:
        """This rank's batches in order. Training: every rank runs ``batch_size`` streams
        (the layout must have ``batch_size * world_size``) through all their windows.
        Evaluation: groups of ``batch_size`` streams, one after the other (groups dealt out
        to the ranks), so the result does not depend on the batch size."""
        streams = list(range(self.streams))
        if train:
            if self.streams != batch_size * world_size:
                raise ValueError(
                    f"a training layout of {self.streams} streams for batch {batch_size} x "
                    f"{world_size} processes"
                )
            groups = [streams[rank * batch_size : (rank + 1) * batch_size]]
        else:
            groups = [streams[i : i + batch_size] for i in range(0, self.streams, batch_size)]
            groups = groups[rank::world_size]
        return [
            [s * self.windows + k for s in group] for group in groups for k in range(self.windows)
        ]

    def __call__(self, positions: list[int]) -> CharBatch:
        places = [self.window(p) for p in positions]
        index = {k for _, k, _ in places}
        if len(index) != 1:
            raise ValueError("a stream batch holds one window index of several streams")
        rows = [
            (first, self.lengths[p]) for p, (_, _, first) in zip(positions, places, strict=True)
        ]
        width = max(1, max(n for _, n in rows))
        inputs = pad([self.ids[f : f + n].tolist() for f, n in rows], length=width)
        targets = pad([self.ids[f + 1 : f + n + 1].tolist() for f, n in rows], IGNORE, width)
        return CharBatch(
            inputs,
            targets,
            torch.tensor([n for _, n in rows]),
            torch.tensor(positions),
            reset=index.pop() == 0,
        )
