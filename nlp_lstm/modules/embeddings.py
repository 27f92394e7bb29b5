"""Token embedders: word vectors joined with character features.

Character features come from the unique words of a batch (``chars``: ``(U, L)`` char
ids, row 0 the all-padding word) and are scattered back to token positions with
``char_index`` ``(B, T)``, so a word occurring many times is encoded once per batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

if TYPE_CHECKING:
    from nlp_lstm.data.vectors import EmbeddingsConfig

CharEncoderKind = Literal["cnn", "lstm", "none"]


class CharCNN(nn.Module):
    """Character CNN with max-over-time pooling (Ma & Hovy, 2016).

    ``forward(chars (U, L)) -> (U, num_filters)``; padding positions (id 0) never win the max.
    """

    def __init__(
        self, num_chars: int, char_dim: int = 30, num_filters: int = 50, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_chars, char_dim, padding_idx=0)
        self.conv = nn.Conv1d(char_dim, num_filters, kernel_size, padding=kernel_size // 2)
        self.output_size = num_filters

    def forward(self, chars: Tensor, lengths: Tensor | None = None) -> Tensor:
        features = self.conv(self.embedding(chars).transpose(1, 2))  # (U, F, L)
        pad = (chars == 0).unsqueeze(1)
        # in place: the conv's backward needs its input, not its output, so no (U, F, L) copy
        features = features.masked_fill_(pad, float("-inf")).amax(-1)
        return features.masked_fill(pad.all(-1), 0.0)  # the all-padding word -> zeros


class CharLSTM(nn.Module):
    """Character BiLSTM whose final states form the word feature (Lample et al., 2016).

    ``forward(chars (U, L), lengths (U,) on the CPU) -> (U, 2 * hidden_size)``; without
    ``lengths`` they are counted from ``chars`` (a host sync when ``chars`` is on a GPU).
    """

    def __init__(self, num_chars: int, char_dim: int = 25, hidden_size: int = 25) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_chars, char_dim, padding_idx=0)
        self.lstm = nn.LSTM(char_dim, hidden_size, batch_first=True, bidirectional=True)
        self.output_size = 2 * hidden_size

    def forward(self, chars: Tensor, lengths: Tensor | None = None) -> Tensor:
        if lengths is None:
            lengths = (chars != 0).sum(1).cpu()
        lengths = lengths.clamp_min(1)  # the all-padding word (row 0) still gets a state
        packed = pack_padded_sequence(
            self.embedding(chars), lengths, batch_first=True, enforce_sorted=False
        )
        _, (h_n, _) = self.lstm(packed)
        return torch.cat([h_n[0], h_n[1]], dim=-1)


class TokenEmbedder(nn.Module):
    """Word embeddings (optionally pretrained, frozen or fine-tuned) joined with char
    features, followed by dropout.

    Args:
        vectors: ``(V, D)`` initial word matrix (row 0 padding, row 1 unknown).
        freeze: keep the word matrix fixed.
        lr_scale: the word matrix trains at the optimizer's learning rate times this
            (the Trainer reads ``lr_scale`` off submodules; see ``parameter_groups``).
        num_chars: size of the char vocabulary (0 or ``char="none"`` for no char features).
        char: ``cnn``, ``lstm`` or ``none``.
        char_dim / char_hidden / char_kernel: char embedding size, CNN filters (or LSTM
            hidden size per direction) and CNN window.
        dropout: dropout on the joined embedding.
        word_dropout: during training, replace each word id by the unknown id with this
            probability, so the unknown row learns to stand for unseen words.
        static_channel: also read a frozen copy of ``vectors`` beside the (tuned) word
            matrix, as Kim (2014)'s multichannel CNN does: words the training data never
            shows keep a representation in the space the tuned words came from.
        static_swap: during training, a word shows its pretrained row in the tuned channel
            too with this probability: the state of every word training never saw, which
            keeps its pretrained row in both channels (needs ``static_channel``).
    """

    def __init__(
        self,
        vectors: Tensor,
        freeze: bool = False,
        num_chars: int = 0,
        char: CharEncoderKind = "cnn",
        char_dim: int = 30,
        char_hidden: int = 50,
        char_kernel: int = 3,
        dropout: float = 0.5,
        word_dropout: float = 0.0,
        unk_id: int = 1,
        lr_scale: float = 1.0,
        static_channel: bool = False,
        static_swap: float = 0.0,
    ) -> None:
        super().__init__()
        if static_swap and not static_channel:
            raise ValueError("static_swap needs static_channel")
        self.words = nn.Embedding.from_pretrained(vectors.float(), freeze=freeze, padding_idx=0)
        self.words.lr_scale = lr_scale
        self.static = (
            nn.Embedding.from_pretrained(vectors.float().clone(), freeze=True, padding_idx=0)
            if static_channel
            else None
        )
        self.chars: nn.Module | None = None
        if char == "cnn" and num_chars:
            self.chars = CharCNN(num_chars, char_dim, char_hidden, char_kernel)
        elif char == "lstm" and num_chars:
            self.chars = CharLSTM(num_chars, char_dim, char_hidden)
        self.output_size = vectors.shape[1] * (2 if static_channel else 1) + (
            self.chars.output_size if self.chars is not None else 0
        )
        self.dropout = nn.Dropout(dropout)
        self.word_dropout = word_dropout
        self.static_swap = static_swap
        self.unk_id = unk_id

    @classmethod
    def from_config(
        cls, vectors: Tensor, embeddings: EmbeddingsConfig, model: Any, num_chars: int
    ) -> TokenEmbedder:
        """The embedder a word-level model's config describes: ``embeddings`` says how the
        word vectors are used, ``model`` (a :class:`nlp_lstm.tasks.words.WordModelConfig`)
        the char features and dropouts."""
        return cls(
            vectors,
            freeze=embeddings.freeze,
            lr_scale=embeddings.lr_scale,
            static_channel=embeddings.static_channel,
            static_swap=embeddings.static_swap,
            num_chars=num_chars,
            char=model.char,
            char_dim=model.char_dim,
            char_hidden=model.char_hidden,
            char_kernel=model.char_kernel,
            dropout=model.dropout,
            word_dropout=model.word_dropout,
        )

    def forward(
        self,
        words: Tensor,
        chars: Tensor | None = None,
        char_index: Tensor | None = None,
        char_lengths: Tensor | None = None,
    ) -> Tensor:
        """``words`` (B, T) -> (B, T, output_size). ``chars`` (U, L) are the char ids of
        the batch's unique words, ``char_index`` (B, T) each token's row in them and
        ``char_lengths`` (U,) their lengths on the CPU (used by the char LSTM)."""
        if self.training and self.word_dropout > 0:
            drop = (torch.rand(words.shape, device=words.device) < self.word_dropout) & (words != 0)
            words = words.masked_fill(drop, self.unk_id)
        parts = [self.words(words)]
        if self.static is not None:
            parts.append(self.static(words))
            if self.training and self.static_swap > 0:
                swap = torch.rand(words.shape + (1,), device=words.device) < self.static_swap
                parts[0] = torch.where(swap, parts[1], parts[0])
        if self.chars is not None:
            if chars is None or char_index is None:
                raise ValueError("this embedder uses char features: pass chars and char_index")
            parts.append(self.chars(chars, char_lengths)[char_index])
        return self.dropout(torch.cat(parts, dim=-1))

    def extend_vocab(self, rows: Tensor) -> None:
        """Append word rows (for words added to the vocabulary after training); with a
        static channel, the same rows go to both channels."""
        if rows.numel() == 0:
            return
        lr_scale = self.words.lr_scale
        self.words = _with_rows(self.words, rows)
        self.words.lr_scale = lr_scale
        if self.static is not None:
            self.static = _with_rows(self.static, rows)


def _with_rows(embedding: nn.Embedding, rows: Tensor) -> nn.Embedding:
    """A copy of ``embedding`` with ``rows`` appended, frozen or trainable as it was."""
    weight = embedding.weight
    grown = torch.cat([weight.data, rows.to(weight.device, weight.dtype)], dim=0)
    return nn.Embedding.from_pretrained(grown, freeze=not weight.requires_grad, padding_idx=0)
