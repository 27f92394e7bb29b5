"""An LSTM decoder with global attention and input feeding (Luong et al., 2015)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nlp_lstm.modules.attention import AttentionKind, GlobalAttention
from nlp_lstm.modules.dropout import Dropout
from nlp_lstm.modules.step import rnn_step


@dataclass
class Memory:
    """What the decoder attends to: encoder ``states`` (N, S, H), their attention ``keys``
    (N, S, H) and the ``mask`` (N, S) of real source positions."""

    states: Tensor
    keys: Tensor
    mask: Tensor

    def select(self, rows: Tensor) -> Memory:
        """The rows ``rows`` (for beams: each sentence repeated, or reordered)."""
        return Memory(self.states[rows], self.keys[rows], self.mask[rows])


@dataclass
class DecoderState:
    """The LSTM's ``(h, c)`` (each (layers, N, H)) and the previous attentional vector
    ``feed`` (N, H) that input feeding passes into the next step."""

    hidden: tuple[Tensor, Tensor]
    feed: Tensor

    def select(self, rows: Tensor) -> DecoderState:
        h, c = self.hidden
        return DecoderState((h[:, rows], c[:, rows]), self.feed[rows])


class AttentionDecoder(nn.Module):
    """Target embedding -> LSTM (input: the word and, with input feeding, the previous
    attentional vector) -> attention over the source -> ``tanh(W [context; h])`` -> scores.

    Args:
        vocab_size: target vocabulary size (id 0 is padding).
        embedding_dim: target embedding size.
        hidden_size: LSTM size; also the size of the source states attended to.
        num_layers: stacked LSTM layers.
        dropout: on embeddings, between layers and on the attentional vector.
        attention: the score function (:class:`GlobalAttention`).
        input_feeding: feed the previous attentional vector into the next step.
        tie_embeddings: the output layer reuses the target embedding matrix (a projection
            to ``embedding_dim`` comes first when the sizes differ).
        vectors: optional ``(vocab_size, embedding_dim)`` initial target embeddings.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.3,
        attention: AttentionKind = "bahdanau",
        input_feeding: bool = True,
        tie_embeddings: bool = False,
        vectors: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        if vectors is not None:
            self.embedding.weight.data.copy_(vectors)
        self.input_feeding = input_feeding
        self.hidden_size = hidden_size
        self.rnn = nn.LSTM(
            embedding_dim + (hidden_size if input_feeding else 0),
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.attention = GlobalAttention(hidden_size, attention)
        self.combine = nn.Linear(2 * hidden_size, hidden_size, bias=False)
        self.dropout = Dropout(dropout)
        self.out_proj = (
            nn.Linear(hidden_size, embedding_dim, bias=False)
            if tie_embeddings and hidden_size != embedding_dim
            else None
        )
        self.generator = nn.Linear(embedding_dim if tie_embeddings else hidden_size, vocab_size)
        if tie_embeddings:
            self.generator.weight = self.embedding.weight

    def memory(self, states: Tensor, mask: Tensor) -> Memory:
        """The encoder states ``(N, S, hidden_size)`` prepared for attention. Under
        autocast they are cast to its dtype here, once a batch, not by every step's products."""
        keys = self.attention.keys(states)
        device = states.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            states, keys = states.to(dtype), keys.to(dtype)
        return Memory(states, keys, mask)

    def initial_state(self, hidden: tuple[Tensor, Tensor]) -> DecoderState:
        """Start from the encoder's final ``(h, c)``, each ``(layers, N, hidden_size)``."""
        h = hidden[0]
        return DecoderState(hidden, h.new_zeros(h.shape[1], self.hidden_size))

    def step(
        self, tokens: Tensor, state: DecoderState, memory: Memory
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One target position: ``tokens`` (N,) -> attentional vectors (N, hidden_size),
        the new state and the attention weights (N, S)."""
        return self.step_embedded(self.dropout(self.embedding(tokens)), state, memory)

    def step_embedded(
        self, inputs: Tensor, state: DecoderState, memory: Memory
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """:meth:`step` from the tokens' embeddings (N, embedding_dim), dropout applied."""
        if self.input_feeding:
            inputs = torch.cat([inputs, state.feed.to(inputs.dtype)], dim=-1)
        output, hidden = self.recur(inputs, state.hidden)
        context, weights = self.attention(output, memory.states, memory.keys, memory.mask)
        attentional = self.dropout(torch.tanh(self.combine(torch.cat([context, output], dim=-1))))
        return attentional, DecoderState(hidden, attentional), weights

    def recur(
        self, inputs: Tensor, hidden: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The LSTM's step: ``inputs`` ``(N, D)`` -> output ``(N, hidden_size)`` and the new
        ``(h, c)`` (:func:`nlp_lstm.modules.step.rnn_step`)."""
        return rnn_step(self.rnn, inputs, hidden)

    def logits(self, attentional: Tensor) -> Tensor:
        """Scores over the target vocabulary for attentional vectors ``(..., hidden_size)``."""
        if self.out_proj is not None:
            attentional = self.out_proj(attentional)
        return self.generator(attentional)

    def attend(self, inputs: Tensor, state: DecoderState, memory: Memory) -> tuple[Tensor, Tensor]:
        """Teacher forcing: target inputs ``(N, T)`` (BOS first) -> attentional vectors
        ``(N, T, hidden_size)`` and attention weights ``(N, T, S)``. The targets are
        embedded once for all positions (one embedding gradient a batch, not one a
        position), then stepped through."""
        embedded = self.dropout(self.embedding(inputs))
        outputs, weights = [], []
        for position in embedded.unbind(1):
            attentional, state, attention = self.step_embedded(position, state, memory)
            outputs.append(attentional)
            weights.append(attention)
        return torch.stack(outputs, 1), torch.stack(weights, 1)

    def forward(self, inputs: Tensor, state: DecoderState, memory: Memory) -> tuple[Tensor, Tensor]:
        """Teacher forcing: target inputs ``(N, T)`` (BOS first) -> scores ``(N, T, V)`` and
        attention weights ``(N, T, S)``. The output layer runs once over all positions."""
        attentional, weights = self.attend(inputs, state, memory)
        return self.logits(attentional), weights
