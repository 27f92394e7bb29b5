"""The gates recomputed by nlp_lstm.modules.gates against PyTorch's fused LSTM/GRU."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nlp_lstm.modules.encoder import BiLSTMEncoder
from nlp_lstm.modules.gates import (
    GRU_QUANTITIES,
    LSTM_QUANTITIES,
    final_state,
    gru_gates,
    lstm_gates,
    rnn_gates,
)

ATOL = 1e-5
LENGTHS = torch.tensor([5, 9, 1, 7, 9])  # unsorted, with the full length and a single token
STEPS, DIM, HIDDEN = 9, 6, 5


def make_rnn(kind: str, layers: int, bidirectional: bool, bias: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    cls = nn.LSTM if kind == "lstm" else nn.GRU
    rnn = cls(
        DIM, HIDDEN, num_layers=layers, bidirectional=bidirectional, bias=bias, batch_first=True
    )
    with torch.no_grad():  # larger weights: many gates saturate, in every layer
        for name, param in rnn.named_parameters():
            if name.startswith("weight_ih"):
                param.mul_(6.0 if name.startswith("weight_ih_l0") else 15.0)
            else:
                param.mul_(4.0)
    return rnn.eval()


def make_inputs(batch: int = len(LENGTHS), seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, STEPS, DIM, generator=gen)


def valid_mask(lengths: torch.Tensor, steps: int = STEPS) -> torch.Tensor:
    return torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)


def fused(rnn, inputs, lengths, state=None):
    packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        out, hidden = rnn(packed, state)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=inputs.shape[1])
    return out, hidden


def last_layer_h(gates, rnn):
    last = rnn.num_layers - 1
    parts = [gates[f"l{last}.h"]]
    if rnn.bidirectional:
        parts.append(gates[f"l{last}.reverse.h"])
    return torch.cat(parts, dim=-1)


def check_against_fused(rnn, gates, lengths, out, hidden, quantities):
    directions = 2 if rnn.bidirectional else 1
    expected_keys = {
        f"l{k}.{'reverse.' if d else ''}{q}"
        for k in range(rnn.num_layers)
        for d in range(directions)
        for q in quantities
    }
    assert set(gates) == expected_keys
    batch = len(lengths)
    mask = valid_mask(lengths)
    for value in gates.values():
        assert value.shape == (batch, STEPS, HIDDEN) and value.dtype == torch.float32
        assert not value[~mask].any()  # padded positions are zero everywhere
    mine = last_layer_h(gates, rnn)
    torch.testing.assert_close(mine[mask], out[mask], atol=ATOL, rtol=0)
    # the final states, gathered by hand: forward at length - 1, backward at position 0
    rows = torch.arange(batch)
    finals = {"h": hidden[0] if isinstance(hidden, tuple) else hidden}
    if isinstance(hidden, tuple):
        finals["c"] = hidden[1]
    for q, reference in finals.items():
        for k in range(rnn.num_layers):
            forward = gates[f"l{k}.{q}"][rows, lengths - 1]
            torch.testing.assert_close(forward, reference[k * directions], atol=ATOL, rtol=0)
            if directions == 2:
                backward = gates[f"l{k}.reverse.{q}"][:, 0]
                torch.testing.assert_close(backward, reference[2 * k + 1], atol=ATOL, rtol=0)
    # and the helper that does the same
    mine_final = final_state(rnn, gates, lengths)
    if isinstance(hidden, tuple):
        torch.testing.assert_close(mine_final[0], hidden[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(mine_final[1], hidden[1], atol=ATOL, rtol=0)
    else:
        torch.testing.assert_close(mine_final, hidden, atol=ATOL, rtol=0)


def check_ranges(gates, lengths):
    mask = valid_mask(lengths)
    for name, value in gates.items():
        q = name.rsplit(".", 1)[1]
        if q in ("i", "f", "o", "r", "z"):
            assert value.min() >= 0 and value.max() <= 1, name
        elif q in ("g", "n"):
            assert value.min() >= -1 and value.max() <= 1, name
    layers = {name.split(".")[0] for name in gates}
    for layer in layers:  # not a trivial pass: in every layer many gates are nearly shut or open
        gate_values = torch.cat(
            [v[mask] for n, v in gates.items() if n.startswith(layer + ".") and n[-1] in "iforz"]
        )
        assert ((gate_values < 0.02) | (gate_values > 0.98)).float().mean() > 0.1, layer


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_lstm_matches_fused_module(layers, bidirectional, bias):
    rnn = make_rnn("lstm", layers, bidirectional, bias)
    inputs = make_inputs()
    out, hidden = fused(rnn, inputs, LENGTHS)
    gates = lstm_gates(rnn, inputs, LENGTHS)
    check_against_fused(rnn, gates, LENGTHS, out, hidden, LSTM_QUANTITIES)
    check_ranges(gates, LENGTHS)
    for name, value in gates.items():
        if name.endswith(".h"):
            assert value.abs().max() <= 1
    assert max(v.abs().max() for n, v in gates.items() if n.endswith(".c")) > 1  # c is unbounded


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_gru_matches_fused_module(layers, bidirectional, bias):
    rnn = make_rnn("gru", layers, bidirectional, bias)
    inputs = make_inputs()
    out, hidden = fused(rnn, inputs, LENGTHS)
    gates = gru_gates(rnn, inputs, LENGTHS)
    check_against_fused(rnn, gates, LENGTHS, out, hidden, GRU_QUANTITIES)
    check_ranges(gates, LENGTHS)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_unpadded_batch_and_time_major_inputs(kind):
    rnn = make_rnn(kind, 2, True)
    inputs = make_inputs()
    with torch.no_grad():
        out, hidden = rnn(inputs)
    gates = rnn_gates(rnn, inputs)  # lengths None: every sequence is full length
    full = torch.full((len(inputs),), STEPS)
    quantities = LSTM_QUANTITIES if kind == "lstm" else GRU_QUANTITIES
    check_against_fused(rnn, gates, full, out, hidden, quantities)
    rnn.batch_first = False  # (T, B, D) in, still (B, T, H) out
    time_major = rnn_gates(rnn, inputs.transpose(0, 1).contiguous(), LENGTHS)
    batch_major = rnn_gates(make_rnn(kind, 2, True), inputs, LENGTHS)
    for name, value in batch_major.items():
        torch.testing.assert_close(time_major[name], value, atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_initial_state_is_honoured(kind):
    rnn = make_rnn(kind, 2, True)
    inputs = make_inputs()
    gen = torch.Generator().manual_seed(2)
    shape = (4, len(LENGTHS), HIDDEN)
    h0 = torch.randn(shape, generator=gen).tanh()
    state = (h0, 3 * torch.randn(shape, generator=gen)) if kind == "lstm" else h0
    out, hidden = fused(rnn, inputs, LENGTHS, state)
    gates = rnn_gates(rnn, inputs, LENGTHS, state)
    quantities = LSTM_QUANTITIES if kind == "lstm" else GRU_QUANTITIES
    check_against_fused(rnn, gates, LENGTHS, out, hidden, quantities)
    # the state matters: with zeros the recomputation differs
    zero_state = rnn_gates(rnn, inputs, LENGTHS)
    assert not torch.allclose(zero_state["l1.h"], gates["l1.h"], atol=1e-3)


def test_first_step_by_hand():
    """One LSTM step written out from the documented layout, bias included."""
    rnn = make_rnn("lstm", 1, False)
    inputs = make_inputs()
    gates = lstm_gates(rnn, inputs)
    pre = inputs[:, 0] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + rnn.bias_hh_l0  # h0 = 0
    i, f, g, o = pre.detach().chunk(4, dim=-1)
    c = torch.sigmoid(i) * torch.tanh(g)
    for q, expected in {
        "i": torch.sigmoid(i),
        "f": torch.sigmoid(f),
        "g": torch.tanh(g),
        "o": torch.sigmoid(o),
        "c": c,
        "h": torch.sigmoid(o) * torch.tanh(c),
    }.items():
        torch.testing.assert_close(gates[f"l0.{q}"][:, 0], expected, atol=ATOL, rtol=0)
    assert not any(v.requires_grad for v in gates.values())


def test_bad_inputs():
    inputs = make_inputs()
    with pytest.raises(TypeError, match="nn.LSTM and nn.GRU"):
        rnn_gates(nn.Linear(DIM, HIDDEN), inputs)
    with pytest.raises(TypeError, match="needs an nn.LSTM"):
        lstm_gates(make_rnn("gru", 1, False), inputs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs an nn.GRU"):
        gru_gates(make_rnn("lstm", 1, False), inputs)  # type: ignore[arg-type]
    projected = nn.LSTM(DIM, HIDDEN, proj_size=3, batch_first=True)
    with pytest.raises(ValueError, match="proj_size"):
        rnn_gates(projected, inputs)
    rnn = make_rnn("lstm", 1, False)
    with pytest.raises(ValueError, match="lengths"):
        lstm_gates(rnn, inputs, torch.tensor([5, 10, 1, 7, 9]))
    with pytest.raises(ValueError, match="lengths"):
        lstm_gates(rnn, inputs, torch.tensor([5, 9]))
    with pytest.raises(ValueError, match="features"):
        lstm_gates(rnn, inputs[..., :3])
    with pytest.raises(ValueError, match="shape"):
        lstm_gates(rnn, inputs, state=(torch.zeros(2, 5, HIDDEN), torch.zeros(2, 5, HIDDEN)))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_project_encoder(cell):
    torch.manual_seed(3)
    encoder = BiLSTMEncoder(DIM, HIDDEN, num_layers=2, dropout=0.3, cell=cell).eval()
    order = torch.argsort(LENGTHS, descending=True, stable=True)
    lengths = LENGTHS[order]  # our collate functions sort longest-first
    inputs = make_inputs()[order]
    with torch.no_grad():
        reference = encoder(inputs, lengths, valid_mask(lengths))
    gates = rnn_gates(encoder.rnn, inputs, lengths)
    mask = valid_mask(lengths)
    mine = last_layer_h(gates, encoder.rnn)
    torch.testing.assert_close(mine[mask], reference.states[mask], atol=ATOL, rtol=0)
    assert not mine[~mask].any() and not reference.states[~mask].any()
    mine_final = final_state(encoder.rnn, gates, lengths)
    if cell == "lstm":
        torch.testing.assert_close(mine_final[0], reference.final[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(mine_final[1], reference.final[1], atol=ATOL, rtol=0)
    else:
        torch.testing.assert_close(mine_final, reference.final, atol=ATOL, rtol=0)
