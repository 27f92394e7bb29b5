"""Length-bucketed batches and padding helpers shared by the tasks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from nlp_lstm.data.vocab import Vocab
from nlp_lstm.errors import ConfigError

MAX_WORD_CHARS = 30  # longer words are cut for the char encoders


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length, so little compute goes to padding, sharded over ranks.

    Training order: shuffle, sort within pools of ``pool_batches`` batches by length, cut
    into batches, shuffle the batches. The order depends only on ``seed`` and the epoch
    (``set_epoch``), so a resumed run sees the same batches as an uninterrupted one, and
    every rank computes the same list. Evaluation order (``shuffle=False``): sorted by
    length, longest first.

    With ``world_size > 1`` rank ``r`` takes batches ``r, r + world_size, ...``. In
    training the batch list is first padded with batches from its start, so every rank
    steps the same number of times (DistributedSampler pads the same way); evaluation is
    not padded, so every example is scored exactly once.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 50,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool_batches = pool_batches
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        batches = (len(self.lengths) + self.batch_size - 1) // self.batch_size
        if self.shuffle:
            return (batches + self.world_size - 1) // self.world_size
        return len(range(self.rank, batches, self.world_size))

    def global_batches(self) -> list[list[int]]:
        """The batches of every rank, before sharding."""
        if not self.shuffle:
            order = sorted(range(len(self.lengths)), key=lambda i: -self.lengths[i])
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        generator = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        pool = self.batch_size * self.pool_batches
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool], key=lambda i: self.lengths[i])
            batches += [
                chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)
            ]
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        short = -len(batches) % self.world_size
        return batches + [batches[i % len(batches)] for i in range(short)] if batches else []

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.global_batches()[self.rank :: self.world_size]


class FixedBatchSampler(Sampler[list[int]]):
    """Batches given in advance, yielded in that order every epoch (for splits that fix
    their own batches; see :class:`nlp_lstm.contract.Split`)."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:  # the order never changes
        pass

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches


def bucketed_loader(
    collate,
    lengths: Sequence[int],
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader over positions ``0..len(lengths)-1`` in length buckets (this rank's
    share of them); ``collate`` turns a list of positions into a batch."""
    sampler = BucketBatchSampler(
        lengths, batch_size, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size
    )
    return DataLoader(range(len(lengths)), batch_sampler=sampler, collate_fn=collate)


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (itself when ``multiple`` is 1)."""
    return -(-n // multiple) * multiple


def check_pad_multiple(multiple: int) -> None:
    """``data.pad_multiple`` must be a positive integer (1: exact batch shapes)."""
    if multiple < 1:
        raise ConfigError(f"data.pad_multiple must be at least 1, not {multiple}")


def pad(rows: Sequence[Sequence[int]], value: int = 0, length: int | None = None) -> Tensor:
    """Right-pad integer rows into a LongTensor ``(len(rows), length or longest)``."""
    width = length if length is not None else max((len(r) for r in rows), default=0)
    if not rows or not width:
        return torch.full((len(rows), width), value, dtype=torch.long)
    padded = [[*row[:width], *[value] * (width - len(row))] for row in rows]
    return torch.tensor(padded, dtype=torch.long)


CHAR_CACHE_SIZE = 200_000  # words whose char ids a WordChars keeps


class WordChars:
    """The char-encoder input of a batch: the char ids of its unique words ``(U, L)`` (row 0
    is padding), their lengths ``(U,)`` and each token's row ``(B, width)``.

    With ``pad_multiple > 1`` the word length is padded up to a multiple of it and the row
    count to a multiple of 4x it, so that batch shapes recur (README: memory).
    """

    def __init__(self, chars: Vocab, pad_multiple: int = 1) -> None:
        check_pad_multiple(pad_multiple)
        self.chars = chars
        self.pad_multiple = pad_multiple
        self.row_multiple = 4 * pad_multiple if pad_multiple > 1 else 1
        self._cache: dict[str, list[int]] = {}

    def ids(self, token: str) -> list[int]:
        """Char ids of one token (its first ``MAX_WORD_CHARS`` characters)."""
        ids = self._cache.get(token)
        if ids is None:
            if len(self._cache) >= CHAR_CACHE_SIZE:  # a long-lived predictor meets new words
                self._cache.clear()
            ids = self._cache[token] = self.chars.encode(token[:MAX_WORD_CHARS])
        return ids

    def __call__(self, sentences: Sequence[Sequence[str]], width: int) -> tuple[Tensor, ...]:
        """``chars (U, L)``, ``char_lengths (U,)`` and ``char_index (B, width)``."""
        unique: dict[str, int] = {}
        rows: list[list[int]] = [[]]
        index_rows = []
        for sentence in sentences:
            row = []
            for token in sentence:
                slot = unique.get(token)
                if slot is None:
                    slot = unique[token] = len(rows)
                    rows.append(self.ids(token))
                row.append(slot)
            index_rows.append(row)
        rows += [[]] * (round_up(len(rows), self.row_multiple) - len(rows))
        char_width = round_up(max(1, max(len(r) for r in rows)), self.pad_multiple)
        return (
            pad(rows, length=char_width),
            torch.tensor([len(r) for r in rows]),
            pad(index_rows, length=width),
        )


def lengths_mask(lengths: Tensor, width: int) -> Tensor:
    """Boolean mask ``(B, width)``, true at the first ``lengths[b]`` positions."""
    return torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)


def move_batch(batch, device: torch.device, non_blocking: bool = True):
    """A copy of a batch dataclass with its tensors on ``device``. Fields named
    ``*lengths`` stay on the CPU (packing wants CPU lengths, and reading them from the
    device would be a host sync); non-tensors are kept as they are."""
    changes = {}
    for field in dataclasses.fields(batch):
        value = getattr(batch, field.name)
        if isinstance(value, Tensor) and not field.name.endswith("lengths"):
            changes[field.name] = value.to(device, non_blocking=non_blocking)
    return dataclasses.replace(batch, **changes)


def pin_batch(batch):
    """A copy of a batch dataclass with its tensors in pinned memory (for CUDA copies)."""
    changes = {
        f.name: getattr(batch, f.name).pin_memory()
        for f in dataclasses.fields(batch)
        if isinstance(getattr(batch, f.name), Tensor) and not f.name.endswith("lengths")
    }
    return dataclasses.replace(batch, **changes)
