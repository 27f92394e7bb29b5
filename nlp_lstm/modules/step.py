"""One time step of a trained ``nn.LSTM`` / ``nn.GRU``, for generating and decoding a token
at a time.

On a CPU, ``nn.LSTM`` runs through oneDNN's sequence kernel, which prepares (reorders) the
weights at every call: for a sequence that is paid once, but a decoder calling the module
once per token pays it at every token, about ten times the step's own arithmetic (a 2 x
512 char LM: ~4 ms a step against ~0.4 ms). :func:`rnn_step` runs the same step layer by
layer with ATen's fused cell kernels (``torch.lstm_cell``, ``torch.gru_cell``, those of
ATen's own LSTM), which read the weights as they are: the same arithmetic, equal outputs
to float rounding (~1e-7). In training, autograd runs through the cells (~20% less time
than through the sequence kernel for a 2 x 256 decoder at batch 140 on one thread).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nlp_lstm.modules.dropout import dropout

RNNState = Tensor | tuple[Tensor, Tensor]


def rnn_step(
    rnn: nn.LSTM | nn.GRU, inputs: Tensor, state: RNNState | None
) -> tuple[Tensor, RNNState]:
    """One step: ``inputs`` ``(N, input_size)`` and the state in the module's own layout
    (LSTM ``(h, c)``, GRU ``h``, each ``(layers, N, H)``; None: zeros) -> the last layer's
    output ``(N, H)`` and the new state, as ``rnn(inputs.unsqueeze(1), state)`` gives them.
    In training mode the module's dropout falls on each layer's output but the last, as
    ``nn.LSTM`` applies it (with masks of its own drawing).

    A bidirectional module, or one with projections or without biases, is simply called."""
    if rnn.bidirectional or getattr(rnn, "proj_size", 0) or not rnn.bias:
        output, state = rnn(inputs.unsqueeze(1), state)
        return output.squeeze(1), state
    lstm = isinstance(rnn, nn.LSTM)
    if state is None:
        zeros = inputs.new_zeros(rnn.num_layers, inputs.shape[0], rnn.hidden_size)
        state = (zeros, zeros) if lstm else zeros
    weights = rnn.all_weights  # per layer: weight_ih, weight_hh, bias_ih, bias_hh
    hs, cs = [], []
    x = inputs
    for layer in range(rnn.num_layers):
        if layer and rnn.training and rnn.dropout:
            x = dropout(x, rnn.dropout, training=True)
        w_ih, w_hh, b_ih, b_hh = weights[layer]
        if lstm:
            h, c = torch.lstm_cell(x, (state[0][layer], state[1][layer]), w_ih, w_hh, b_ih, b_hh)
            cs.append(c)
        else:
            h = torch.gru_cell(x, state[layer], w_ih, w_hh, b_ih, b_hh)
        hs.append(h)
        x = h
    if lstm:
        return x, (torch.stack(hs), torch.stack(cs))
    return x, torch.stack(hs)
