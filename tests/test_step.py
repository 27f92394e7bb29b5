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


@pytest.mark.parametrize("cell", [torch.nn.LSTM, torch.nn.GRU])
def test_rnn_step_in_training_gives_the_module_loss_and_gradients(cell):
    """Without dropout, a training step through the cells has the module's loss and
    gradients; with it, dropout falls between layers (and nowhere else)."""
    torch.manual_seed(0)
    rnn = cell(5, 8, num_layers=2, batch_first=True).train()
    inputs = torch.randn(3, 6, 5)

    def loss_and_grads(step_by_cells: bool):
        rnn.zero_grad()
        state, outputs = None, []
        for t in range(6):
            if step_by_cells:
                output, state = rnn_step(rnn, inputs[:, t], state)
            else:
                output, state = rnn(inputs[:, t : t + 1], state)
                output = output.squeeze(1)
            outputs.append(output)
        loss = (torch.stack(outputs, 1) ** 2).sum()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in rnn.parameters()]

    loss, grads = loss_and_grads(True)
    expected_loss, expected_grads = loss_and_grads(False)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-6)
    for mine, theirs in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    rnn.dropout = 0.5
    torch.manual_seed(1)
    first = rnn_step(rnn, inputs[:, 0], None)[0]
    torch.manual_seed(2)
    assert not torch.equal(first, rnn_step(rnn, inputs[:, 0], None)[0])  # masks drawn
    # one layer: nothing between layers, so no dropout at all, as in the module
    one_layer = cell(5, 8, batch_first=True).train()
    one_layer.dropout = 0.5
    torch.testing.assert_close(rnn_step(one_layer, inputs[:, 0], None)[0],
                               one_layer(inputs[:, :1])[0][:, 0], rtol=1e-6, atol=1e-6)  # fmt: skip


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


def test_the_translation_loss_and_gradients_of_a_batch_are_unchanged():
    """The lean training step (targets embedded once, the LSTM stepped by cells, the output
    layer over real tokens only) against the step it replaced (embedding and nn.LSTM a
    position at a time, scores for every padded position, padding ignored by the loss)."""
    import torch.nn.functional as F

    from nlp_lstm.tasks.translate import IDS, PairCollator, Seq2Seq, TranslateModelConfig

    torch.manual_seed(0)
    config = TranslateModelConfig(embedding_dim=12, hidden_size=16, num_layers=2, dropout=0.0,
                                  label_smoothing=0.1, tie_embeddings=False)  # fmt: skip
    model = Seq2Seq(config, 50, 60).train()
    rng = torch.Generator().manual_seed(1)
    sources = [torch.randint(4, 50, (n,), generator=rng).tolist() for n in (7, 3, 5, 9)]
    targets = [torch.randint(4, 60, (n,), generator=rng).tolist() for n in (4, 8, 2, 6)]
    batch = PairCollator(sources, targets)([0, 1, 2, 3])

    def gradients(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    loss, count = model(batch)
    lean = gradients(loss)

    decoder = model.decoder

    def old_forward():
        memory, state = model.encode(batch)
        outputs = []
        for position in range(batch.target_in.shape[1]):
            embedded = decoder.dropout(decoder.embedding(batch.target_in[:, position]))
            inputs = torch.cat([embedded, state.feed], dim=-1)
            output, hidden = decoder.rnn(inputs.unsqueeze(1), state.hidden)
            output = output.squeeze(1)
            context, _ = decoder.attention(output, memory.states, memory.keys, memory.mask)
            attentional = torch.tanh(decoder.combine(torch.cat([context, output], dim=-1)))
            state = type(state)(hidden, attentional)
            outputs.append(attentional)
        logits = decoder.logits(torch.stack(outputs, 1))
        return F.cross_entropy(logits.flatten(0, 1), batch.target_out.flatten(),
                               ignore_index=IDS.pad, label_smoothing=0.1, reduction="sum")  # fmt: skip

    old_loss = old_forward()
    old = gradients(old_loss)
    assert int(count) == sum(len(t) + 1 for t in targets)
    torch.testing.assert_close(loss, old_loss, rtol=1e-6, atol=1e-5)
    for (name, _), mine, theirs in zip(model.named_parameters(), lean, old, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_summed_cross_entropy_is_that_of_torch(dtype, label_smoothing):
    """The blockwise loss (150 rows: two full blocks and a partial one) against
    ``F.cross_entropy`` on the float32 logits: the same sum, and the same gradient after
    an upstream scale, in the logits' dtype."""
    import torch.nn.functional as F

    from nlp_lstm.modules.loss import ROWS_PER_BLOCK, summed_cross_entropy

    rows = 2 * ROWS_PER_BLOCK + 22
    generator = torch.Generator().manual_seed(0)
    base = (torch.randn(rows, 300, generator=generator) * 4).to(dtype)
    targets = torch.randint(0, 300, (rows,), generator=generator)
    targets[:3] = base[:3].float().argmax(1)  # confident rows: gradients near zero
    scale = 1 / 37

    mine_logits = base.clone().requires_grad_()
    mine = summed_cross_entropy(mine_logits, targets, label_smoothing)
    (mine * scale).backward()
    theirs_logits = base.clone().requires_grad_()
    theirs = F.cross_entropy(theirs_logits.float(), targets, label_smoothing=label_smoothing,
                             reduction="sum")  # fmt: skip
    (theirs * scale).backward()

    assert mine.dtype == torch.float32 and mine.shape == ()
    assert torch.equal(mine_logits.detach(), base)  # the logits are read, never changed
    torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-3)
    assert mine_logits.grad.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(mine_logits.grad, theirs_logits.grad, rtol=1e-5, atol=1e-8)
    else:  # rounded twice (stored, then scaled) where torch rounds once
        gap = (mine_logits.grad.float() - theirs_logits.grad.float()).abs()
        assert bool((gap <= theirs_logits.grad.float().abs() * 2**-6 + 1e-12).all())
    with torch.no_grad():  # evaluation takes the plain path, same value
        torch.testing.assert_close(summed_cross_entropy(base, targets, label_smoothing), theirs)


def test_summed_cross_entropy_rejects_wrong_shapes():
    from nlp_lstm.modules.loss import summed_cross_entropy

    with pytest.raises(ValueError, match="logits"):
        summed_cross_entropy(torch.zeros(2, 3, 4, requires_grad=True), torch.zeros(2, 3).long())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_keeps_one_minus_p_scaled_and_passes_gradients_through_the_mask(dtype):
    from nlp_lstm.modules.dropout import Dropout, dropout

    torch.manual_seed(0)
    inputs = torch.ones(400, 500, dtype=dtype, requires_grad=True)
    out = dropout(inputs, 0.3, training=True)
    assert out.dtype == dtype
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005  # 200,000 draws: sd 0.001
    torch.testing.assert_close(out[kept].float(), torch.full_like(out[kept].float(), 1 / 0.7),
                               rtol=2**-7, atol=0)  # fmt: skip
    out.sum().backward()
    assert torch.equal(inputs.grad, out.detach())  # d out / d in is the scaled mask
    layer = Dropout(0.3)
    assert dict(layer.state_dict()) == {} and layer.p == 0.3
    layer.eval()
    assert layer(inputs) is inputs  # identity in evaluation
    assert dropout(inputs, 0.0, training=True) is inputs
    assert not dropout(inputs, 1.0, training=True).any()
