"""Pooling a sequence of states into one vector: attention, mean, max or last."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

PoolingKind = Literal["attention", "mean", "max", "last"]


class AttentionPooling(nn.Module):
    """Additive attention pooling: ``score_t = v . tanh(W h_t + b)``, softmax over the
    unmasked positions, output ``sum_t a_t h_t``.

    ``forward(states (B, T, H), mask (B, T)) -> (pooled (B, H), weights (B, T))``.
    """

    def __init__(self, input_size: int, attention_size: int | None = None) -> None:
        super().__init__()
        attention_size = attention_size or input_size
        self.scorer = nn.Sequential(
            nn.Linear(input_size, attention_size),
            nn.Tanh(),
            nn.Linear(attention_size, 1, bias=False),
        )

    def forward(self, states: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.scorer(states).squeeze(-1).float().masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        pooled = torch.bmm(weights.unsqueeze(1).to(states.dtype), states).squeeze(1)
        return pooled, weights


def masked_mean(states: Tensor, mask: Tensor) -> Tensor:
    """Mean over unmasked positions, ``(B, T, H) -> (B, H)``."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def masked_max(states: Tensor, mask: Tensor) -> Tensor:
    """Max over unmasked positions, ``(B, T, H) -> (B, H)``."""
    return states.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
