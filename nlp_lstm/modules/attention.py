"""Global attention of a decoder over encoder states (Luong et al., 2015; Bahdanau et al., 2015)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

AttentionKind = Literal["bahdanau", "luong_dot", "luong_general"]


class GlobalAttention(nn.Module):
    """Scores every source position against a decoder state and mixes the source states.

    Args:
        size: size of the decoder state and of the source states (the encoder's output).
        kind: ``luong_dot`` (``q . s``), ``luong_general`` (``q . W s``) or ``bahdanau``
            (additive: ``v . tanh(W_q q + W_s s)``).

    Use :meth:`keys` once per source batch (the source-side projection), then
    ``forward(query (N, size), memory (N, S, size), keys, mask (N, S)) -> (context (N, size),
    weights (N, S))``. The weights sum to one over the real (``mask`` True) positions and
    are exactly zero on padding.
    """

    def __init__(self, size: int, kind: AttentionKind = "bahdanau") -> None:
        super().__init__()
        if kind not in ("bahdanau", "luong_dot", "luong_general"):
            raise ValueError(f"unknown attention {kind!r}")
        self.kind = kind
        additive = kind == "bahdanau"
        # absent parts are None (not missing), so the module also compiles with TorchScript
        self.key_proj = nn.Linear(size, size, bias=False) if kind != "luong_dot" else None
        self.query_proj = nn.Linear(size, size) if additive else None
        self.v = nn.Linear(size, 1, bias=False) if additive else None

    def keys(self, memory: Tensor) -> Tensor:
        """The source side of the score, computed once per batch: ``(N, S, size)``."""
        return memory if self.key_proj is None else self.key_proj(memory)

    def forward(
        self, query: Tensor, memory: Tensor, keys: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        if self.query_proj is not None and self.v is not None:  # bahdanau
            scores = self.v(torch.tanh(keys + self.query_proj(query).unsqueeze(1))).squeeze(-1)
        else:
            scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # (N, S)
        scores = scores.float().masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1).to(memory.dtype)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)
        return context, weights
