import copy
import csv
import os

import pytest
import torch

from nlp_lstm.checkpoint import load_checkpoint
from nlp_lstm.config import to_dataclass
from nlp_lstm.errors import ConfigError, UserError
from nlp_lstm.files import atomic_save
from nlp_lstm.modules.embeddings import TokenEmbedder
from nlp_lstm.train.optim import parameter_groups
from nlp_lstm.train.process import seed_everything
from nlp_lstm.train.settings import TrainerConfig
from nlp_lstm.train.trainer import Trainer
from tests.cli_helpers import run_main
from tests.toy_jobs import fake_job, quiet, random_values, toy_job, values_split

SGD = dict(optimizer="sgd", lr=0.1, momentum=0.0)  # one step: parameter change = -lr * gradient

# ---------------------------------------------------------------------------- the contract


def test_one_step_divides_the_summed_loss_once_by_the_count_of_the_step(tmp_path):
    """Four micro-batches of different sizes accumulate into one SGD step: the step is
    the gradient of the mean over every value of the step, and the epoch loss is weighted
    by counts, not a mean of batch means."""
    examples = random_values(16, seed=3)
    values = [v for e in examples for v in e]
    job = fake_job(examples, lambda outputs, split: {"metric": 0.0}, start=1.5)
    trainer = Trainer(quiet(batch_size=4, accumulate_grad_batches=4, **SGD), tmp_path)
    trainer.fit(job)
    mean = sum(values) / len(values)
    assert trainer.state.step == 1
    assert job.model.w.item() == pytest.approx(1.5 - 0.1 * 2 * (1.5 - mean), abs=1e-6)
    row = trainer.state.history[0]
    weighted = sum((1.5 - v) ** 2 for v in values) / len(values)
    assert row["train_loss"] == pytest.approx(weighted, rel=1e-6)
    batches = trainer.loader(job.train, train=True).batch_sampler.global_batches()
    batch_means = [
        sum((1.5 - v) ** 2 for i in b for v in examples[i]) / sum(len(examples[i]) for i in b)
        for b in batches
    ]
    assert row["train_loss"] != pytest.approx(sum(batch_means) / len(batch_means), rel=1e-3)


@pytest.mark.parametrize("mode, best_epoch", [("max", 4), ("min", 2)])
def test_best_epoch_follows_the_direction_of_the_metric(tmp_path, mode, best_epoch):
    script = iter([3.0, 1.0, 2.0, 5.0, 4.0])
    job = fake_job(
        random_values(8), lambda outputs, split: {"metric": next(script), "n": len(split)}, mode
    )
    trainer = Trainer(quiet(max_epochs=5, patience=0, **SGD), tmp_path)
    best = trainer.fit(job)
    assert trainer.state.best_epoch == best_epoch
    assert best["metric"] == [3.0, 1.0, 2.0, 5.0, 4.0][best_epoch - 1]
    saved = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert saved.payload["trainer"]["best_epoch"] == best_epoch


def test_predictions_come_back_in_example_order(tmp_path):
    examples = random_values(23, seed=5)
    job = fake_job(examples, lambda outputs, split: {"metric": 0.0})
    trainer = Trainer(quiet(eval_batch_size=4), None)
    visited = [i for b in trainer.loader(job.dev, train=False) for i in b.indices.tolist()]
    assert visited != sorted(visited)  # batches run longest first, not in example order
    split, outputs = trainer.predict(job.model, job.dev, job.predict)
    assert outputs == list(range(23)) and split is job.dev
    # a cut evaluation scores exactly what was predicted, and says so through the split
    cut = Trainer(quiet(eval_batch_size=4, limit_eval_batches=2), None)
    split, outputs = cut.predict(job.model, job.dev, job.predict)
    assert len(outputs) == len(split) == 8
    assert outputs == sorted(visited[:8])
    assert split.examples == [examples[i] for i in outputs]


def test_accumulated_micro_batches_equal_one_large_batch(tmp_path):
    job = toy_job(n=32)
    twin = copy.deepcopy(job)
    before = copy.deepcopy(job.model.state_dict())
    Trainer(quiet(batch_size=8, accumulate_grad_batches=4, **SGD), tmp_path / "a").fit(job)
    Trainer(quiet(batch_size=32, **SGD), tmp_path / "b").fit(twin)
    changed = 0
    for name, value in job.model.state_dict().items():
        torch.testing.assert_close(value, twin.model.state_dict()[name], atol=2e-6, rtol=1e-5)
        changed += int(not torch.equal(value, before[name]))
    assert changed > 5
    # and stepping after each micro-batch is something else
    stepwise = copy.deepcopy(twin)
    stepwise.model.load_state_dict(before)
    Trainer(quiet(batch_size=8, **SGD), tmp_path / "c").fit(stepwise)
    assert not torch.allclose(
        stepwise.model.head.projection.weight, job.model.head.projection.weight
    )


