import itertools

import pytest
import torch
import torchcrf

from nlp_lstm import CRF
from nlp_lstm.data.conll import allowed_transitions, is_valid


def random_case(steps, batch, tags, batch_first, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, steps + 1, (batch,), generator=gen)
    lengths[0] = steps
    shape = (batch, steps) if batch_first else (steps, batch)
    emissions = torch.randn(*shape, tags, generator=gen) * scale
    tag_ids = torch.randint(tags, shape, generator=gen)
    mask = torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)
    return emissions, tag_ids, (mask if batch_first else mask.t())


def paired(num_tags, batch_first):
    reference = torchcrf.CRF(num_tags, batch_first=batch_first)
    ours = CRF(num_tags, batch_first=batch_first)
    ours.load_state_dict(reference.state_dict())  # same parameter names
    return reference, ours


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("num_tags", [1, 5, 17])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "token_mean"])
def test_log_likelihood_and_gradients_match_pytorch_crf(batch_first, num_tags, reduction):
    reference, ours = paired(num_tags, batch_first)
    emissions, tags, mask = random_case(9, 6, num_tags, batch_first, seed=num_tags)
    e1 = emissions.clone().requires_grad_()
    e2 = emissions.clone().requires_grad_()
    expected = reference(e1, tags, mask, reduction=reduction)
    got = ours(e2, tags, mask, reduction=reduction)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)
    expected.sum().backward()
    got.sum().backward()
    torch.testing.assert_close(e2.grad, e1.grad, atol=1e-5, rtol=1e-4)
    for name in ("start_transitions", "end_transitions", "transitions"):
        torch.testing.assert_close(
            getattr(ours, name).grad, getattr(reference, name).grad, atol=1e-5, rtol=1e-4
        )


@pytest.mark.filterwarnings("ignore:where received a uint8:UserWarning")  # inside pytorch-crf
@pytest.mark.parametrize("batch_first", [False, True])
def test_decode_matches_pytorch_crf(batch_first):
    reference, ours = paired(9, batch_first)
    for seed in range(5):
        emissions, _, mask = random_case(25, 16, 9, batch_first, seed=seed)
        assert ours.decode(emissions, mask) == reference.decode(emissions, mask)
    emissions, _, _ = random_case(7, 3, 9, batch_first)
    assert ours.decode(emissions) == reference.decode(emissions)


