"""Greedy and beam search for an :class:`~nlp_lstm.modules.decoder.AttentionDecoder`.

Both decode a whole batch at once: one tensor row per sentence (greedy) or per sentence
and beam (beam search), no Python loop over sentences. The same constraints apply to
both, so beam search with ``beam_size=1`` returns exactly the greedy output: padding and
BOS are never generated, EOS not as the first token, and only EOS once a sentence
reaches its length limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nlp_lstm.modules.decoder import AttentionDecoder, DecoderState, Memory


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the target vocabulary's special tokens."""

    pad: int = 0
    unk: int = 1
    bos: int = 2
    eos: int = 3


def _log_probs(
    decoder: AttentionDecoder, attentional: Tensor, step: int, max_lens: Tensor, ids: SpecialIds
) -> Tensor:
    """Constrained next-token log-probabilities ``(N, V)`` in float32."""
    log_probs = torch.log_softmax(decoder.logits(attentional).float(), dim=-1)
    log_probs[:, ids.pad] = float("-inf")
    log_probs[:, ids.bos] = float("-inf")
    if step == 0:
        log_probs[:, ids.eos] = float("-inf")
    at_limit = max_lens <= step
    if bool(at_limit.any()):
        eos = log_probs[:, ids.eos].clone()
        log_probs[at_limit] = float("-inf")
        log_probs[:, ids.eos] = torch.where(at_limit, eos, log_probs[:, ids.eos])
    return log_probs


def _trim(tokens: Tensor, lengths: Tensor) -> list[list[int]]:
    return [row[:n] for row, n in zip(tokens.tolist(), lengths.tolist(), strict=True)]


def greedy_search(
    decoder: AttentionDecoder,
    memory: Memory,
    state: DecoderState,
    max_lens: Tensor,
    ids: SpecialIds = SpecialIds(),
) -> tuple[list[list[int]], Tensor]:
    """The most probable token at each step, for every sentence at once.

    ``max_lens`` (N,) caps each output's length (EOS excluded; at least 1). Returns the
    token ids of each output (EOS removed) and the attention weights ``(N, T, S)`` of
    every step taken."""
    rows = memory.states.shape[0]
    device = memory.states.device
    max_lens = max_lens.to(device).clamp_min(1)
    tokens = torch.full((rows,), ids.bos, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    lengths = max_lens.clone()
    outputs, weights = [], []
    for step in range(int(max_lens.max()) + 1):
        attentional, state, attention = decoder.step(tokens, state, memory)
        tokens = _log_probs(decoder, attentional, step, max_lens, ids).argmax(-1)
        tokens = tokens.masked_fill(finished, ids.pad)
        ended = (tokens == ids.eos) & ~finished
        lengths = torch.where(ended, torch.full_like(lengths, step), lengths)
        finished |= ended
        outputs.append(tokens)
        weights.append(attention)
        if bool(finished.all()):
            break
    return _trim(torch.stack(outputs, 1), lengths), torch.stack(weights, 1)


def beam_search(
    decoder: AttentionDecoder,
    memory: Memory,
    state: DecoderState,
    max_lens: Tensor,
    beam_size: int = 5,
    length_penalty: float = 1.0,
    ids: SpecialIds = SpecialIds(),
) -> list[list[int]]:
    """Batched beam search; returns the best finished hypothesis of each sentence.

    Each step extends every live hypothesis of every sentence in one tensor of
    ``N * beam_size`` rows and takes the ``2 * beam_size`` best continuations per
    sentence. Those among the first ``beam_size`` that end in EOS are finished: set
    aside and compared by ``score / length ** length_penalty`` (length counts the EOS);
    the best ``beam_size`` others live on. A sentence is done once ``beam_size`` of its
    hypotheses have finished (as in fairseq); done sentences leave the batch once they are
    a quarter of it. ``max_lens`` forces EOS at each limit.
    """
    k = beam_size
    n = memory.states.shape[0]
    device = memory.states.device
    max_lens = max_lens.to(device).clamp_min(1)
    repeat = torch.arange(n, device=device).repeat_interleave(k)
    memory, state = memory.select(repeat), state.select(repeat)
    row_lens = max_lens[repeat]
    limit = int(max_lens.max())
    best_score = torch.full((n,), float("-inf"), device=device)
    best_tokens = torch.full((n, limit), ids.pad, dtype=torch.long, device=device)
    best_lengths = torch.zeros(n, dtype=torch.long, device=device)

    # the sentences still searched (done ones leave the batch), k rows each
    sentences = torch.arange(n, device=device)
    scores = torch.full((n, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live hypothesis per sentence at the start
    tokens = torch.full((n * k,), ids.bos, dtype=torch.long, device=device)
    history = torch.empty(n * k, 0, dtype=torch.long, device=device)
    finished_count = torch.zeros(n, dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)

    for step in range(limit + 1):
        live_n = sentences.shape[0]
        base = torch.arange(live_n, device=device).unsqueeze(1) * k
        attentional, state, _ = decoder.step(tokens, state, memory)
        log_probs = _log_probs(decoder, attentional, step, row_lens, ids)
        vocab = log_probs.shape[-1]
        candidates = (scores.view(-1, 1) + log_probs).view(live_n, k * vocab)
        top_scores, top_index = candidates.topk(2 * k, dim=-1)  # (live_n, 2k)
        top_beam = torch.div(top_index, vocab, rounding_mode="floor")
        top_token = top_index % vocab
        is_eos = top_token == ids.eos

        # set aside the hypotheses that end here
        ends = is_eos[:, :k] & torch.isfinite(top_scores[:, :k]) & ~done.unsqueeze(1)
        normalised = (top_scores[:, :k] / float(step + 1) ** length_penalty).masked_fill(
            ~ends, float("-inf")
        )
        candidate_best, where = normalised.max(dim=1)
        better = candidate_best > best_score[sentences]
        if bool(better.any()):
            source_rows = base.squeeze(1) + top_beam[:, :k].gather(1, where[:, None])[:, 0]
            ended = history[source_rows]  # (live_n, step)
            improved = sentences[better]
            best_tokens[improved] = ids.pad
            best_tokens[improved, :step] = ended[better]
            best_lengths[improved] = step
            best_score[improved] = candidate_best[better]
        finished_count += ends.sum(1)
        done = finished_count >= k
        if bool(done.all()):
            break

        # the best k continuations that do not end live on; once a quarter of the
        # sentences are done, they leave the batch (a copy of the memory: not every step)
        live_scores, live = top_scores.masked_fill(is_eos, float("-inf")).topk(k, dim=-1)
        rows = base + top_beam.gather(1, live)  # (live_n, k)
        tokens = top_token.gather(1, live)
        if 4 * int(done.sum()) >= live_n:
            keep = ~done
            rows, tokens, live_scores = rows[keep], tokens[keep], live_scores[keep]
            sentences, finished_count, done = sentences[keep], finished_count[keep], done[keep]
            memory = memory.select(rows.view(-1))  # every row of a sentence has its source
            row_lens = row_lens[rows.view(-1)]
        rows, tokens = rows.view(-1), tokens.view(-1)
        state = state.select(rows)
        history = torch.cat([history[rows], tokens.unsqueeze(1)], dim=1)
        scores = live_scores
    return _trim(best_tokens, best_lengths)
