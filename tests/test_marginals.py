"""CRF marginals and entity probabilities against brute-force enumeration of tag paths."""

import itertools
import math

import pytest
import torch

from nlp_lstm.data.conll import allowed_transitions, to_iob2
from nlp_lstm.modules.crf import CRF, chunk_log_probs, forward_backward
from nlp_lstm.tasks.ner import chunk_masks
from nlp_lstm.train.metrics import entity_chunks

TAGS = {
    "bioes": ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"],
    "iob2": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"],
}


def path_log_scores(emissions, length, start, end, trans):
    """Every tag path of one sequence with its unnormalised log score."""
    tags = emissions.shape[1]
    for path in itertools.product(range(tags), repeat=length):
        score = start[path[0]] + emissions[0, path[0]] + end[path[-1]]
        for t in range(1, length):
            score = score + trans[path[t - 1], path[t]] + emissions[t, path[t]]
        yield path, float(score)


def random_crf(scheme, constrained, seed):
    torch.manual_seed(seed)
    tags = TAGS[scheme]
    constraints = (
        tuple(torch.tensor(m) for m in allowed_transitions(tags, scheme)) if constrained else None
    )
    crf = CRF(len(tags), batch_first=True, constraints=constraints)
    for p in crf.parameters():
        p.data.normal_(0, 1.5)
    return crf, tags


@pytest.mark.parametrize("scheme", ["bioes", "iob2"])
@pytest.mark.parametrize("constrained", [True, False])
def test_marginals_and_entity_probabilities_equal_brute_force(scheme, constrained):
    crf, tags = random_crf(scheme, constrained, seed=3 + constrained)
    crf.requires_grad_(False)
    lengths = torch.tensor([4, 3, 1])
    emissions = torch.randn(3, 4, len(tags)) * 2
    mask = torch.arange(4).unsqueeze(0) < lengths.unsqueeze(1)
    marginals = crf.marginals(emissions, mask)
    assert torch.allclose(marginals.sum(-1)[mask], torch.ones(int(mask.sum())), atol=1e-5)
    assert (marginals[~mask] == 0).all()

    start, end, trans = crf._potentials()
    log_alpha, log_beta, log_z = forward_backward(emissions, mask, start, end, trans)
    for row, length in enumerate(lengths.tolist()):
        paths = list(path_log_scores(emissions[row], length, start, end, trans))
        z = math.log(sum(math.exp(s) for _, s in paths if s > -math.inf))
        assert float(log_z[row]) == pytest.approx(z, abs=1e-4)
        expected = torch.zeros(length, len(tags), dtype=torch.float64)
        chunks: dict[tuple, float] = {}
        for path, score in paths:
            p = math.exp(score - z) if score > -math.inf else 0.0
            for t, k in enumerate(path):
                expected[t, k] += p
            for chunk in entity_chunks(to_iob2([tags[k] for k in path], scheme)):
                chunks[chunk] = chunks.get(chunk, 0.0) + p
        assert torch.allclose(marginals[row, :length].double(), expected, atol=1e-5)
        # every chunk any path can produce, scored at once
        found = sorted(chunks)
        opens, continues = chunk_masks(tags, [kind for kind, _, _ in found])
        log_p = chunk_log_probs(
            log_alpha, log_beta, log_z, emissions, trans, end, lengths,
            torch.full((len(found),), row), torch.tensor([f for _, f, _ in found]),
            torch.tensor([last for _, _, last in found]), opens, continues,
        )  # fmt: skip
        for chunk, value in zip(found, log_p.exp().tolist(), strict=True):
            assert value == pytest.approx(chunks[chunk], abs=1e-5), chunk
