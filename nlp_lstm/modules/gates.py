"""Every gate of a trained ``nn.LSTM`` / ``nn.GRU``, recomputed exactly from its own weights.

PyTorch's fused recurrent modules return only the hidden states (and the last cell state);
the gates never leave the kernel. The functions here rerun the recurrence step by step in
plain tensor code from the module's parameters, so that every gate can be inspected.

Parameter layout (``k`` the layer, suffix ``_reverse`` for the backward direction):

* LSTM: ``weight_ih_l{k}`` ``(4H, D)`` and ``weight_hh_l{k}`` ``(4H, H)`` stack the rows of
  ``W_i | W_f | W_g | W_o`` (input gate, forget gate, cell candidate, output gate);
  ``bias_ih_l{k}`` and ``bias_hh_l{k}`` ``(4H,)`` likewise (absent with ``bias=False``)::

      i  = sigmoid(W_ii x + b_ii + W_hi h + b_hi)
      f  = sigmoid(W_if x + b_if + W_hf h + b_hf)
      g  = tanh(W_ig x + b_ig + W_hg h + b_hg)
      o  = sigmoid(W_io x + b_io + W_ho h + b_ho)
      c' = f * c + i * g
      h' = o * tanh(c')

* GRU: the rows stack ``W_r | W_z | W_n`` (reset gate, update gate, candidate)::

      r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
      z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
      n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
      h' = (1 - z) * n + z * h

Layer ``k + 1`` reads the concatenation ``[forward h, backward h]`` of layer ``k``. The
recomputation is that of the **eval-mode** module: the dropout ``nn.LSTM``/``nn.GRU`` apply
between layers in training mode is not reproduced.

Padded batches of mixed lengths follow the packed fused module (``pack_padded_sequence``):
the forward direction runs over each sequence's own tokens, the backward direction starts
at each sequence's own last token (position ``length - 1``) from the initial state, and
every returned quantity is zero at positions past a sequence's length.

The result is a dict keyed ``"l{layer}.{q}"`` (forward direction) and
``"l{layer}.reverse.{q}"`` (backward direction), ``q`` in ``i, f, g, o, c, h`` (LSTM) or
``r, z, n, h`` (GRU); each value is ``(batch, positions, hidden)`` with positions in the
input's order for both directions. :func:`final_state` gathers the final states from it in
the fused module's ``h_n`` / ``(h_n, c_n)`` layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LSTM_QUANTITIES = ("i", "f", "g", "o", "c", "h")
GRU_QUANTITIES = ("r", "z", "n", "h")

RNNState = Tensor | tuple[Tensor, Tensor]


def gate_name(layer: int, quantity: str, reverse: bool = False) -> str:
    """The key of one quantity: ``"l0.f"``, ``"l1.reverse.h"``, ..."""
    return f"l{layer}.reverse.{quantity}" if reverse else f"l{layer}.{quantity}"


def lstm_gates(
    rnn: nn.LSTM,
    inputs: Tensor,
    lengths: Tensor | None = None,
    state: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Recompute ``i, f, g, o, c, h`` of every layer and direction of ``rnn``.

    Args:
        rnn: the LSTM (``proj_size == 0``).
        inputs: ``(B, T, D)`` (``(T, B, D)`` when ``rnn.batch_first`` is False).
        lengths: ``(B,)`` valid lengths (each ``1..T``), as for ``pack_padded_sequence``;
            ``None``: every sequence is ``T`` long.
        state: ``(h0, c0)``, each ``(layers * directions, B, H)``; ``None``: zeros.

    Returns:
        ``{"l{k}.{q}" / "l{k}.reverse.{q}": (B, T, H)}``, always batch-first.
    """
    if not isinstance(rnn, nn.LSTM):
        raise TypeError(f"lstm_gates needs an nn.LSTM, got {type(rnn).__name__}")
    if rnn.proj_size > 0:
        raise ValueError(
            f"lstm_gates does not support LSTMs with projections (proj_size={rnn.proj_size}); "
            "only proj_size == 0"
        )
    return _recompute(rnn, inputs, lengths, state, "lstm")


def gru_gates(
    rnn: nn.GRU,
    inputs: Tensor,
    lengths: Tensor | None = None,
    state: Tensor | None = None,
) -> dict[str, Tensor]:
    """Recompute ``r, z, n, h`` of every layer and direction of ``rnn``.

    Arguments as for :func:`lstm_gates`; ``state`` is ``h0``
    ``(layers * directions, B, H)`` or ``None`` (zeros).
    """
    if not isinstance(rnn, nn.GRU):
        raise TypeError(f"gru_gates needs an nn.GRU, got {type(rnn).__name__}")
    return _recompute(rnn, inputs, lengths, state, "gru")


def rnn_gates(
    rnn: nn.Module,
    inputs: Tensor,
    lengths: Tensor | None = None,
    state: RNNState | None = None,
) -> dict[str, Tensor]:
    """:func:`lstm_gates` or :func:`gru_gates`, by the type of ``rnn``."""
    if isinstance(rnn, nn.LSTM):
        return lstm_gates(rnn, inputs, lengths, state)  # type: ignore[arg-type]
    if isinstance(rnn, nn.GRU):
        return gru_gates(rnn, inputs, lengths, state)  # type: ignore[arg-type]
    raise TypeError(f"rnn_gates supports nn.LSTM and nn.GRU, got {type(rnn).__name__}")


