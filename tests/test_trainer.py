import copy
import csv
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from nlp_lstm.data.vectors import EmbeddingsConfig, random_rows
from nlp_lstm.data.vocab import Vocab
from nlp_lstm.modules.embeddings import TokenEmbedder
from nlp_lstm.tasks.ner import (
    BiLSTMCRFTagger,
    NERModelConfig,
    TaggingCollator,
    make_evaluate,
    make_loader,
)
from nlp_lstm.train.checkpoint import atomic_save, load_checkpoint
from nlp_lstm.train.trainer import Trainer, TrainerConfig, parameter_groups, seed_everything
from tests.conftest import toy_ner_sentences


def toy(n=64, dropout=0.0, seed=0):
    sentences = toy_ner_sentences(n, seed=seed)
    tokens = [[t for t, _ in s] for s in sentences]
    gold = [[g for _, g in s] for s in sentences]
    tags = Vocab(sorted({g for s in gold for g in s}), specials=())
    words = Vocab.from_counts(Counter(t for s in tokens for t in s))
    chars = Vocab.from_counts(Counter(c for s in tokens for t in s for c in t))
    collator = TaggingCollator(tokens, [tags.encode(g) for g in gold], words, chars)
    seed_everything(seed)
    config = NERModelConfig(
        hidden_size=16, char_dim=8, char_hidden=8, dropout=dropout, word_dropout=0.0
    )
    model = BiLSTMCRFTagger(
        config, random_rows(len(words), 12), EmbeddingsConfig(), len(chars), tags.itos, "iob2"
    )
    return model, collator, make_evaluate(gold, tags, "iob2")


def quiet(**overrides):
    base = dict(
        progress_bar=False, device="cpu", max_epochs=1, lr_schedule="none", gradient_clip_val=None
    )
    return TrainerConfig(**{**base, **overrides})


def test_accumulated_micro_batches_equal_one_large_batch(tmp_path):
    model, collator, evaluate = toy()
    twin = copy.deepcopy(model)
    before = copy.deepcopy(model.state_dict())
    dev = make_loader(collator, 64, shuffle=False)
    micro = DataLoader(
        range(32),
        batch_sampler=[list(range(i, i + 8)) for i in range(0, 32, 8)],
        collate_fn=collator,
    )
    large = DataLoader(range(32), batch_sampler=[list(range(32))], collate_fn=collator)
    sgd = dict(optimizer="sgd", lr=1.0, momentum=0.0)  # one step: parameter change = -gradient
    Trainer(quiet(accumulate_grad_batches=4, **sgd), tmp_path / "a").fit(
        model, micro, dev, evaluate
    )
    Trainer(quiet(accumulate_grad_batches=1, **sgd), tmp_path / "b").fit(twin, large, dev, evaluate)
    changed = 0
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, twin.state_dict()[name], atol=2e-6, rtol=1e-5)
        changed += int(not torch.equal(value, before[name]))
    assert changed > 5
    # and accumulating 4 micro-batches is not the same as stepping after each of them
    stepwise = copy.deepcopy(twin)
    stepwise.load_state_dict(before)
    Trainer(quiet(accumulate_grad_batches=1, **sgd), tmp_path / "c").fit(
        stepwise, micro, dev, evaluate
    )
    assert not torch.allclose(stepwise.head.projection.weight, model.head.projection.weight)


def run_training(tmp_path, name, max_epochs=4, interrupt_at=None, resume=None):
    model, collator, evaluate = toy(dropout=0.3)
    loader = make_loader(collator, 8, shuffle=True, seed=7)
    dev = make_loader(collator, 32, shuffle=False)
    calls = {"n": 0}

    def evaluate_or_crash(m, batches):
        calls["n"] += 1
        if calls["n"] == interrupt_at:
            raise KeyboardInterrupt
        return evaluate(m, batches)

    config = quiet(
        max_epochs=max_epochs,
        optimizer="adam",
        lr=0.01,
        lr_schedule="plateau",
        gradient_clip_val=1.0,
        resume=resume,
    )
    trainer = Trainer(config, tmp_path / name)
    trainer.fit(model, loader, dev, evaluate_or_crash, meta={"task": "toy"})
    return model, trainer