# ---------------------------------------------------------------------------- the run


def run_training(tmp_path, name, max_epochs=4, interrupt_at=None, resume=None, ema_decay=None):
    job = toy_job(dropout=0.3)
    calls = {"n": 0}
    score = job.score

    def score_or_crash(outputs, split):
        calls["n"] += 1
        if calls["n"] == interrupt_at:
            raise KeyboardInterrupt
        return score(outputs, split)

    job.score = score_or_crash
    config = quiet(
        max_epochs=max_epochs,
        batch_size=8,
        eval_batch_size=32,
        optimizer="adam",
        lr=0.01,
        lr_schedule="plateau",
        gradient_clip_val=1.0,
        resume=resume,
        seed=7,
        ema_decay=ema_decay,
    )
    trainer = Trainer(config, tmp_path / name)
    trainer.fit(job)
    return job.model, trainer


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_interrupted_run_resumed_ends_where_uninterrupted_run_ends(tmp_path, caplog, ema_decay):
    full, full_trainer = run_training(tmp_path, "full", ema_decay=ema_decay)
    with pytest.raises(KeyboardInterrupt):  # dies in epoch 3, after epoch 2 was saved
        run_training(tmp_path, "cut", interrupt_at=3, ema_decay=ema_decay)
    assert "interrupted at epoch 3, step" in caplog.text  # what run.log records
    cut = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert cut.payload["trainer"]["epoch"] == 2
    resumed, resumed_trainer = run_training(tmp_path, "cut", resume="auto", ema_decay=ema_decay)
    for name, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    timings = ("epoch_seconds", "train_examples_per_s", "train_units_per_s", "peak_rss_mib")

    def untimed(history):
        return [{k: v for k, v in r.items() if k not in timings} for r in history]

    # the resumed run's history (epochs 1-2 from the checkpoint, 3-4 trained) is the full one
    assert untimed(resumed_trainer.state.history) == untimed(full_trainer.state.history)
    last_full = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt").payload
    last_resumed = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt").payload
    assert last_full["trainer"]["step"] == last_resumed["trainer"]["step"]
    for a, b in zip(
        last_full["optimizer"]["state"].values(),
        last_resumed["optimizer"]["state"].values(),
        strict=True,
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"])


def test_ema_weights_are_evaluated_saved_and_returned(tmp_path, monkeypatch):
    """With trainer.ema_decay the dev metric, best.pt and the returned model are the moving
    average of the weights after each optimizer step (the first step's weights to start,
    then a decay that warms up: min(decay, (1 + n) / (10 + n)) at the n+1-th update)."""
    examples = random_values(32, seed=2)
    seen: list[float] = []
    step = Trainer.optimizer_step

    def recording_step(self, optimizer, scaler, count):
        step(self, optimizer, scaler, count)
        seen.append(optimizer.param_groups[0]["params"][0].item())

    monkeypatch.setattr(Trainer, "optimizer_step", recording_step)
    evaluated: list[float] = []

    def score(outputs, split):  # improves every epoch, so best.pt is the last epoch's
        return {"metric": float(len(evaluated))}

    job = fake_job(examples, score, start=3.0)
    job.predict = lambda model, batch: evaluated.append(model.w.item()) or batch.indices.tolist()
    trainer = Trainer(quiet(max_epochs=3, batch_size=8, ema_decay=0.8, **SGD), tmp_path)
    trainer.fit(job)
    expected = seen[0]
    for n, w in enumerate(seen[1:], start=1):
        decay = min(0.8, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * w
    assert len(seen) == 12 and abs(expected - seen[-1]) > 1e-3  # the average lags the weights
    assert evaluated[-1] == pytest.approx(expected, abs=1e-6)
    assert job.model.w.item() == pytest.approx(expected, abs=1e-6)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt").model
    assert best["w"].item() == pytest.approx(expected, abs=1e-6)


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
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert not best.resumable and {"optimizer", "scheduler", "scaler", "rng"} <= set(last.payload)
    assert best.bundle.task == "toy" and best.bundle.vocabs["words"][:2] == ["<pad>", "<unk>"]
    assert best.payload["trainer"]["best_epoch"] == trainer.state.best_epoch
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_early_stopping(tmp_path):
    job = fake_job(random_values(8), lambda outputs, split: {"metric": 50.0})
    trainer = Trainer(quiet(max_epochs=20, patience=2, **SGD), tmp_path / "es")
    trainer.fit(job)
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
    assert torch.equal(load_checkpoint(target).model["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cpu_learns(tmp_path, precision):
    job = toy_job(n=96)
    trainer = Trainer(
        quiet(max_epochs=4, batch_size=16, precision=precision, optimizer="adam", lr=0.02),
        tmp_path / precision,
    )
    seen = []
    original = job.model.head.forward

    def spy(states):  # emissions come from a Linear, which autocast runs in low precision
        out = original(states)
        seen.append(out.dtype)
        return out

    job.model.head.forward = spy
    trainer.fit(job)
    assert (torch.bfloat16 if precision == "bf16" else torch.float16) in seen
    losses = [row["train_loss"] for row in trainer.state.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] * 0.7


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"precision": "fp8"}, "precision must be one of 32, bf16, fp16; got 'fp8'"),
        ({"max_epochs": 0}, "max_epochs must be at least 1, got 0"),
        ({"max_epochs": -3}, "max_epochs must be at least 1, got -3"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"eval_batch_size": 0}, "eval_batch_size must be at least 1, got 0"),
        ({"accumulate_grad_batches": 0}, "accumulate_grad_batches must be at least 1, got 0"),
        ({"log_every_n_steps": 0}, "log_every_n_steps must be at least 1, got 0"),
        ({"num_threads": 0}, "num_threads must be at least 1, got 0"),
        ({"limit_train_batches": 0}, "limit_train_batches must be at least 1 or null, got 0"),
        ({"limit_eval_batches": 0}, "limit_eval_batches must be at least 1 or null, got 0"),
        ({"lr": 0.0}, "lr must be positive, got 0.0"),
        ({"lr": "fast"}, "lr must be a number; got 'fast'"),
        ({"ema_decay": 1.0}, r"ema_decay must be in \(0, 1\) or null, got 1.0"),
        ({"ema_decay": 0}, r"ema_decay must be in \(0, 1\) or null, got 0.0"),
    ],
)
def test_trainer_config_checks_itself(overrides, message):
    """A TrainerConfig built in Python is checked as one built from the YAML; the CLI's
    message gains the section's name."""
    with pytest.raises(ConfigError, match=f"^{message}$"):
        TrainerConfig(**overrides)
    with pytest.raises(ConfigError, match=f"^trainer.{message}$"):
        to_dataclass(TrainerConfig, overrides, "trainer")


