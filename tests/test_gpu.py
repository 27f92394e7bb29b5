"""GPU paths. CI has no GPU: these skip there, and the same code paths are covered on the
CPU by the other tests (bf16 autocast, GradScaler, batch moves)."""

import pytest
import torch

from nlp_lstm import CRF
from nlp_lstm.train.optim import build_optimizer
from nlp_lstm.train.trainer import Trainer
from tests.test_crf import random_case
from tests.toy_jobs import quiet, toy_job

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_crf_on_cuda_matches_cpu():
    cpu = CRF(9, batch_first=True)
    gpu = CRF(9, batch_first=True).cuda()
    gpu.load_state_dict(cpu.state_dict())
    emissions, tags, mask = random_case(30, 64, 9, True, seed=1)
    torch.testing.assert_close(
        gpu(emissions.cuda(), tags.cuda(), mask.cuda()).cpu(),
        cpu(emissions, tags, mask),
        rtol=1e-5,
        atol=1e-3,
    )
    assert gpu.decode(emissions.cuda(), mask.cuda()) == cpu.decode(emissions, mask)


@pytest.mark.parametrize("precision", ["32", "bf16", "fp16"])
def test_training_on_cuda(tmp_path, precision):
    job = toy_job(n=96)
    config = quiet(
        device="cuda", max_epochs=3, batch_size=16, precision=precision, optimizer="adam", lr=0.02
    )
    trainer = Trainer(config, tmp_path)
    trainer.fit(job)
    losses = [row["train_loss"] for row in trainer.state.history]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("precision", ["32", "bf16", "fp16"])
def test_training_step_never_waits_for_the_device(tmp_path, precision):
    """The Trainer's own step (forward, CRF loss, backward through the GradScaler, divide by
    the count, clip, fused Adam) on batches it moved (pinned, non-blocking), with CUDA's
    sync debug mode set to error: any .item(), .cpu(), blocking copy or other host sync
    raises."""
    job = toy_job(n=64)
    config = quiet(device="cuda", batch_size=16, optimizer="adam", precision=precision)
    config.gradient_clip_val = 5.0
    trainer = Trainer(config, tmp_path)
    model = job.model.to(trainer.device)
    optimizer = build_optimizer(model, trainer.config)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    batches = list(trainer.batches(trainer.loader(job.train, train=True), limit=3))
    torch.cuda.synchronize()
    for batch in batches:  # the first step warms the caches; all must run without a sync
        torch.cuda.set_sync_debug_mode("error")
        try:
            trainer.train_step(model, batch, optimizer, scaler)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_translation_search_on_cuda_matches_cpu():
    from nlp_lstm.data.batching import move_batch
    from nlp_lstm.tasks.translate import DecodeConfig
    from tests.test_translate import source_batch, tiny_model

    model = tiny_model(vocab=40, seed=4, hidden_size=32)
    batch = source_batch([[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]])
    with torch.no_grad():
        expected = [model.translate(batch, DecodeConfig(), k)[0] for k in (1, 5)]
        model.cuda()
        on_gpu = move_batch(batch, torch.device("cuda"))
        assert [model.translate(on_gpu, DecodeConfig(), k)[0] for k in (1, 5)] == expected


def test_rnn_step_on_cuda_matches_the_module():
    from nlp_lstm.modules.step import rnn_step

    torch.manual_seed(0)
    rnn = torch.nn.LSTM(16, 32, num_layers=2, batch_first=True).cuda().eval()
    inputs = torch.randn(5, 12, 16, device="cuda")
    with torch.no_grad():
        expected, _ = rnn(inputs)
        state, outputs = None, []
        for t in range(12):
            output, state = rnn_step(rnn, inputs[:, t], state)
            outputs.append(output)
    torch.testing.assert_close(torch.stack(outputs, 1), expected, rtol=1e-4, atol=1e-5)
