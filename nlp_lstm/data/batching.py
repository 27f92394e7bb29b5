"""Length-bucketed batches and padding helpers shared by the tasks."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from nlp_lstm.data.vocab import Vocab
from nlp_lstm.errors import ConfigError

log = logging.getLogger(__name__)

MAX_WORD_CHARS = 30  # longer words are cut for the char encoders


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length, so little compute goes to padding, sharded over ranks.

    Training order: shuffle, sort within pools of ``pool_batches`` batches by length, cut
    into batches, shuffle the batches. The order depends only on ``seed`` and the epoch
    (``set_epoch``), so a resumed run sees the same batches as an uninterrupted one, and
    every rank computes the same list. Evaluation order (``shuffle=False``): sorted by
    length, longest first.

    Batches hold ``batch_size`` examples, or with ``max_tokens`` as many as fit in that
    many tokens counted as the batch's padded size (examples x the largest of their
    ``tokens``, by default their lengths), as fairseq's ``max_tokens`` and OpenNMT's
    ``batch_type: tokens`` count them, the pools then sorted by ``tokens``; an example
    larger than the budget is a batch of its own (and logged once).

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
        max_tokens: int | None = None,
        tokens: Sequence[int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.lengths = list(lengths)
        self.tokens = list(tokens) if tokens is not None else self.lengths
        if len(self.tokens) != len(self.lengths):
            raise ValueError(f"{len(self.tokens)} token counts for {len(self.lengths)} examples")
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.pool_batches = pool_batches
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._cached: tuple[int, list[list[int]]] | None = None
        if max_tokens is not None:
            over = sum(t > max_tokens for t in self.tokens)
            if over:
                log.warning("%d examples hold more than max_tokens=%d tokens: each is a batch "
                            "of its own", over, max_tokens)  # fmt: skip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.global_batches()[self.rank :: self.world_size])

    def cut(self, order: list[int]) -> list[list[int]]:
        """Consecutive batches of ``order``: ``batch_size`` examples each, or as many as fit
        in ``max_tokens``."""
        if self.max_tokens is None:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        batches: list[list[int]] = []
        batch: list[int] = []
        largest = 0
        for i in order:
            size = max(largest, self.tokens[i])
            if batch and (len(batch) + 1) * size > self.max_tokens:
                batches.append(batch)
                batch, size = [], self.tokens[i]
            batch.append(i)
            largest = size
        return batches + [batch] if batch else batches

    def global_batches(self) -> list[list[int]]:
        """The batches of every rank, before sharding."""
        if self._cached is not None and self._cached[0] == self.epoch:
            return self._cached[1]
        if not self.shuffle:
            batches = self.cut(sorted(range(len(self.lengths)), key=lambda i: -self.lengths[i]))
            self._cached = (self.epoch, batches)
            return batches
        generator = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        pool = self.pool_examples()
        # token batches sort by what the budget counts: by the source length alone, pairs
        # with long targets would pad every batch they join (a quarter more batches)
        size = self.lengths if self.max_tokens is None else self.tokens
        batches = []
        for start in range(0, len(order), pool):
            batches += self.cut(sorted(order[start : start + pool], key=lambda i: size[i]))
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        short = -len(batches) % self.world_size
        batches = batches + [batches[i % len(batches)] for i in range(short)] if batches else []
        self._cached = (self.epoch, batches)
        return batches

    def pool_examples(self) -> int:
        """Examples sorted together: ``pool_batches`` batches' worth."""
        if self.max_tokens is None:
            return self.batch_size * self.pool_batches
        typical = sorted(self.tokens)[len(self.tokens) // 2] if self.tokens else 1
        return max(1, self.max_tokens // max(typical, 1)) * self.pool_batches

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
    max_tokens: int | None = None,
    tokens: Sequence[int] | None = None,
) -> DataLoader:
    """A DataLoader over positions ``0..len(lengths)-1`` in length buckets (this rank's
    share of them; see :class:`BucketBatchSampler`); ``collate`` turns a list of positions
    into a batch."""
    sampler = BucketBatchSampler(lengths, batch_size, shuffle=shuffle, seed=seed, rank=rank,
                                 world_size=world_size, max_tokens=max_tokens, tokens=tokens)  # fmt: skip
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