def test_good_trainer_settings_are_kept_and_coerced():
    config = TrainerConfig(lr=1, precision=32, limit_eval_batches=None, num_threads=None)
    assert config.lr == 1.0 and isinstance(config.lr, float) and config.precision == "32"
    assert TrainerConfig(ema_decay=0.999, num_threads=2).num_threads == 2


def test_ddp_without_torchrun_fails_where_the_trainer_starts(tmp_path):
    config = quiet(strategy="ddp")  # a setting of the environment, not of the value
    with pytest.raises(ConfigError, match="torchrun"):
        Trainer(config, tmp_path)


# oneDNN's own primitive cache and PyTorch's (ideep's) cache of oneDNN computations
CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def test_a_trainer_leaves_the_process_alone(tmp_path, monkeypatch):
    """Threads and oneDNN's kernel cache are the process's (configure_process), not the
    Trainer's: building and running one changes neither."""
    for name in CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    wanted = 1 if threads != 1 else 2
    job = fake_job(random_values(8), lambda outputs, split: {"metric": 0.0})
    Trainer(quiet(num_threads=wanted, **SGD), tmp_path).fit(job)
    assert torch.get_num_threads() == threads
    assert not any(name in os.environ for name in CACHE_VARIABLES)


def test_cli_run_sets_threads_and_kernel_cache_before_training(toy_conll, tmp_path, monkeypatch):
    """``trainer.num_threads`` takes effect in a CLI run, and the oneDNN cache cap is in the
    environment before the first forward pass."""
    for name in CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    wanted = 1 if threads != 1 else 2
    at_first_step: list[tuple[str | None, int]] = []
    forward_backward = Trainer.forward_backward

    def recording(self, *args, **kwargs):
        if not at_first_step:
            caches = tuple(os.environ.get(name) for name in CACHE_VARIABLES)
            at_first_step.append((caches, torch.get_num_threads()))
        return forward_backward(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "forward_backward", recording)
    try:
        code, _, err = run_main(
            "task=ner", f"data.train={toy_conll['train']}", f"data.dev={toy_conll['dev']}",
            "data.test=null", "embeddings=random", "embeddings.dim=8", "model.hidden_size=8",
            "model.char_dim=4", "model.char_hidden=4", "trainer.max_epochs=1",
            "trainer.limit_train_batches=2", "trainer.progress_bar=false",
            f"trainer.num_threads={wanted}", f"hydra.run.dir={tmp_path / 'run'}",
        )  # fmt: skip
        assert code == 0, err[-2000:]
        assert at_first_step == [(("16", "16"), wanted)]
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(threads)