def test_mask_defaults_and_validation():
    crf = CRF(4)
    emissions = torch.randn(5, 2, 4)
    tags = torch.randint(4, (5, 2))
    assert torch.allclose(
        crf(emissions, tags), crf(emissions, tags, torch.ones(5, 2, dtype=torch.bool))
    )
    with pytest.raises(ValueError, match="first timestep"):
        crf(emissions, tags, torch.zeros(5, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="last dimension"):
        crf(torch.randn(5, 2, 3), tags)
    with pytest.raises(ValueError, match="reduction"):
        crf(emissions, tags, reduction="avg")


def brute_force(crf, emissions, length):
    """log Z and best path of one time-first sequence by enumerating every path."""
    start, end, trans = crf._potentials()
    scores = {}
    for path in itertools.product(range(crf.num_tags), repeat=length):
        score = start[path[0]] + emissions[0, path[0]] + end[path[-1]]
        for t in range(1, length):
            score = score + trans[path[t - 1], path[t]] + emissions[t, path[t]]
        scores[path] = score
    values = torch.stack(list(scores.values()))
    return torch.logsumexp(values, 0), max(scores, key=lambda p: scores[p])


@pytest.mark.parametrize("constrained", [False, True])
def test_partition_and_viterbi_equal_brute_force(constrained):
    tag_names = ["O", "B-PER", "I-PER", "B-LOC"]
    crf = CRF(len(tag_names))
    if constrained:
        crf.set_constraints([torch.tensor(m) for m in allowed_transitions(tag_names, "iob2")])
    torch.manual_seed(3)
    emissions = torch.randn(5, 3, len(tag_names)) * 2
    lengths = torch.tensor([5, 3, 1])
    mask = torch.arange(5).unsqueeze(1) < lengths.unsqueeze(0)
    log_z = crf.log_partition(emissions, mask)
    paths = crf.decode(emissions, mask)
    for b, length in enumerate(lengths.tolist()):
        expected_z, expected_path = brute_force(crf, emissions[:length, b], length)
        torch.testing.assert_close(log_z[b], expected_z, atol=1e-5, rtol=1e-5)
        assert tuple(paths[b]) == expected_path


def test_hand_written_backward_passes_gradcheck():
    from nlp_lstm.modules.crf import _LogPartition

    torch.manual_seed(0)
    k = 4
    emissions = torch.randn(6, 3, k, dtype=torch.double, requires_grad=True)
    start = torch.randn(k, dtype=torch.double, requires_grad=True)
    end = torch.randn(k, dtype=torch.double, requires_grad=True)
    trans = torch.randn(k, k, dtype=torch.double, requires_grad=True)
    last = torch.tensor([5, 2, 0])
    assert torch.autograd.gradcheck(_LogPartition.apply, (emissions, start, end, trans, last))


def test_stable_and_accurate_with_large_scores_and_long_padding():
    """Long, mostly padded batches with large scores: float32 results stay finite and
    at least as close to a float64 reference as pytorch-crf's own float32 autograd."""
    reference, ours = paired(17, False)
    emissions, tags, mask = random_case(120, 8, 17, False, seed=7, scale=30.0)
    mask[1:] &= torch.arange(1, 120).unsqueeze(1) < 3  # most sequences end early
    exact = torchcrf.CRF(17).double()
    exact.load_state_dict(reference.state_dict())
    e0 = emissions.double().requires_grad_()
    exact(e0, tags, mask).backward()
    e1, e2 = emissions.clone().requires_grad_(), emissions.clone().requires_grad_()
    reference(e1, tags, mask).backward()
    got = ours(e2, tags, mask)
    got.backward()
    assert torch.isfinite(got) and torch.isfinite(e2.grad).all()
    torch.testing.assert_close(got.double(), exact(e0.detach(), tags, mask), rtol=1e-6, atol=0.05)
    our_error = (e2.grad.double() - e0.grad).abs().max()
    their_error = (e1.grad.double() - e0.grad).abs().max()
    assert our_error <= max(their_error, 1e-4)
    trans_error = (ours.transitions.grad.double() - exact.transitions.grad).abs().max()
    assert trans_error <= max(
        (reference.transitions.grad.double() - exact.transitions.grad).abs().max(), 1e-4
    )


@pytest.mark.parametrize("scheme", ["iob2", "bioes"])
def test_constrained_decoding_never_yields_invalid_sequences(scheme):
    if scheme == "iob2":
        tag_names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    else:
        tag_names = ["O"] + [f"{p}-{k}" for k in ("PER", "LOC") for p in "BIES"]
    constraints = [torch.tensor(m) for m in allowed_transitions(tag_names, scheme)]
    crf = CRF(len(tag_names), batch_first=True, constraints=constraints)
    unconstrained = CRF(len(tag_names), batch_first=True)
    with torch.no_grad():
        for model in (crf, unconstrained):
            model.transitions.normal_(0, 3)  # let bad transitions look attractive
            model.start_transitions.normal_(0, 3)
            model.end_transitions.normal_(0, 3)
        unconstrained.load_state_dict(crf.state_dict())
    emissions, tags, mask = random_case(30, 64, len(tag_names), True, seed=11, scale=4.0)
    paths = [[tag_names[i] for i in p] for p in crf.decode(emissions, mask)]
    assert all(is_valid(p, scheme) for p in paths)
    free = [[tag_names[i] for i in p] for p in unconstrained.decode(emissions, mask)]
    assert not all(is_valid(p, scheme) for p in free)  # the constraint is doing the work
    # constrained training assigns no probability to invalid paths: log Z only counts valid ones
    short = emissions[:1, :3]
    log_z = crf.log_partition(short)
    valid_scores = []
    for path in itertools.product(range(len(tag_names)), repeat=3):
        if is_valid([tag_names[i] for i in path], scheme):
            tags_t = torch.tensor([path])
            valid_scores.append(
                unconstrained(short, tags_t, reduction="sum")
                + unconstrained.log_partition(short)[0]
            )
    torch.testing.assert_close(
        log_z[0], torch.logsumexp(torch.stack(valid_scores), 0), atol=1e-4, rtol=1e-5
    )


def test_viterbi_returns_padded_tensor_and_scores():
    crf = CRF(5, batch_first=True)
    emissions, tags, mask = random_case(8, 4, 5, True, seed=5)
    paths, scores = crf.viterbi(emissions, mask)
    assert paths.shape == (4, 8) and paths.dtype == torch.long
    assert (paths[~mask] == 0).all()
    listed = crf.decode(emissions, mask)
    for row, path in enumerate(listed):
        assert paths[row, : len(path)].tolist() == path
        # the path score is the unnormalised score of that path
        expected = crf(
            emissions[row : row + 1], paths[row : row + 1], mask[row : row + 1]
        ) + crf.log_partition(emissions[row : row + 1], mask[row : row + 1])
        torch.testing.assert_close(
            scores[row], expected[0] if expected.dim() else expected, atol=1e-4, rtol=1e-5
        )


def test_works_under_bf16_autocast():
    crf = CRF(5, batch_first=True)
    emissions, tags, mask = random_case(8, 4, 5, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        llh = crf(emissions.bfloat16(), tags, mask)
    assert llh.dtype == torch.float32 and torch.isfinite(llh)


def _grads(crf, emissions, tags, mask):
    emissions = emissions.clone().requires_grad_()
    llh = crf(emissions, tags, mask, reduction="sum")
    params = [crf.start_transitions, crf.end_transitions, crf.transitions]
    return llh, torch.autograd.grad(llh, [emissions, *params])


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("constrained", [False, True])
def test_scripted_crf_matches_eager(batch_first, constrained):
    """torch.jit.script(CRF) gives the eager log-likelihood, gradients, log Z and paths."""
    tags_list = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    constraints = allowed_transitions(tags_list, "iob2") if constrained else None
    crf = CRF(5, batch_first=batch_first, constraints=constraints)
    with torch.no_grad():
        crf.transitions.normal_()
    scripted = torch.jit.script(crf)
    assert isinstance(scripted, torch.jit.ScriptModule)
    emissions, tags, mask = random_case(11, 7, 5, batch_first, seed=3)
    if constrained:  # gold paths the constraints allow: all O
        tags = torch.zeros_like(tags)
    llh, grads = _grads(crf, emissions, tags, mask)
    llh_s, grads_s = _grads(scripted, emissions, tags, mask)
    torch.testing.assert_close(llh_s, llh, atol=1e-4, rtol=1e-5)
    for got, expected in zip(grads_s, grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        scripted.log_partition(emissions, mask), crf.log_partition(emissions, mask)
    )
    assert scripted.decode(emissions, mask) == crf.decode(emissions, mask)
    for got, expected in zip(
        scripted.viterbi(emissions, mask), crf.viterbi(emissions, mask), strict=True
    ):
        torch.testing.assert_close(got, expected)


def test_crf_under_torch_compile_matches_eager():
    """torch.compile(CRF): the same log-likelihood, gradients and Viterbi paths."""
    torch._dynamo.reset()
    crf = CRF(5, batch_first=True)
    emissions, tags, mask = random_case(6, 3, 5, True, seed=5)
    llh, grads = _grads(crf, emissions, tags, mask)
    llh_c, grads_c = _grads(torch.compile(crf), emissions, tags, mask)
    torch.testing.assert_close(llh_c, llh, atol=1e-4, rtol=1e-5)
    for got, expected in zip(grads_c, grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    paths, scores = torch.compile(crf.viterbi)(emissions, mask)
    assert torch.equal(paths, crf.viterbi(emissions, mask)[0])


def test_repr_and_error_messages_are_pytorch_crf_s_word_for_word():
    import torchcrf

    assert repr(CRF(10)) == repr(torchcrf.CRF(10)) == "CRF(num_tags=10)"
    assert repr(CRF(10, batch_first=True)) == "CRF(num_tags=10, batch_first=True)"
    long = torch.long
    cases = [
        (torch.randn(2, 3), torch.zeros(2, 3, dtype=long), None),  # emissions not 3-d
        (torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=long), None),  # wrong tag count
        (torch.randn(2, 3, 5), torch.zeros(2, 2, dtype=long), None),  # tags' shape
        (torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=long), torch.ones(2, dtype=torch.bool)),
        (torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=long), torch.zeros(2, 3, dtype=torch.bool)),
    ]
    for batch_first in (False, True):
        ours, reference = CRF(5, batch_first), torchcrf.CRF(5, batch_first)
        for emissions, tags, mask in cases:
            messages = []
            for crf in (ours, reference):
                with pytest.raises(ValueError) as caught:
                    crf(emissions, tags, mask)
                messages.append(str(caught.value))
            assert messages[0] == messages[1]
