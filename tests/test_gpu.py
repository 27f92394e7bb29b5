"""GPU paths. CI has no GPU: these skip there, and the same code paths are covered on the
CPU by the other tests (bf16 autocast, GradScaler, batch moves)."""

import pytest
import torch

from nlp_lstm import CRF
from nlp_lstm.tasks.ner import make_loader
from nlp_lstm.train.trainer import Trainer
from tests.test_crf import random_case
from tests.test_trainer import quiet, toy

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
    model, collator, evaluate = toy(n=96)
    loader = make_loader(collator, 16, shuffle=True)
    trainer = Trainer(
        quiet(device="cuda", max_epochs=3, precision=precision, optimizer="adam", lr=0.02), tmp_path
    )
    trainer.fit(model, loader, loader, evaluate)
    losses = [row["train_loss"] for row in trainer.state.history]
    assert losses[-1] < losses[0]


def test_training_step_never_waits_for_the_device(tmp_path):
    """One full step (forward, CRF loss, backward, clip, fused Adam) on a batch the Trainer
    moved (pinned, non-blocking), with CUDA's sync debug mode set to error: any .item(),
    .cpu(), blocking copy or other host sync raises."""
    model, collator, _ = toy(n=64)
    model.cuda()
    trainer = Trainer(quiet(device="cuda", optimizer="adam"), tmp_path)
    optimizer = trainer._optimizer(model)
    batch = next(trainer.batches(make_loader(collator, 16, shuffle=True)))
    for _ in range(2):  # the second step runs with warm caches
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            loss = model.loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0, foreach=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        finally:
            torch.cuda.set_sync_debug_mode("default")
