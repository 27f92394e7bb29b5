"""A small string-to-id vocabulary (the role torchtext's Vocab used to play)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

PAD = "<pad>"
UNK = "<unk>"


class Vocab:
    """Maps tokens to consecutive ids and back.

    With the default specials, id 0 is padding and id 1 the unknown token, which every
    unseen token maps to. With ``specials=()`` (tag sets, label sets) an unseen token is
    a KeyError.
    """

    def __init__(self, tokens: Iterable[str], specials: Sequence[str] = (PAD, UNK)) -> None:
        self.itos: list[str] = []
        self.stoi: dict[str, int] = {}
        for token in [*specials, *tokens]:
            if token not in self.stoi:
                self.stoi[token] = len(self.itos)
                self.itos.append(token)
        self.unk_id: int | None = self.stoi.get(UNK) if UNK in specials else None
        self.pad_id: int | None = self.stoi.get(PAD) if PAD in specials else None

    @classmethod
    def from_counts(
        cls,
        counts: Counter[str],
        min_freq: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = (PAD, UNK),
    ) -> Vocab:
        """Tokens seen at least ``min_freq`` times, most frequent first (ties by first seen)."""
        ranked = [t for t, c in counts.most_common(max_size) if c >= min_freq]
        return cls(ranked, specials)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __getitem__(self, token: str) -> int:
        index = self.stoi.get(token)
        if index is not None:
            return index
        if self.unk_id is None:
            raise KeyError(token)
        return self.unk_id

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return [self[t] for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def to_list(self) -> list[str]:
        """The full id-ordered token list (specials included), for checkpoints."""
        return list(self.itos)

    @classmethod
    def from_list(cls, itos: Sequence[str], specials: Sequence[str] = (PAD, UNK)) -> Vocab:
        """Inverse of :meth:`to_list`; ``specials`` must be those the vocab was built with."""
        vocab = cls(itos, specials)
        if vocab.itos != list(itos):
            raise ValueError("token list does not start with the given specials")
        return vocab
