"""The Bi-LSTM sequence encoder shared by every task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nlp_lstm.modules.dropout import Dropout
from nlp_lstm.modules.pooling import AttentionPooling, PoolingKind, masked_max, masked_mean

CellKind = Literal["lstm", "gru"]


@dataclass
class EncoderOutput:
    """Per-token states ``(B, T, H)``, the pooled vector ``(B, H)`` when pooling is on,
    the attention weights ``(B, T)`` when pooling is ``attention``, and the RNN's final
    hidden state as ``nn.LSTM``/``nn.GRU`` return it (``(h_n, c_n)`` or ``h_n``, each
    ``(layers * directions, B, hidden)``), to start a decoder from."""

    states: Tensor
    pooled: Tensor | None = None
    attention: Tensor | None = None
    final: Tensor | tuple[Tensor, Tensor] | None = None


class BiLSTMEncoder(nn.Module):
    """A (bi-directional) LSTM or GRU over packed sequences.

    Args:
        input_size: size of each input vector.
        hidden_size: hidden size per direction.
        num_layers: stacked layers.
        dropout: dropout between layers and on the output states.
        cell: ``lstm`` or ``gru``.
        bidirectional: run a backward RNN too (output size ``2 * hidden_size``).
        pooling: ``None`` (states only), ``last`` (final states of both directions),
            ``mean``, ``max`` or ``attention`` (:class:`AttentionPooling`).

    ``forward(inputs (B, T, D), lengths (B,) on the CPU, mask (B, T) optional) ->
    EncoderOutput``; pass the batch's mask on a GPU to spare a host-to-device copy. Padding never
    influences the states of real tokens (the RNN runs on packed sequences); padded
    positions of ``states`` are zero.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        cell: CellKind = "lstm",
        bidirectional: bool = True,
        pooling: PoolingKind | None = None,
    ) -> None:
        super().__init__()
        rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn_class(
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.output_size = hidden_size * (2 if bidirectional else 1)
        self.dropout = Dropout(dropout)
        self.pooling = pooling
        self.attention = AttentionPooling(self.output_size) if pooling == "attention" else None

    def forward(self, inputs: Tensor, lengths: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        steps = inputs.shape[1]
        lengths = lengths.cpu()
        if bool((lengths == steps).all()):  # no padding (fixed windows): no packing needed
            states, hidden = self.rnn(inputs)
        else:
            # batches already sorted longest-first (our collate functions make them so)
            # pack without moving a permutation to the device, which would be a host sync
            descending = bool((lengths[:-1] >= lengths[1:]).all())
            packed = pack_padded_sequence(
                inputs, lengths, batch_first=True, enforce_sorted=descending
            )
            packed_out, hidden = self.rnn(packed)
            states, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=steps)
        states = self.dropout(states)
        if self.pooling is None:
            return EncoderOutput(states, final=hidden)
        mask = torch.arange(steps, device=states.device).unsqueeze(0) < lengths.to(
            states.device
        ).unsqueeze(1)
        if self.pooling == "attention":
            pooled, weights = self.attention(states, mask)
            return EncoderOutput(states, pooled, weights, final=hidden)
        if self.pooling == "mean":
            return EncoderOutput(states, masked_mean(states, mask), final=hidden)
        if self.pooling == "max":
            return EncoderOutput(states, masked_max(states, mask), final=hidden)
        h_n = hidden[0] if isinstance(hidden, tuple) else hidden  # (layers * dirs, B, H)
        directions = 2 if self.rnn.bidirectional else 1
        last = torch.cat(list(h_n[-directions:]), dim=-1)
        return EncoderOutput(states, self.dropout(last), final=hidden)