def final_state(
    rnn: nn.LSTM | nn.GRU, gates: dict[str, Tensor], lengths: Tensor | None = None
) -> RNNState:
    """The final states in the fused module's layout: ``h_n`` (GRU) or ``(h_n, c_n)`` (LSTM),
    each ``(layers * directions, B, H)``: the forward direction's state at each sequence's
    position ``length - 1``, the backward direction's at position 0."""
    directions = 2 if rnn.bidirectional else 1
    first = gates[gate_name(0, "h")]
    batch, steps = first.shape[:2]
    last = _check_lengths(lengths, batch, steps) - 1
    index = last.to(first.device).view(batch, 1, 1).expand(batch, 1, first.shape[2])

    def gather(quantity: str) -> Tensor:
        finals = []
        for layer in range(rnn.num_layers):
            finals.append(gates[gate_name(layer, quantity)].gather(1, index).squeeze(1))
            if directions == 2:
                finals.append(gates[gate_name(layer, quantity, reverse=True)][:, 0])
        return torch.stack(finals)

    if isinstance(rnn, nn.LSTM):
        return gather("h"), gather("c")
    return gather("h")


def _check_lengths(lengths: Tensor | None, batch: int, steps: int) -> Tensor:
    """``lengths`` as a CPU int64 ``(B,)`` tensor, each in ``1..T``."""
    if lengths is None:
        return torch.full((batch,), steps, dtype=torch.long)
    lengths = torch.as_tensor(lengths).detach().to("cpu", torch.long).reshape(-1)
    if lengths.numel() != batch:
        raise ValueError(f"lengths has {lengths.numel()} entries for a batch of {batch}")
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ValueError(f"lengths must lie in 1..{steps} (the padded length), got {lengths}")
    return lengths


def _initial_state(
    state: RNNState | None, cell: str, count: int, batch: int, hidden: int, like: Tensor
) -> tuple[Tensor, Tensor | None]:
    """``(h0, c0)`` as ``(layers * directions, B, H)`` tensors (``c0`` None for a GRU)."""
    shape = (count, batch, hidden)
    if state is None:
        zeros = like.new_zeros(shape)
        return zeros, (zeros if cell == "lstm" else None)
    if cell == "lstm":
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ValueError("an LSTM's state is a pair (h0, c0)")
        h0, c0 = state
    else:
        if not isinstance(state, Tensor):
            raise ValueError("a GRU's state is one tensor h0")
        h0, c0 = state, None
    for name, tensor in (("h0", h0), ("c0", c0)):
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    return h0, c0


@torch.no_grad()
def _recompute(
    rnn: nn.LSTM | nn.GRU,
    inputs: Tensor,
    lengths: Tensor | None,
    state: RNNState | None,
    cell: str,
) -> dict[str, Tensor]:
    if inputs.dim() != 3:
        raise ValueError(f"inputs must be 3-D (batched), got shape {tuple(inputs.shape)}")
    if not rnn.batch_first:
        inputs = inputs.transpose(0, 1)
    batch, steps, size = inputs.shape
    if size != rnn.input_size:
        raise ValueError(f"inputs have {size} features, the module expects {rnn.input_size}")
    hidden = rnn.hidden_size
    directions = 2 if rnn.bidirectional else 1
    lengths = _check_lengths(lengths, batch, steps)
    # (B, T, 1): which positions are real tokens
    valid = (torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)).to(inputs.device)
    valid = valid.unsqueeze(-1)
    h0, c0 = _initial_state(state, cell, rnn.num_layers * directions, batch, hidden, inputs)
    quantities = LSTM_QUANTITIES if cell == "lstm" else GRU_QUANTITIES

    out: dict[str, Tensor] = {}
    layer_input = inputs
    for layer in range(rnn.num_layers):
        outputs = []
        for direction in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            w_ih = getattr(rnn, "weight_ih" + suffix)
            w_hh = getattr(rnn, "weight_hh" + suffix)
            b_ih = getattr(rnn, "bias_ih" + suffix) if rnn.bias else None
            b_hh = getattr(rnn, "bias_hh" + suffix) if rnn.bias else None
            x_part = F.linear(layer_input, w_ih, b_ih)  # (B, T, G * H), all positions at once
            slot = layer * directions + direction
            h = h0[slot]
            c = c0[slot] if c0 is not None else None
            records: dict[str, list[Tensor]] = {q: [] for q in quantities}  # in running order
            order = range(steps - 1, -1, -1) if direction else range(steps)
            for t in order:
                h_part = F.linear(h, w_hh, b_hh)
                if cell == "lstm":
                    i, f, g, o = (x_part[:, t] + h_part).chunk(4, dim=-1)
                    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
                    c_new = f * c + i * g
                    h_new = o * c_new.tanh()
                    step = {"i": i, "f": f, "g": g, "o": o, "c": c_new, "h": h_new}
                else:
                    x_r, x_z, x_n = x_part[:, t].chunk(3, dim=-1)
                    h_r, h_z, h_n = h_part.chunk(3, dim=-1)
                    r = (x_r + h_r).sigmoid()
                    z = (x_z + h_z).sigmoid()
                    n = (x_n + r * h_n).tanh()
                    h_new = n + z * (h - n)  # = (1 - z) * n + z * h, as ATen computes it
                    step = {"r": r, "z": z, "n": n, "h": h_new}
                # padded positions leave the state as it is (the backward direction thus
                # starts at each sequence's own last token) and record zeros
                keep = valid[:, t]
                h = torch.where(keep, h_new, h)
                if c is not None:
                    c = torch.where(keep, step["c"], c)
                for q in quantities:
                    records[q].append(step[q].masked_fill(~keep, 0.0))
            for q in quantities:
                steps_in_order = records[q][::-1] if direction else records[q]
                out[gate_name(layer, q, reverse=bool(direction))] = torch.stack(steps_in_order, 1)
            outputs.append(out[gate_name(layer, "h", reverse=bool(direction))])
        layer_input = torch.cat(outputs, dim=-1)
    return out
