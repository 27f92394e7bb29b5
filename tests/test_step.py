"""rnn_step, the one-step path of generation and decoding: equal to the fused module's
step, and the char LM's samples and the translator's outputs unchanged by it."""

from __future__ import annotations

import pytest
import torch

import nlp_lstm
from nlp_lstm.modules.sampling import sample_next
from nlp_lstm.modules.step import rnn_step


@pytest.mark.parametrize("cell", [torch.nn.LSTM, torch.nn.GRU])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_rnn_step_equals_the_module_step_by_step(cell, layers):
    torch.manual_seed(layers)
    rnn = cell(7, 11, num_layers=layers, batch_first=True, dropout=0.3 if layers > 1 else 0.0)
    rnn.eval()
    inputs = torch.randn(4, 9, 7) * 3  # large inputs: saturated gates too
    expected, expected_state = rnn(inputs)
    state, outputs = None, []
    for t in range(9):
        output, state = rnn_step(rnn, inputs[:, t], state)
        outputs.append(output)
    torch.testing.assert_close(torch.stack(outputs, 1), expected, rtol=0, atol=1e-6)
    for mine, theirs in zip(state if cell is torch.nn.LSTM else (state,),
                            expected_state if cell is torch.nn.LSTM else (expected_state,), strict=True):  # fmt: skip
        assert mine.shape == theirs.shape
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)


def test_rnn_step_in_training_is_the_module_with_its_dropout():
    torch.manual_seed(0)
    rnn = torch.nn.LSTM(5, 8, num_layers=2, batch_first=True, dropout=0.5).train()
    inputs = torch.randn(3, 5)
    torch.manual_seed(1)
    output, _ = rnn_step(rnn, inputs, None)
    torch.manual_seed(1)
    expected, _ = rnn(inputs.unsqueeze(1))
    assert torch.equal(output, expected.squeeze(1))
    output.sum().backward()
    assert rnn.weight_ih_l0.grad is not None


def module_samples(model, prompt: list[int], length: int, seed: int, **sampling) -> list[int]:
    """The char LM's samples stepping the module itself (the path before rnn_step)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        logits, state = model.logits(torch.tensor([prompt]))
        out = []
        for _ in range(length):
            scores = logits[:, -1].float()
            scores[:, [0, 1]] = float("-inf")
            next_id = sample_next(scores, generator=generator, **sampling)
            out.append(int(next_id))
            logits, state = model.logits(next_id.unsqueeze(1), state)
    return out


def test_char_lm_samples_are_those_of_the_module_step(trained_models):
    model = nlp_lstm.load(trained_models["ckpt"]["charlm"], "cpu").model
    prompt = [5, 9, 3]
    for seed, sampling in ((0, {"temperature": 0.8}), (1, {"temperature": 1.0, "top_p": 0.9}),
                           (2, {"temperature": 0.7, "top_k": 4}), (3, {"temperature": 0.0})):  # fmt: skip
        generator = torch.Generator().manual_seed(seed)
        mine = model.generate(prompt, 200, generator=generator, **sampling)
        assert mine == module_samples(model, prompt, 200, seed, **sampling), sampling


def test_translations_are_those_of_the_module_step(trained_models):
    translator = nlp_lstm.load(trained_models["ckpt"]["translate"], "cpu")
    sources = (trained_models["root"] / "mt_dev.de").read_text().splitlines()
    decoder = translator.model.decoder
    for beam in (1, 5):
        mine = [t.text for t in translator.translate(sources, beam_size=beam)]

        def module_step(inputs, hidden):
            output, hidden = decoder.rnn(inputs.unsqueeze(1), hidden)
            return output.squeeze(1), hidden

        decoder.recur = module_step
        try:
            theirs = [t.text for t in translator.translate(sources, beam_size=beam)]
        finally:
            del decoder.recur
        assert mine == theirs, beam
