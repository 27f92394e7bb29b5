"""Summed cross-entropy over a large vocabulary, computed a block of rows at a time.

``F.cross_entropy(logits.float(), ...)`` over (tokens, vocabulary) scores keeps four
full-size buffers per batch: the float32 copy of bf16 logits, the log-softmax, the zeroed
gradient of the NLL and the gradient of the log-softmax; for a translation batch (1,900
tokens x 8,000 words) those passes cost as much as the output layer's matrix products on a
CPU. :func:`summed_cross_entropy` reads the logits once, block by block in float32 (a
block stays in cache), and writes the gradient, ``softmax - target distribution``, in the
logits' dtype during the forward pass: backward only scales it. Same loss and gradient as
``F.cross_entropy(logits.float(), targets, label_smoothing=..., reduction="sum")`` to
float rounding: for float32 logits within 1e-5; for bf16, where autocast rounds the
float32 gradient once, this one is rounded when stored and again when scaled (within
2**-7 of it, relative).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ROWS_PER_BLOCK = 64  # 64 x 8,000 float32 scores: 2 MB, about one core's L2 cache


class _SummedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, label_smoothing: float) -> Tensor:
        rows, vocab = logits.shape
        grad = torch.empty_like(logits)
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        for start in range(0, rows, ROWS_PER_BLOCK):
            block = slice(start, min(start + ROWS_PER_BLOCK, rows))
            scores = logits[block].to(torch.float32, copy=True)  # a copy: changed in place
            gold = targets[block].unsqueeze(1)
            nll = -scores.gather(1, gold)
            if label_smoothing:  # (1 - e) * nll + e * mean over the vocabulary of -log p
                nll = (1 - label_smoothing) * nll - label_smoothing * scores.mean(1, keepdim=True)
            top = scores.amax(1, keepdim=True)
            probs = scores.sub_(top).exp_()  # in place of the scores
            norm = probs.sum(1, keepdim=True)
            total += (nll + top + norm.log()).sum()  # + log Z
            probs.div_(norm)
            if label_smoothing:
                probs.sub_(label_smoothing / vocab)
            probs.scatter_add_(1, gold, probs.new_full(gold.shape, label_smoothing - 1.0))
            grad[block] = probs
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None  # a 0-dim float32 scale: bf16 stays bf16


def summed_cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of ``logits`` ``(N, V)`` (any float dtype) against ``targets`` ``(N,)``,
    with optional label smoothing, summed over the rows, as a float32 scalar."""
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"logits (N, V) and targets (N,), got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")  # fmt: skip
    if not logits.requires_grad:  # evaluation: no gradient to prepare
        return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing,
                               reduction="sum")  # fmt: skip
    return _SummedCrossEntropy.apply(logits, targets, label_smoothing)
