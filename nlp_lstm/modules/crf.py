"""A batched linear-chain CRF, a drop-in for pytorch-crf's ``torchcrf.CRF``.

Same constructor, parameter names, ``forward`` (log-likelihood) and ``decode`` as
pytorch-crf, so its state dicts load here. On top of that:

* the partition function runs the forward algorithm over the whole batch at once (one
  small matmul a time step, in log space with a per-step max shift) and its gradient is
  computed by hand from forward-backward marginals instead of autograd replaying every
  step; the gold-path score is a handful of vectorised gathers;
* Viterbi runs over the whole batch on the device, backtrace included: no per-sentence
  Python loop and no host round trip until ``decode`` turns paths into lists;
* optional transition constraints (for example "no O -> I-PER") are applied as -inf
  scores in training and decoding, so decoded paths are always valid;
* ``viterbi`` returns padded tensors (tags and path scores) instead of lists.

All CRF arithmetic is done in float32 with autocast off, whatever precision the model
around it uses.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

Constraints = tuple[Tensor, Tensor, Tensor]


class _LogPartition(torch.autograd.Function):
    """log Z for each sequence; backward returns expected counts (marginals).

    Forward and backward (alpha and beta) recursions keep each step's scores normalised
    to a maximum of 0 and carry the per-step offsets separately, summed in float64, so
    marginals ``exp(alpha + beta - log Z)`` stay accurate for long sequences and large
    scores (no cancellation between numbers in the thousands in float32).
    """

    @staticmethod
    def forward(ctx, emissions: Tensor, start: Tensor, end: Tensor, trans: Tensor, last: Tensor):
        # emissions (T, B, K); start/end (K,); trans (K, K) from -> to; last (B,) = length - 1
        steps, batch, tags = emissions.shape
        shift = trans.max()
        exp_trans = (trans - shift).exp()
        emit_shifted = emissions + shift
        alphas = emissions.new_empty(steps, batch, tags)  # alpha_t - offset_t, max 0
        offsets = emissions.new_empty(steps, batch, 1)  # per-step maxima
        alpha_t, offset_t, emit_t = alphas.unbind(0), offsets.unbind(0), emit_shifted.unbind(0)
        first = start + emissions[0]
        torch.amax(first, -1, keepdim=True, out=offset_t[0])
        torch.sub(first, offset_t[0], out=alpha_t[0])
        probs = emissions.new_empty(batch, tags)
        scores = emissions.new_empty(batch, tags)
        for t in range(1, steps):  # six small kernels a step, no allocations
            torch.exp(alpha_t[t - 1], out=probs)
            torch.mm(probs, exp_trans, out=scores)
            scores.log_().add_(emit_t[t])
            torch.amax(scores, -1, keepdim=True, out=offset_t[t])
            torch.sub(scores, offset_t[t], out=alpha_t[t])
        cumulative = offsets.squeeze(-1).double().cumsum(0)  # (T, B): alpha = alphas + cumulative
        at_last = last.view(1, batch, 1).expand(1, batch, tags)
        final = alphas.gather(0, at_last).squeeze(0) + end
        log_z = final.logsumexp(-1).double() + cumulative.gather(0, last.view(1, batch)).squeeze(0)
        ctx.save_for_backward(emissions, start, end, trans, last, alphas, cumulative, log_z)
        return log_z.to(emissions.dtype)

    @staticmethod
    def backward(ctx, grad_log_z: Tensor):
        emissions, start, end, trans, last, alphas, cumulative, log_z = ctx.saved_tensors
        steps, batch, tags = emissions.shape
        shift = trans.max()
        exp_trans = (trans - shift).exp()
        exp_trans_t = exp_trans.t().contiguous()
        positions = torch.arange(steps, device=emissions.device).unsqueeze(1)
        is_last = (positions == last.unsqueeze(0)).unsqueeze(-1)  # (T, B, 1)
        valid = (positions <= last.unsqueeze(0)).unsqueeze(-1)
        end_row = end.expand(batch, tags)

        betas = emissions.new_empty(steps, batch, tags)  # beta_t - offset_t
        tops = emissions.new_zeros(steps, batch, 1)
        beta_t, top_t, emit_t, last_t = (
            betas.unbind(0),
            tops.unbind(0),
            emissions.unbind(0),
            is_last.unbind(0),
        )
        beta_t[steps - 1].copy_(end_row)
        following = emissions.new_empty(batch, tags)
        scores = emissions.new_empty(batch, tags)
        for t in range(steps - 2, -1, -1):
            torch.add(beta_t[t + 1], emit_t[t + 1], out=following)
            torch.amax(following, -1, keepdim=True, out=top_t[t])
            following.sub_(top_t[t]).exp_()
            torch.mm(following, exp_trans_t, out=scores)
            torch.where(last_t[t], end_row, scores.log_(), out=beta_t[t])
        # beta_t = betas_t + sum of (top + shift) over t <= u < last: reverse cumsum in float64
        step_offsets = (tops.squeeze(-1).double() + shift.double()).masked_fill(
            ~valid.squeeze(-1) | is_last.squeeze(-1), 0.0
        )
        beta_offsets = step_offsets.flip(0).cumsum(0).flip(0)  # (T, B)

        weight = grad_log_z.view(1, batch, 1)
        # log P(y_t = k) = alphas + betas + (alpha offset + beta offset - log Z)
        unary_shift = (cumulative + beta_offsets - log_z).to(emissions.dtype).unsqueeze(-1)
        unary = (alphas + betas + unary_shift).masked_fill_(~valid, float("-inf")).exp_()
        grad_emissions = unary * weight
        grad_start = grad_emissions[0].sum(0)
        grad_end = (
            grad_emissions.gather(0, last.view(1, batch, 1).expand(1, batch, tags))
            .squeeze(0)
            .sum(0)
        )
        if steps > 1:
            # P(y_{t-1}=i, y_t=j) = exp(alphas[t-1, i]) * exp_trans[i, j] * exp(e_t[j] + betas_t[j]
            # + offsets - log Z): summed over t and the batch this is one (K x N) @ (N x K)
            # matmul, done in float64 so the right-hand factor cannot overflow
            pair_shift = cumulative[:-1] + beta_offsets[1:] + shift.double() - log_z
            log_right = (
                (emissions[1:] + betas[1:]).double() + pair_shift.unsqueeze(-1)
            ).masked_fill_(~valid[1:], float("-inf"))
            right = log_right.clamp_max_(700.0).exp_().mul_(grad_log_z.double().view(1, batch, 1))
            left = alphas[:-1].to(torch.float64, copy=True).exp_()
            counts = left.reshape(-1, tags).t() @ right.reshape(-1, tags)
            grad_trans = (counts * exp_trans.double()).to(trans.dtype)
        else:
            grad_trans = torch.zeros_like(trans)
        return grad_emissions, grad_start, grad_end, grad_trans, None


class CRF(nn.Module):
    """Linear-chain conditional random field.

    Args:
        num_tags: number of tags.
        batch_first: whether inputs are ``(batch, seq, ...)`` rather than ``(seq, batch, ...)``.
        constraints: optional ``(start_allowed (K,), transitions_allowed (K, K),
            end_allowed (K,))`` boolean tensors; disallowed moves score -inf.
            See :func:`nlp_lstm.data.conll.allowed_transitions`.

    Parameters are ``start_transitions`` (K,), ``end_transitions`` (K,) and
    ``transitions`` (K, K), where ``transitions[i, j]`` scores a move from tag i to tag j.
    """

    def __init__(
        self, num_tags: int, batch_first: bool = False, *, constraints: Constraints | None = None
    ) -> None:
        if num_tags <= 0:
            raise ValueError(f"invalid number of tags: {num_tags}")
        super().__init__()
        self.num_tags = num_tags
        self.batch_first = batch_first
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.reset_parameters()
        self.register_buffer("start_allowed", None, persistent=False)
        self.register_buffer("transitions_allowed", None, persistent=False)
        self.register_buffer("end_allowed", None, persistent=False)
        if constraints is not None:
            self.set_constraints(constraints)

    def reset_parameters(self) -> None:
        """Uniform(-0.1, 0.1), as pytorch-crf does."""
        for param in (self.start_transitions, self.end_transitions, self.transitions):
            nn.init.uniform_(param, -0.1, 0.1)

    def set_constraints(self, constraints: Constraints | None) -> None:
        """Install (or with ``None`` remove) the allowed start/transition/end masks."""
        if constraints is None:
            self.start_allowed = self.transitions_allowed = self.end_allowed = None
            return
        start, trans, end = (torch.as_tensor(c, dtype=torch.bool) for c in constraints)
        k = self.num_tags
        if start.shape != (k,) or end.shape != (k,) or trans.shape != (k, k):
            raise ValueError(f"constraints must have shapes ({k},), ({k}, {k}), ({k},)")
        device = self.transitions.device
        self.start_allowed, self.transitions_allowed, self.end_allowed = (
            start.to(device),
            trans.to(device),
            end.to(device),
        )

    def extra_repr(self) -> str:
        """``num_tags=K`` as pytorch-crf writes it, plus what differs from the defaults."""
        text = f"num_tags={self.num_tags}"
        if self.batch_first:
            text += ", batch_first=True"
        if self.transitions_allowed is not None:
            text += ", constrained=True"
        return text

    # ------------------------------------------------------------------ public API
    # Every public method compiles with ``torch.jit.script``: scripted, the partition
    # function is the plain log-space recursion (autograd through it) instead of the
    # hand-written backward, which TorchScript cannot call; the results agree.

    def forward(
        self,
        emissions: Tensor,
        tags: Tensor,
        mask: Tensor | None = None,
        reduction: str = "sum",
    ) -> Tensor:
        """Log-likelihood of ``tags`` given ``emissions``.

        ``reduction``: ``none`` (one value a sequence), ``sum``, ``mean`` (over sequences)
        or ``token_mean`` (sum divided by the number of unmasked tokens).
        """
        self._validate(emissions, tags, mask)
        if reduction not in ["none", "sum", "mean", "token_mean"]:
            raise ValueError("invalid reduction: " + reduction)
        emissions, time_tags, mask = self._time_first(emissions, tags, mask)
        assert time_tags is not None
        if torch.jit.is_scripting():
            llh = self._log_likelihood(emissions.float(), time_tags, mask)
        else:
            llh = self._log_likelihood_fp32(emissions, time_tags, mask)
        if reduction == "none":
            return llh
        if reduction == "sum":
            return llh.sum()
        if reduction == "mean":
            return llh.mean()
        return llh.sum() / mask.float().sum()

    @torch.jit.export
    def log_partition(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """log Z for each sequence, shape ``(batch,)``."""
        self._validate(emissions, None, mask)
        emissions, _, mask = self._time_first(emissions, None, mask)
        if torch.jit.is_scripting():
            start, end, trans = self._potentials()
            return _log_partition(emissions.float(), start, end, trans, mask.sum(0) - 1)
        return self._log_partition_fp32(emissions, mask)

    @torch.jit.export
    def decode(self, emissions: Tensor, mask: Tensor | None = None) -> list[list[int]]:
        """Best tag sequence for each sequence, as lists of tag ids (pytorch-crf's API)."""
        best, _ = self.viterbi(emissions, mask)
        if not self.batch_first:
            best = best.t()
        lengths: list[int] = [best.shape[1]] * best.shape[0]
        if mask is not None:
            counts: list[int] = mask.sum(1 if self.batch_first else 0).tolist()
            lengths = counts
        rows: list[list[int]] = best.tolist()
        return [row[:n] for row, n in zip(rows, lengths)]  # noqa: B905 (TorchScript)

    @torch.jit.export
    def viterbi(self, emissions: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Best paths as a padded LongTensor (same layout as ``mask``, 0 past the end) and
        their scores ``(batch,)``. Runs on the emissions' device without leaving it."""
        self._validate(emissions, None, mask)
        emissions, _, mask = self._time_first(emissions, None, mask)
        with torch.no_grad():
            if torch.jit.is_scripting():
                start, end, trans = self._potentials()
                last = mask.sum(0) - 1
                best, score = _viterbi_functional(emissions.float(), last, start, end, trans)
            else:
                best, score = self._viterbi_fp32(emissions, mask)
        return (best.transpose(0, 1) if self.batch_first else best), score

    @torch.jit.unused
    def marginals(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """P(y_t = k | emissions) for every position and tag, in ``emissions``' layout
        (0 at padding); constraints apply. Forward-backward in float32, no gradient."""
        self._validate(emissions, None, mask)
        emissions, _, mask = self._time_first(emissions, None, mask)
        emissions, mask = emissions.transpose(0, 1), mask.transpose(0, 1)
        start, end, trans = self._potentials()
        log_alpha, log_beta, log_z = forward_backward(emissions, mask, start, end, trans)
        probs = tag_marginals(log_alpha, log_beta, log_z, mask)
        return probs if self.batch_first else probs.transpose(0, 1)

    # ------------------------------------------------------------------ internals

    def _log_likelihood(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        start, end, trans = self._potentials()
        last = mask.sum(0) - 1
        gold = self._gold_score(emissions, tags, mask, last, start, end, trans)
        return gold - _log_partition(emissions, start, end, trans, last)

    # eager only: CRF arithmetic in float32 whatever autocast says around it
    @torch.jit.unused
    def _log_likelihood_fp32(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        with torch.autocast(emissions.device.type, enabled=False):
            return self._log_likelihood(emissions.float(), tags, mask)

    @torch.jit.unused
    def _log_partition_fp32(self, emissions: Tensor, mask: Tensor) -> Tensor:
        with torch.autocast(emissions.device.type, enabled=False):
            start, end, trans = self._potentials()
            return _log_partition(emissions.float(), start, end, trans, mask.sum(0) - 1)

    @torch.jit.unused
    def _viterbi_fp32(self, emissions: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(emissions.device.type, enabled=False):
            start, end, trans = self._potentials()
            return _viterbi(emissions.float(), mask.sum(0) - 1, start, end, trans)

    def _potentials(self) -> tuple[Tensor, Tensor, Tensor]:
        start, end, trans = self.start_transitions, self.end_transitions, self.transitions
        start_allowed, trans_allowed = self.start_allowed, self.transitions_allowed
        end_allowed = self.end_allowed
        if start_allowed is not None and trans_allowed is not None and end_allowed is not None:
            neg_inf = float("-inf")
            start = start.masked_fill(~start_allowed, neg_inf)
            end = end.masked_fill(~end_allowed, neg_inf)
            trans = trans.masked_fill(~trans_allowed, neg_inf)
        return start.float(), end.float(), trans.float()

    def _time_first(
        self, emissions: Tensor, tags: Tensor | None, mask: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        if mask is None:
            mask = torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        mask = mask.to(torch.bool)
        if self.batch_first:
            emissions = emissions.transpose(0, 1)
            mask = mask.transpose(0, 1)
            if tags is not None:
                tags = tags.transpose(0, 1)
        return emissions, tags, mask

    @staticmethod
    def _gold_score(
        emissions: Tensor,
        tags: Tensor,
        mask: Tensor,
        last: Tensor,
        start: Tensor,
        end: Tensor,
        trans: Tensor,
    ) -> Tensor:
        tags = tags.long()
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)
        score = start[tags[0]] + torch.where(mask, emitted, 0.0).sum(0)
        if tags.shape[0] > 1:
            moved = trans[tags[:-1], tags[1:]]
            score = score + torch.where(mask[1:], moved, 0.0).sum(0)
        last_tags = tags.gather(0, last.unsqueeze(0)).squeeze(0)
        return score + end[last_tags]

    def _validate(self, emissions: Tensor, tags: Tensor | None, mask: Tensor | None) -> None:
        if emissions.dim() != 3:
            raise ValueError(f"emissions must have dimension of 3, got {emissions.dim()}")
        if emissions.size(2) != self.num_tags:
            raise ValueError(
                f"expected last dimension of emissions is {self.num_tags}, got {emissions.size(2)}"
            )
        if tags is not None and emissions.shape[:2] != tags.shape:
            if torch.jit.is_scripting():  # graphs keep the message short
                raise ValueError("the first two dimensions of emissions and tags must match")
            raise ValueError(
                "the first two dimensions of emissions and tags must match, "
                f"got {tuple(emissions.shape[:2])} and {tuple(tags.shape)}"
            )
        if mask is not None:
            if emissions.shape[:2] != mask.shape:
                if torch.jit.is_scripting():
                    raise ValueError("the first two dimensions of emissions and mask must match")
                raise ValueError(
                    "the first two dimensions of emissions and mask must match, "
                    f"got {tuple(emissions.shape[:2])} and {tuple(mask.shape)}"
                )
            first = mask[:, 0] if self.batch_first else mask[0]
            if first.is_cuda:  # checked on the device, without waiting for it
                torch._assert_async(
                    first.to(torch.bool).all(), "mask of the first timestep must all be on"
                )
            elif not bool(first.all()):
                raise ValueError("mask of the first timestep must all be on")


def _log_partition(
    emissions: Tensor, start: Tensor, end: Tensor, trans: Tensor, last: Tensor
) -> Tensor:
    """log Z (B,) of time-first emissions: the hand-written forward-backward in eager mode,
    the plain recursion (differentiated by autograd) under TorchScript and torch.compile
    (which trace it into their own graphs; the in-place ``out=`` kernels are eager's)."""
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return _log_partition_recursion(emissions, start, end, trans, last)
    return _log_partition_fast(emissions, start, end, trans, last)


@torch.jit.unused
def _log_partition_fast(
    emissions: Tensor, start: Tensor, end: Tensor, trans: Tensor, last: Tensor
) -> Tensor:
    return _LogPartition.apply(emissions, start, end, trans, last)


def _log_partition_recursion(
    emissions: Tensor, start: Tensor, end: Tensor, trans: Tensor, last: Tensor
) -> Tensor:
    """The forward algorithm, one logsumexp a step; positions past a sequence's end keep
    its score."""
    steps = emissions.shape[0]
    alpha = start + emissions[0]  # (B, K)
    for t in range(1, steps):
        step = torch.logsumexp(alpha.unsqueeze(2) + trans.unsqueeze(0), dim=1) + emissions[t]
        alpha = torch.where((t <= last).unsqueeze(1), step, alpha)
    return torch.logsumexp(alpha + end, dim=1)


def _viterbi(
    emissions: Tensor, last: Tensor, start: Tensor, end: Tensor, trans: Tensor
) -> tuple[Tensor, Tensor]:
    """Batched Viterbi, time-first. Returns best paths (T, B), 0 past each end, and scores.

    The batch is the innermost (contiguous) axis, so each step is three vectorised kernels
    over ``(K, K, B)`` / ``(K, B)``: broadcast add, max over the previous tag, add emissions.
    Only the best scores are kept; the backtrace recomputes the argmax for the one chosen
    tag of each sequence, a ``(K, B)`` problem, instead of storing ``(T, K, B)``
    backpointers (the same arithmetic, so the same path).
    """
    steps, batch, tags = emissions.shape
    device = emissions.device
    emit_t = emissions.permute(0, 2, 1).contiguous().unbind(0)  # (K, B) a step
    scores = emissions.new_empty(steps, tags, batch)
    score_t = scores.unbind(0)
    candidates = emissions.new_empty(tags, tags, batch)
    trans_b = trans.unsqueeze(2)  # (from, to, 1)
    torch.add(start.unsqueeze(1), emit_t[0], out=score_t[0])
    for t in range(1, steps):
        torch.add(score_t[t - 1].unsqueeze(1), trans_b, out=candidates)
        torch.amax(candidates, 0, out=score_t[t])
        score_t[t].add_(emit_t[t])
    final = scores.gather(0, last.view(1, 1, batch).expand(1, tags, batch)).squeeze(
        0
    ) + end.unsqueeze(1)
    path_score, best_last = final.max(0)

    active = torch.arange(steps, device=device).unsqueeze(1) <= last.unsqueeze(0)  # (T, B)
    active_t = active.unbind(0)
    paths = torch.empty(steps, batch, dtype=torch.long, device=device)
    path_t = paths.unbind(0)
    column = emissions.new_empty(tags, batch)
    current = best_last
    for t in range(steps - 1, 0, -1):
        path_t[t].copy_(current)
        torch.add(score_t[t - 1], trans.index_select(1, current), out=column)
        # max(0) rather than argmax(0): the same index, and much faster on the CPU
        current = torch.where(active_t[t], column.max(0)[1], best_last)
    path_t[0].copy_(current)
    return paths.masked_fill_(~active, 0), path_score


def _viterbi_functional(
    emissions: Tensor, last: Tensor, start: Tensor, end: Tensor, trans: Tensor
) -> tuple[Tensor, Tensor]:
    """:func:`_viterbi` without in-place writes (kept backpointers instead of recomputed
    ones), for TorchScript and the ONNX graphs made from it: the same paths and scores."""
    steps = emissions.shape[0]
    score = start.unsqueeze(0) + emissions[0]  # (B, K)
    pointers: list[Tensor] = []
    for t in range(1, steps):
        best, pointer = (score.unsqueeze(2) + trans.unsqueeze(0)).max(1)  # over the previous tag
        score = torch.where((t <= last).unsqueeze(1), best + emissions[t], score)
        pointers.append(pointer)
    path_score, current = (score + end.unsqueeze(0)).max(1)
    best_last = current
    path = [current]
    for i in range(steps - 1):  # t = steps - 1 ... 1 (a forward range exports to ONNX)
        t = steps - 1 - i
        previous = pointers[t - 1].gather(1, current.unsqueeze(1)).squeeze(1)
        current = torch.where(t <= last, previous, best_last)
        path.append(current)
    paths = torch.stack(path, 0).flip(0).reshape(steps, -1)  # (T, B), rank known to ONNX
    active = torch.arange(steps, device=emissions.device).unsqueeze(1) <= last.unsqueeze(0)
    return paths.masked_fill(~active, 0), path_score


# ---------------------------------------------------------------------------- marginals


def forward_backward(
    emissions: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Log forward and backward scores of a linear-chain CRF, batch first.

    ``emissions`` (B, T, K), ``mask`` (B, T) with its first column on; ``start``, ``end``
    (K,) and ``trans`` (K, K, from -> to) may hold -inf for forbidden moves. Returns
    ``log_alpha`` (B, T, K): the log-sum of the scores of every path prefix ending in tag k
    at t (emission included); ``log_beta`` (B, T, K): of every path suffix after t given
    tag k at t (the end transition included, t's emission not); and ``log_z`` (B,). Values
    past a sequence's end are meaningless. Inference only (no autograd graph is kept)."""
    with torch.no_grad(), torch.autocast(emissions.device.type, enabled=False):
        emissions = emissions.float()
        start, end, trans = start.float(), end.float(), trans.float()
        batch, steps, tags = emissions.shape
        last = mask.long().sum(1) - 1
        # log-space recursions, each step one (B, K) @ (K, K) product of exponentials
        # shifted by their maxima (as the training forward does), not a (B, K, K) logsumexp
        shift = trans.max()
        exp_trans = (trans - shift).exp()
        exp_trans_t = exp_trans.t().contiguous()
        alphas = [start + emissions[:, 0]]
        for t in range(1, steps):
            top = alphas[-1].amax(1, keepdim=True)
            moved = ((alphas[-1] - top).exp() @ exp_trans).log()
            alphas.append(moved + top + shift + emissions[:, t])
        log_alpha = torch.stack(alphas, 1)
        betas = [end.expand(batch, tags)]
        for t in range(steps - 2, -1, -1):
            following = emissions[:, t + 1] + betas[-1]
            top = following.amax(1, keepdim=True)
            step = ((following - top).exp() @ exp_trans_t).log() + top + shift
            betas.append(torch.where((t >= last).unsqueeze(1), end, step))
        log_beta = torch.stack(betas[::-1], 1)
        final = log_alpha.gather(1, last.view(batch, 1, 1).expand(batch, 1, tags)).squeeze(1)
        return log_alpha, log_beta, torch.logsumexp(final + end, 1)


def tag_marginals(log_alpha: Tensor, log_beta: Tensor, log_z: Tensor, mask: Tensor) -> Tensor:
    """P(y_t = k) for every position and tag, ``(B, T, K)``; 0 at padding."""
    probs = (log_alpha + log_beta - log_z.view(-1, 1, 1)).exp()
    return probs.masked_fill(~mask.bool().unsqueeze(2), 0.0)


def chunk_log_probs(
    log_alpha: Tensor,
    log_beta: Tensor,
    log_z: Tensor,
    emissions: Tensor,
    trans: Tensor,
    end: Tensor,
    lengths: Tensor,
    rows: Tensor,
    first: Tensor,
    last: Tensor,
    opens: Tensor,
    continues: Tensor,
) -> Tensor:
    """Log-probabilities of chunks (entities): for chunk i, the summed probability of every
    tag path on which positions ``first[i]..last[i]`` of sequence ``rows[i]`` form exactly
    one chunk, as ``to_iob2`` and conlleval chunk a path (any scheme, valid or not).

    ``opens`` (E, K) marks the tags that begin a chunk of the chunk's type whatever comes
    before (B-X, S-X); ``continues`` (E, K) those that extend one (I-X, E-X), which begin a
    chunk where the tag before is not of the type. So a chunk [s, e] of type X is: at s an
    opening tag, or a continuing tag after a tag of another type (or at the start); at
    s+1..e continuing tags; at e+1 (if any) anything but a continuing tag. Inputs as
    :func:`forward_backward` returns them; all chunks of a batch are scored together."""
    with torch.no_grad(), torch.autocast(emissions.device.type, enabled=False):
        emissions, trans, end = emissions.float(), trans.float(), end.float()
        neg = torch.tensor(float("-inf"), device=emissions.device)
        steps = emissions.shape[1]
        member = opens | continues
        alpha_first = log_alpha[rows, first]  # (E, K)
        before = log_alpha[rows, (first - 1).clamp_min(0)].masked_fill(member, neg)
        after_other = torch.logsumexp(before.unsqueeze(2) + trans, 1) + emissions[rows, first]
        after_other = torch.where((first == 0).unsqueeze(1), alpha_first, after_other)
        score = torch.where(opens, alpha_first, torch.where(continues, after_other, neg))
        span = last - first
        for offset in range(1, int(span.max()) + 1 if len(span) else 1):
            at = (first + offset).clamp_max(steps - 1)
            step = torch.logsumexp(score.unsqueeze(2) + trans, 1) + emissions[rows, at]
            step = step.masked_fill(~continues, neg)
            score = torch.where((offset <= span).unsqueeze(1), step, score)
        following = (last + 1).clamp_max(steps - 1)
        nexts = (emissions[rows, following] + log_beta[rows, following]).unsqueeze(1)
        leave = torch.logsumexp((trans + nexts).masked_fill(continues.unsqueeze(1), neg), 2)
        at_end = (last == lengths[rows] - 1).unsqueeze(1)
        closing = torch.where(at_end, end.expand_as(leave), leave)
        return torch.logsumexp(score + closing, 1) - log_z[rows]
