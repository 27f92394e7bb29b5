"""Token-count batches (trainer.batch_tokens): within the budget, every example once per
epoch, sharded evenly, and a model trained on them equal to one given the same batches."""

from __future__ import annotations

import logging
import random
from collections import Counter

import pytest
import torch

from nlp_lstm.contract import Split
from nlp_lstm.data.batching import BucketBatchSampler
from nlp_lstm.train.trainer import Trainer
from tests.toy_jobs import quiet, toy_job


def lengths_with_outliers(count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    lengths = [rng.randint(1, 60) for _ in range(count)]
    for i in rng.sample(range(count), 3):
        lengths[i] = 300  # over a 256-token budget
    return lengths


def padded(batch: list[int], tokens: list[int]) -> int:
    return len(batch) * max(tokens[i] for i in batch)


def test_token_batches_stay_within_the_budget_and_cover_every_example_once(caplog):
    lengths = lengths_with_outliers(500, 0)
    tokens = [n + random.Random(n).randint(0, 5) for n in lengths]  # the longer side
    with caplog.at_level(logging.WARNING):
        sampler = BucketBatchSampler(lengths, 8, seed=3, max_tokens=256, tokens=tokens)
    assert "3 examples hold more than max_tokens=256" in caplog.text
    seen_orders = set()
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(500))
        for batch in batches:
            assert padded(batch, tokens) <= 256 or len(batch) == 1
        alone = [b for b in batches if padded(b, tokens) > 256]
        assert sorted(b[0] for b in alone) == [i for i, t in enumerate(tokens) if t > 256]
        # the budget is used: most batches are over half full
        assert sum(padded(b, tokens) > 128 for b in batches) > 0.8 * len(batches)
        seen_orders.add(tuple(map(tuple, batches)))
    assert len(seen_orders) == 2  # reshuffled every epoch
    evaluation = BucketBatchSampler(lengths, 8, shuffle=False, max_tokens=256)
    assert sorted(i for b in evaluation for i in b) == list(range(500))


@pytest.mark.parametrize("world_size", [2, 3])
def test_token_batches_shard_evenly(world_size):
    lengths = lengths_with_outliers(301, 1)
    ranks = [BucketBatchSampler(lengths, 8, seed=5, rank=r, world_size=world_size, max_tokens=200)
             for r in range(world_size)]  # fmt: skip
    for sampler in ranks:
        sampler.set_epoch(4)
    shares = [list(sampler) for sampler in ranks]
    assert len({len(share) for share in shares}) == 1  # every rank steps equally often
    assert all(len(share) == len(sampler) for share, sampler in zip(shares, ranks, strict=True))
    counts = Counter(i for share in shares for batch in share for i in batch)
    assert set(counts) == set(range(301))
    # padding: fewer than world_size batches, repeated from the start of the list
    whole = [tuple(b) for b in ranks[0].global_batches()]
    short = len(whole) - len(set(whole))
    assert len(whole) % world_size == 0 and short < world_size
    assert whole[len(whole) - short :] == whole[:short]
    assert sum(c - 1 for c in counts.values()) == sum(len(b) for b in whole[:short])


def test_a_model_trained_on_token_batches_equals_one_given_the_same_batches(tmp_path):
    config = quiet(max_epochs=1, batch_tokens=96, seed=7, lr=0.05)
    job = toy_job(n=80, dropout=0.2, seed=1)
    start = {k: v.clone() for k, v in job.model.state_dict().items()}
    sampler = BucketBatchSampler(job.train.lengths, config.batch_size, seed=7, max_tokens=96)
    sampler.set_epoch(1)  # the Trainer's first epoch
    batches = sampler.global_batches()
    assert len({len(b) for b in batches}) > 1  # batch sizes vary with the lengths
    Trainer(config, tmp_path / "tokens").fit(job)
    trained = {k: v.clone() for k, v in job.model.state_dict().items()}

    job = toy_job(n=80, dropout=0.2, seed=1)
    job.model.load_state_dict(start)
    train = job.train
    job.train = Split(train.examples, train.lengths, train.collate,
                      batches=lambda *_: [list(b) for b in batches])  # fmt: skip
    Trainer(quiet(max_epochs=1, seed=7, lr=0.05), tmp_path / "given").fit(job)
    for name, value in job.model.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert any(not torch.equal(trained[k], start[k]) for k in start)


def test_batch_tokens_refuses_a_split_with_fixed_batches(tmp_path):
    from nlp_lstm.errors import ConfigError

    job = toy_job(n=16)
    train = job.train
    job.train = Split(train.examples, train.lengths, train.collate,
                      batches=lambda *_: [[0, 1], [2, 3]])  # fmt: skip
    with pytest.raises(ConfigError, match="batch_tokens"):
        Trainer(quiet(max_epochs=1, batch_tokens=50), tmp_path).fit(job)


def test_token_batches_are_dense_when_the_budgeted_size_is_not_the_length():
    """Pools sort by what the budget counts (translate: the longer side), so batches fill
    their budget even when the bucketing length (the source) says little about it."""
    rng = random.Random(7)
    lengths = [rng.randint(1, 60) for _ in range(3000)]
    tokens = [rng.randint(1, 60) for _ in range(3000)]  # unrelated to the lengths
    sampler = BucketBatchSampler(lengths, 8, seed=1, max_tokens=512, tokens=tokens)
    sampler.set_epoch(1)
    batches = sampler.global_batches()
    fill = sum(padded(b, tokens) for b in batches) / (512 * len(batches))
    assert fill > 0.9, fill