def test_cuda_without_a_gpu_is_a_config_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="cuda"):
        Trainer(quiet(device="cuda"), tmp_path)


def test_fake_split_subset_keeps_examples_and_lengths():
    split = values_split([[1.0], [2.0, 3.0], [4.0, 5.0, 6.0]])
    part = split.subset([2, 0])
    assert part.examples == [[4.0, 5.0, 6.0], [1.0]] and list(part.lengths) == [3, 1]


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


def test_version_1_checkpoints_still_load(tmp_path):
    """Checkpoints written before the bundle (vocabularies beside the config in "meta")."""
    path = tmp_path / "old.pt"
    meta = {
        "task": "ner",
        "config": {"model": {"hidden_size": 8}},
        "words": ["<pad>", "<unk>", "EU"],
        "chars": ["<pad>", "<unk>", "E"],
        "tags": ["O", "B-ORG"],
        "scheme": "bioes",
    }
    atomic_save({"version": 1, "meta": meta, "model": {"w": torch.ones(2)}}, path)
    checkpoint = load_checkpoint(path, task="ner")
    assert checkpoint.bundle.vocabs == {k: meta[k] for k in ("words", "chars", "tags")}
    assert checkpoint.bundle.extras == {"scheme": "bioes"}
    assert checkpoint.bundle.config == meta["config"] and not checkpoint.resumable
    with pytest.raises(UserError, match="not 'sentiment'"):
        load_checkpoint(path, task="sentiment")


def test_a_short_run_averages_trained_weights_not_its_first_ones(tmp_path, monkeypatch):
    """The default-style decay (0.999) over 4 optimizer steps: the average follows the
    weights closely (warm-up), where a plain EMA would still be ~99.7% the first step's."""
    examples = random_values(32, seed=2)
    job = fake_job(examples, lambda outputs, split: {"metric": 1.0}, start=3.0)
    seen: list[float] = []
    job.predict = lambda model, batch: seen.append(model.w.item()) or batch.indices.tolist()
    trainer = Trainer(quiet(max_epochs=1, batch_size=8, ema_decay=0.999, **SGD), tmp_path)
    initial = job.model.w.item()
    weights = []
    step = Trainer.optimizer_step

    def recording_step(self, optimizer, scaler, count):
        step(self, optimizer, scaler, count)
        weights.append(optimizer.param_groups[0]["params"][0].item())

    monkeypatch.setattr(Trainer, "optimizer_step", recording_step)
    trainer.fit(job)
    expected = weights[0]
    for n, w in enumerate(weights[1:], start=1):
        decay = min(0.999, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * w
    assert seen[-1] == pytest.approx(expected, abs=1e-6)
    assert abs(seen[-1] - weights[-1]) < abs(seen[-1] - initial)  # nearer the trained weights


def test_max_minutes_ends_the_epoch_in_progress_scores_saves_and_stops(tmp_path, caplog):
    examples = random_values(400, seed=4)
    job = fake_job(examples, lambda outputs, split: {"metric": float(len(outputs))})
    trainer = Trainer(quiet(max_epochs=50, batch_size=1, max_minutes=1e-4), tmp_path)
    trainer.fit(job)
    history = trainer.state.history
    assert len(history) == 1 and 1 <= trainer.state.step < 400  # the epoch was cut short
    assert "trainer.max_minutes=0.0001 reached" in caplog.text
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    assert history[0]["train_units_per_s"] > 0
    with pytest.raises(ConfigError, match="max_minutes"):
        TrainerConfig(max_minutes=0)


def test_units_per_second_count_what_the_loss_counts(tmp_path):
    examples = random_values(40, seed=5)
    job = fake_job(examples, lambda outputs, split: {"metric": 0.0})
    trainer = Trainer(quiet(max_epochs=1, batch_size=8), tmp_path)
    trainer.fit(job)
    row = trainer.state.history[0]
    values = sum(len(e) for e in examples)  # the fake task's loss counts values
    assert row["train_units_per_s"] * row["epoch_seconds"] == pytest.approx(values)
    assert row["train_examples_per_s"] * row["epoch_seconds"] == pytest.approx(40)
