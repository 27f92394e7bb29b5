"""Parallel text for translation: prefix-named file pairs and reversible subword tokenisers.

Files follow fairseq's and OpenNMT's convention: a *prefix* and a language code name one
side, ``<prefix>.<lang>``, one sentence a line, line ``i`` of one side translating line
``i`` of the other. Tokenisers come from Hugging Face ``tokenizers``, trained on the
training text: byte-pair encoding (``bpe``) or whole words (``word``). Both split on
whitespace (marked ``▁`` as in SentencePiece) and punctuation, so decoding gives back the
original text exactly (up to Unicode NFC): output is detokenised plain text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nlp_lstm.errors import DataError
from nlp_lstm.files import read_lines

TokenizerKind = Literal["bpe", "word"]
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")  # ids 0..3: padding, unknown, BOS, EOS


@dataclass
class ParallelText:
    """Aligned sentences of two sides, with the files they came from."""

    source: list[str]
    target: list[str]
    source_path: Path
    target_path: Path

    def __len__(self) -> int:
        return len(self.source)


def side_path(prefix: str | Path, lang: str) -> Path:
    """``<prefix>.<lang>``."""
    return Path(f"{Path(prefix).expanduser()}.{lang}")


def check_lines(path: Path, lines: Sequence[str]) -> None:
    """Every line must hold text: an empty one is a DataError naming its line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataError(path, number, "empty line (every line must hold a sentence)")


def read_side(path: str | Path, what: str) -> list[str]:
    """One side's sentences, checked (missing file, bad UTF-8, empty lines: DataError)."""
    path = Path(path)
    lines = read_lines(path, what)
    check_lines(path, lines)
    return [line.strip() for line in lines]


def read_parallel(prefix: str | Path, source_lang: str, target_lang: str) -> ParallelText:
    """The sentence pairs of ``<prefix>.<source_lang>`` and ``<prefix>.<target_lang>``; a
    one-line DataError when a side is missing, holds an empty line or the two sides
    differ in length."""
    source_path = side_path(prefix, source_lang)
    target_path = side_path(prefix, target_lang)
    source = read_side(source_path, f"{source_lang} side")
    target = read_side(target_path, f"{target_lang} side")
    if len(source) != len(target):
        raise DataError(
            source_path,
            None,
            f"has {len(source)} lines but {target_path} has {len(target)}: "
            "the two sides of a parallel corpus must have one line per sentence pair",
        )
    return ParallelText(source, target, source_path, target_path)


def train_tokenizer(lines: Iterable[str], kind: TokenizerKind, vocab_size: int, min_freq: int = 1):
    """A ``tokenizers.Tokenizer`` trained on ``lines``: BPE with up to ``vocab_size``
    symbols, or whole words seen at least ``min_freq`` times (at most ``vocab_size``).
    Ids 0..3 are ``<pad> <unk> <s> </s>``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    model, trainer = {
        "bpe": (models.BPE, trainers.BpeTrainer),
        "word": (models.WordLevel, trainers.WordLevelTrainer),
    }[kind]
    tokenizer = Tokenizer(model(unk_token="<unk>"))
    trainer = trainer(
        vocab_size=vocab_size,
        min_frequency=min_freq,
        special_tokens=list(SPECIALS),
        show_progress=False,
    )
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()]
    )
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(list(lines), trainer)
    return tokenizer


def load_tokenizer(saved: str):
    """A tokenizer from its JSON (as checkpoints carry it)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(saved)


def encode(tokenizer, sentences: Sequence[str]) -> list[list[int]]:
    """Token ids of each sentence (no BOS/EOS)."""
    return [e.ids for e in tokenizer.encode_batch(list(sentences))]


def decode(tokenizer, ids: Sequence[Sequence[int]]) -> list[str]:
    """Plain text of each id sequence (special tokens dropped)."""
    return tokenizer.decode_batch([list(i) for i in ids], skip_special_tokens=True)
