"""Blocks for numeric series: reversible instance normalisation and segment projection."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RevIN(nn.Module):
    """Reversible instance normalisation (Kim et al., ICLR 2022).

    ``normalize(x (B, L, C))`` standardises each window and channel by its own mean and
    standard deviation over time (then an optional learned per-channel affine map) and
    remembers them; ``denormalize(y (B, H, K), channels)`` undoes it for the first or
    chosen ``K`` channels. Level shifts between windows then stop being the model's problem.
    """

    def __init__(self, channels: int, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))

    def normalize(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        out = (x - mean) / std
        if self.affine:
            out = out * self.weight + self.bias
        return out, (mean, std)

    def denormalize(self, y: Tensor, stats: tuple[Tensor, Tensor], channels: int) -> Tensor:
        mean, std = stats[0][..., :channels], stats[1][..., :channels]
        if self.affine:
            y = (y - self.bias[:channels]) / (self.weight[:channels] + self.eps * self.eps)
        return y * std + mean


class SegmentProjection(nn.Module):
    """Cuts ``(N, L, C)`` into ``L / segment`` non-overlapping segments and projects each
    (``segment * C`` values) to ``size`` features with a ReLU, as SegRNN does: the
    recurrent encoder then takes ``L / segment`` steps instead of ``L``."""

    def __init__(self, segment: int, channels: int, size: int) -> None:
        super().__init__()
        self.segment = segment
        self.projection = nn.Sequential(nn.Linear(segment * channels, size), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        n, steps, channels = x.shape
        if steps % self.segment:
            raise ValueError(f"look-back {steps} is not a multiple of the segment {self.segment}")
        return self.projection(x.reshape(n, steps // self.segment, self.segment * channels))
