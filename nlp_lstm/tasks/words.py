"""The word-level pipeline, written once for NER, sentiment and any later task over word
tokens: the model settings of word and char features, the vocabularies and vectors built
from the training tokens, padded batches with char rows, and a predictor base that reads
new text through them.

tokens -> :func:`build_word_vocabs` (words, chars, vectors) -> :func:`word_split`
(:class:`WordCollator` -> :class:`WordBatch`) -> :func:`word_encoder` (TokenEmbedder ->
BiLSTMEncoder) -> the task's head.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from nlp_lstm.config import check_fields
from nlp_lstm.contract import Predictor, Split
from nlp_lstm.data.batching import WordChars, check_pad_multiple, lengths_mask, pad, round_up
from nlp_lstm.data.vectors import EmbeddingsConfig, build_vocab_and_vectors
from nlp_lstm.data.vocab import Vocab
from nlp_lstm.modules.embeddings import CharEncoderKind, TokenEmbedder
from nlp_lstm.modules.encoder import BiLSTMEncoder, CellKind
from nlp_lstm.modules.pooling import PoolingKind
from nlp_lstm.tasks.common import extend_with_pretrained, saved_configs

log = logging.getLogger(__name__)


@dataclass
class WordModelConfig:
    """The ``model`` settings every word-level model has: its BiLSTM encoder and its token
    embedder (char features and dropouts). A task's model config adds its head's settings
    and may change these defaults."""

    hidden_size: int = 200  # per direction
    num_layers: int = 1
    dropout: float = 0.5
    cell: CellKind = "lstm"
    char: CharEncoderKind = "cnn"  # cnn | lstm | none: char features beside the word vectors
    char_dim: int = 30
    char_hidden: int = 50
    char_kernel: int = 3
    word_dropout: float = 0.0  # training replaces a word by the unknown word this often

    def __post_init__(self) -> None:
        check_fields(
            self,
            at_least_one=("hidden_size", "num_layers", "char_dim", "char_hidden", "char_kernel"),
            probabilities=("dropout", "word_dropout"),
        )


def word_encoder(
    config: WordModelConfig,
    vectors: Tensor,
    embeddings: EmbeddingsConfig,
    num_chars: int,
    pooling: PoolingKind | None = None,
) -> tuple[TokenEmbedder, BiLSTMEncoder]:
    """The token embedder and the BiLSTM encoder over it, as the configs say."""
    embedder = TokenEmbedder.from_config(vectors, embeddings, config, num_chars)
    encoder = BiLSTMEncoder(embedder.output_size, config.hidden_size, config.num_layers,
                            config.dropout, config.cell, pooling=pooling)  # fmt: skip
    return embedder, encoder


# ---------------------------------------------------------------------------- vocabularies


class WordVocabs(NamedTuple):
    """What :func:`build_word_vocabs` builds."""

    words: Vocab
    chars: Vocab | None  # None without char features
    vectors: Tensor  # (len(words), dim)


def build_word_vocabs(
    train: list[list[str]],
    extra: list[list[str]],
    embeddings: EmbeddingsConfig,
    min_freq: int,
    seed: int,
    chars: bool = True,
) -> WordVocabs:
    """The word vocabulary (training words seen ``min_freq`` times, plus the ``extra``
    sentences' words that have a pretrained vector), its matrix, and (``chars``) the char
    vocabulary of the training words."""
    counts = Counter(token for sentence in train for token in sentence)
    extra_words = [token for sentence in extra for token in sentence]
    words, vectors, coverage = build_vocab_and_vectors(
        counts, extra_words, embeddings, min_freq, seed
    )
    log.info("embeddings %s: %s", embeddings.name, coverage.summary())
    char_vocab = None
    if chars:
        char_vocab = Vocab.from_counts(Counter(c for s in train for token in s for c in token))
    return WordVocabs(words, char_vocab, vectors)


# ---------------------------------------------------------------------------- batches


@dataclass
class WordBatch:
    """Padded sentences. ``chars`` holds the batch's unique words (row 0: padding) and
    ``char_index`` points each token at its row (None without char features; see
    :class:`nlp_lstm.data.batching.WordChars`). ``targets``: tag ids ``(B, T)`` or label
    ids ``(B,)``; None when unlabelled."""

    words: Tensor  # (B, T)
    mask: Tensor  # (B, T) bool
    lengths: Tensor  # (B,) on the CPU
    indices: Tensor  # (B,) positions in the dataset
    targets: Tensor | None = None
    chars: Tensor | None = None  # (U, L)
    char_lengths: Tensor | None = None  # (U,) on the CPU
    char_index: Tensor | None = None  # (B, T)


class WordCollator:
    """Turns dataset positions into a :class:`WordBatch`, longest sentence first.

    ``targets`` holds one id list per sentence (tags: padded like the words) or one id per
    sentence (labels). The sentence and word lengths of a batch are padded up to a multiple
    of ``pad_multiple`` and its count of unique words (the char encoder's rows) to a multiple
    of 4x that (1: exact shapes), so that batch shapes recur instead of being new at nearly
    every step. ``word_chars``: one kept across collators (a predictor's cache of char ids).
    """

    def __init__(
        self,
        sentences: list[list[str]],
        targets: list[list[int]] | list[int] | None,
        words: Vocab,
        chars: Vocab | None = None,
        pad_multiple: int = 1,
        word_chars: WordChars | None = None,
    ) -> None:
        check_pad_multiple(pad_multiple)
        self.pad_multiple = pad_multiple
        if word_chars is None and chars is not None:
            word_chars = WordChars(chars, pad_multiple)
        self.word_chars = word_chars
        self.sentences = sentences
        self.word_ids = [words.encode(s) for s in sentences]
        self.lengths = [len(s) for s in sentences]
        self.targets = targets
        self.per_token = bool(targets) and isinstance(targets[0], (list, tuple))

    def __call__(self, indices: list[int]) -> WordBatch:
        indices = sorted(indices, key=lambda i: -self.lengths[i])  # longest first: cheap packing
        lengths = torch.tensor([self.lengths[i] for i in indices])
        width = round_up(int(lengths.max()), self.pad_multiple)
        targets = None
        if self.targets is not None:
            rows = [self.targets[i] for i in indices]
            targets = pad(rows, length=width) if self.per_token else torch.tensor(rows)
        chars = char_lengths = char_index = None
        if self.word_chars is not None:
            chars, char_lengths, char_index = self.word_chars(
                [self.sentences[i] for i in indices], width
            )
        return WordBatch(
            words=pad([self.word_ids[i] for i in indices], length=width),
            mask=lengths_mask(lengths, width),
            lengths=lengths,
            indices=torch.tensor(indices),
            targets=targets,
            chars=chars,
            char_lengths=char_lengths,
            char_index=char_index,
        )


def word_split(
    sentences: list[list[str]],
    targets: list[list[int]] | list[int] | None,
    words: Vocab,
    chars: Vocab | None = None,
    pad_multiple: int = 1,
    examples: list[Any] | None = None,
    word_chars: WordChars | None = None,
) -> Split:
    """A split of tokenised sentences for the Trainer. Its examples (what the task's score
    reads) are ``examples``, else the targets."""
    collator = WordCollator(sentences, targets, words, chars, pad_multiple, word_chars)
    return Split(examples if examples is not None else targets, collator.lengths, collator)


# ---------------------------------------------------------------------------- predictors


class WordPredictor(Predictor):
    """What the predictors of word-level tasks share: the checkpoint's data, model and
    embeddings settings, its word and char vocabularies, and :meth:`split`, which reads
    token lists through them. Words never seen in training get their pretrained vector when
    one exists (with ``data.extend_vocab``): the vocabulary grows as the predictor meets
    them, and results do not depend on call order."""

    data_config: type
    model_config: type

    def __init__(self, model, bundle, device, batch_size: int, precision: str = "32") -> None:
        super().__init__(model, bundle, device, batch_size, precision)
        self.data, _, self.embeddings = saved_configs(bundle, self.data_config, self.model_config)
        self.words = Vocab.from_list(bundle.vocabs["words"])
        saved_chars = bundle.vocabs.get("chars")
        self.chars = Vocab.from_list(saved_chars) if saved_chars is not None else None
        self.looked_up: set[str] = set()  # words searched for in the pretrained vectors
        self.word_chars = (  # their char ids, cached across calls
            WordChars(self.chars, self.data.pad_multiple) if self.chars is not None else None
        )

    def split(
        self, sentences: list[list[str]], targets=None, examples: list[Any] | None = None
    ) -> Split:
        """A split of token lists (their targets, if any) for the model, e.g. for
        ``Trainer.evaluate`` (``mode=test``)."""
        if self.data.extend_vocab:
            self.words = extend_with_pretrained(
                self.words, self.model.embedder, sentences, self.embeddings, self.looked_up
            )
        return word_split(sentences, targets, self.words, self.chars, self.data.pad_multiple,
                          examples, self.word_chars)  # fmt: skip
