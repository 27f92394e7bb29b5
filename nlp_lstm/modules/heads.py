"""Output heads: per-token tagging (CRF or softmax) and sequence classification."""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlp_lstm.modules.crf import CRF, Constraints

log = logging.getLogger(__name__)

CRFImpl = Literal["fast", "pytorch-crf"]


class TaggingHead(nn.Module):
    """Projects token states to tag scores and scores/decodes tag sequences.

    With ``crf=True`` a linear-chain CRF sits on the scores: ``crf_impl="fast"`` is
    :class:`nlp_lstm.CRF` (constrained when ``constraints`` are given), ``"pytorch-crf"``
    the reference ``torchcrf.CRF`` (which has no constraints). With ``crf=False`` tokens
    are classified independently (cross-entropy, argmax).
    """

    def __init__(
        self,
        input_size: int,
        num_tags: int,
        crf: bool = True,
        crf_impl: CRFImpl = "fast",
        constraints: Constraints | None = None,
    ) -> None:
        super().__init__()
        self.projection = nn.Linear(input_size, num_tags)
        self.crf: nn.Module | None = None
        if crf and crf_impl == "fast":
            self.crf = CRF(num_tags, batch_first=True, constraints=constraints)
        elif crf:
            import torchcrf

            if constraints is not None:
                log.warning(
                    "crf_impl=pytorch-crf cannot apply tag-scheme constraints; decoding unconstrained"
                )
            self.crf = torchcrf.CRF(num_tags, batch_first=True)

    def forward(self, states: Tensor) -> Tensor:
        """Emission scores ``(B, T, num_tags)``."""
        return self.projection(states)

    def loss(self, states: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Negative log-likelihood of the tag sequences, summed over the batch's sequences."""
        emissions = self(states)
        if self.crf is None:
            token_loss = F.cross_entropy(emissions.float().transpose(1, 2), tags, reduction="none")
            return (token_loss * mask).sum()
        if isinstance(self.crf, CRF):
            return -self.crf(emissions, tags, mask, reduction="sum")
        return -self.crf(emissions.float(), tags, mask, reduction="sum")

    def decode(self, states: Tensor, mask: Tensor) -> Tensor:
        """Best tag ids ``(B, T)`` (0 at padding)."""
        return self.decode_emissions(self(states), mask)

    def potentials(self) -> tuple[Tensor, Tensor, Tensor]:
        """The chain's ``start`` (K,), ``end`` (K,) and ``transitions`` (K, K) scores,
        forbidden moves at -inf: a CRF's own, or zeros without one (tokens classified
        independently are a chain with flat transitions: the same path probabilities)."""
        crf = self.crf
        if isinstance(crf, CRF):
            return crf._potentials()
        if crf is not None:  # pytorch-crf: same parameter names, no constraints
            return crf.start_transitions, crf.end_transitions, crf.transitions
        tags = self.projection.out_features
        zeros = self.projection.weight.new_zeros(tags)
        return zeros, zeros, self.projection.weight.new_zeros(tags, tags)

    def decode_emissions(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """Best tag ids ``(B, T)`` of emission scores (0 at padding)."""
        if self.crf is None:
            return emissions.argmax(-1).masked_fill(~mask, 0)
        if isinstance(self.crf, CRF):
            return self.crf.viterbi(emissions, mask)[0]
        paths = self.crf.decode(emissions.float(), mask)
        out = torch.zeros(mask.shape, dtype=torch.long)
        for row, path in enumerate(paths):
            out[row, : len(path)] = torch.tensor(path)
        return out.to(mask.device)


class ClassifierHead(nn.Module):
    """Dropout, a hidden tanh layer (if ``hidden_size``), then a linear layer to class scores."""

    def __init__(
        self, input_size: int, num_classes: int, hidden_size: int = 0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden_size:
            layers += [nn.Linear(input_size, hidden_size), nn.Tanh(), nn.Dropout(dropout)]
            input_size = hidden_size
        layers.append(nn.Linear(input_size, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.net(pooled)