def test_interrupted_run_resumed_ends_where_uninterrupted_run_ends(tmp_path):
    full, full_trainer = run_training(tmp_path, "full")
    with pytest.raises(KeyboardInterrupt):
        run_training(tmp_path, "cut", interrupt_at=3)  # dies in epoch 3, after epoch 2 was saved
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["trainer"]["epoch"] == 2
    resumed, resumed_trainer = run_training(tmp_path, "cut", resume="auto")
    for name, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    timings = ("epoch_seconds", "train_sents_per_s")
    assert [
        {k: v for k, v in r.items() if k not in timings} for r in resumed_trainer.state.history
    ] == [{k: v for k, v in r.items() if k not in timings} for r in full_trainer.state.history]
    last_full = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    last_resumed = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert last_full["trainer"]["step"] == last_resumed["trainer"]["step"]
    for a, b in zip(
        last_full["optimizer"]["state"].values(),
        last_resumed["optimizer"]["state"].values(),
        strict=True,
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"])


def test_run_folder_logs_and_checkpoints(tmp_path):
    model, trainer = run_training(tmp_path, "logs", max_epochs=3)
    run = tmp_path / "logs"
    with open(run / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"train_loss", "lr", "dev_f1", "dev_precision", "dev_recall"} <= set(rows[0])
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert (run / "curves.png").stat().st_size > 1000
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert "optimizer" not in best and {"optimizer", "scheduler", "scaler", "rng"} <= set(last)
    assert best["trainer"]["best_epoch"] == trainer.state.best_epoch
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_early_stopping(tmp_path):
    model, collator, _ = toy()
    loader = make_loader(collator, 16, shuffle=True)
    trainer = Trainer(quiet(max_epochs=20, patience=2), tmp_path / "es")
    trainer.fit(model, loader, loader, lambda m, b: {"f1": 50.0, "n": sum(1 for _ in b)})
    assert trainer.state.epoch == 3 and trainer.state.best_epoch == 1


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "ck.pt"
    atomic_save({"model": {"w": torch.ones(3)}, "meta": {}}, target)

    def torn_save(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"model": {"w": torch.zeros(3)}, "meta": {}}, target)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(target)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cpu_learns(tmp_path, precision):
    model, collator, evaluate = toy(n=96)
    loader = make_loader(collator, 16, shuffle=True)
    trainer = Trainer(
        quiet(max_epochs=4, precision=precision, optimizer="adam", lr=0.02), tmp_path / precision
    )
    seen = []
    original = model.head.forward

    def spy(states):  # emissions come from a Linear, which autocast runs in low precision
        out = original(states)
        seen.append(out.dtype)
        return out

    model.head.forward = spy
    trainer.fit(model, loader, loader, evaluate)
    assert (torch.bfloat16 if precision == "bf16" else torch.float16) in seen
    losses = [row["train_loss"] for row in trainer.state.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] * 0.7


def test_bad_trainer_settings(tmp_path):
    from nlp_lstm.data.errors import ConfigError

    with pytest.raises(ConfigError, match="precision"):
        Trainer(quiet(precision="fp8"), tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cuda"):
            Trainer(quiet(device="cuda"), tmp_path)


def test_lr_scale_moves_the_word_matrix_alone():
    """``lr_scale`` on the embedder gives its word matrix its own optimizer group; one SGD
    step then moves it by exactly ``lr_scale`` times what the same gradient moves at lr."""
    seed_everything(0)
    embedder = TokenEmbedder(
        torch.randn(20, 4),
        num_chars=9,
        char="cnn",
        char_dim=3,
        char_hidden=5,
        dropout=0.0,
        lr_scale=3.0,
    )
    groups = parameter_groups(embedder, 0.1)
    assert [g["lr"] for g in groups] == [0.1, pytest.approx(0.3)]
    assert groups[1]["params"] == [embedder.words.weight]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in embedder.chars.parameters()}
    # the scale survives growing the vocabulary, and unscaled models get one group
    embedder.extend_vocab(torch.zeros(2, 4))
    assert parameter_groups(embedder, 0.1)[1]["params"] == [embedder.words.weight]
    assert len(parameter_groups(TokenEmbedder(torch.randn(5, 4), char="none"), 0.1)) == 1

    before = embedder.words.weight.detach().clone()
    optimizer = torch.optim.SGD(parameter_groups(embedder, 0.1))
    words = torch.tensor([[3, 4]])
    chars = torch.tensor([[0, 0], [1, 2], [3, 4]])
    embedder(words, chars, torch.tensor([[1, 2]])).sum().backward()
    grad = embedder.words.weight.grad.clone()
    optimizer.step()
    assert torch.allclose(embedder.words.weight - before, -0.3 * grad)
