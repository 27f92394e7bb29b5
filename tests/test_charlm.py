import itertools
import json
import math

import pytest
import torch

from nlp_lstm.checkpoint import Bundle
from nlp_lstm.contract import Job, Monitor
from nlp_lstm.data.text import IGNORE, CharStreams, CharWindows, split_text
from nlp_lstm.data.vocab import Vocab
from nlp_lstm.modules.sampling import filter_logits, sample_next
from nlp_lstm.tasks.charlm import CharLanguageModel, CharLMModelConfig, predict, score, window_split
from nlp_lstm.train.trainer import Trainer, TrainerConfig, seed_everything
from tests.cli_helpers import last_json, run_cli

VERSE = "to be, or not to be: that is the question.\n"


# ---------------------------------------------------------------------------- sampling


def kept(logits, **kwargs):
    return set(torch.nonzero(filter_logits(logits, **kwargs) > float("-inf")).flatten().tolist())


def test_top_k_and_top_p_keep_the_sets_brute_force_finds():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        logits = torch.randn(7, generator=generator) * 2
        probs = torch.softmax(logits, -1)
        for k in range(1, 8):
            assert kept(logits, top_k=k) == set(torch.topk(logits, k).indices.tolist())
        for p in (0.1, 0.5, 0.8, 0.95, 1.0):
            # the smallest set of most likely tokens whose mass reaches p, by enumeration
            best = min(
                (
                    set(subset)
                    for size in range(1, 8)
                    for subset in itertools.combinations(range(7), size)
                    if probs[list(subset)].sum() >= p - 1e-6
                ),
                key=lambda s: (len(s), -float(probs[list(s)].sum())),
            )
            assert kept(logits, top_p=p) == best, (p, probs)
        # combined: nucleus taken within the top k
        assert kept(logits, top_k=3, top_p=0.999) <= kept(logits, top_k=3)


def test_sampling_frequencies_follow_the_filtered_distribution():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    generator = torch.Generator().manual_seed(1)
    draws = torch.stack(
        [sample_next(logits.expand(1000, 4), 1.0, top_p=0.7, generator=generator) for _ in range(4)]
    ).flatten()
    counts = torch.bincount(draws, minlength=4).float() / draws.numel()
    # top_p=0.7 keeps {0.5, 0.3}: renormalised to 0.625 / 0.375
    assert counts[2:].sum() == 0
    assert abs(counts[0] - 0.625) < 0.03 and abs(counts[1] - 0.375) < 0.03
    # temperature sharpens, 0 is greedy
    cold = sample_next(logits.expand(2000, 4), 0.25, generator=generator)
    assert (cold == 0).float().mean() > 0.85
    scores = torch.randn(5, 9)
    assert torch.equal(sample_next(scores, 0.0), scores.argmax(-1))
    with pytest.raises(ValueError):
        filter_logits(logits, top_p=0.0)


# ---------------------------------------------------------------------------- windows


def test_windows_predict_every_char_once():
    ids = list(range(2, 25))  # 23 chars -> 22 predictions
    windows = CharWindows(ids, seq_len=5)
    assert windows.lengths == [5, 5, 5, 5, 2]
    batch = windows(list(range(len(windows))))
    targets = batch.targets[batch.targets != IGNORE]
    assert sorted(targets.tolist()) == ids[1:]
    assert torch.equal(batch.lengths, (batch.targets != IGNORE).sum(1))
    real = batch.targets != IGNORE
    assert torch.equal(batch.targets[real] - 1, batch.inputs[real])  # each target follows its input
    assert split_text("abcdefghij", 0.1) == ("abcdefghi", "j")


@pytest.mark.parametrize(
    "length, streams, seq_len", [(50, 4, 5), (23, 3, 4), (5, 8, 3), (40, 1, 7)]
)
def test_streams_predict_every_char_once_in_stream_order(length, streams, seq_len):
    ids = list(range(2, 2 + length))  # id i + 1 follows id i
    layout = CharStreams(ids, seq_len, streams)
    batches = layout.batches(streams, 0, 1, train=True)
    assert len(batches) == layout.windows and all(len(b) == streams for b in batches)
    targets_of = {s: [] for s in range(streams)}
    for k, positions in enumerate(batches):
        batch = layout(positions)
        assert batch.reset == (k == 0)
        for row, position in enumerate(positions):
            real = batch.targets[row] != IGNORE
            assert int(real.sum()) == batch.lengths[row] == layout.lengths[position]
            assert torch.equal(batch.targets[row][real] - 1, batch.inputs[row][real])
            targets_of[position // layout.windows] += batch.targets[row][real].tolist()
    spans = [targets_of[s] for s in range(streams)]
    for span in spans:  # each stream reads a contiguous stretch of the text, in order
        assert span == list(range(span[0], span[0] + len(span))) if span else True
    assert sorted(t for span in spans for t in span) == ids[1:]  # each char predicted once
    # two processes split the streams; evaluation deals groups of streams out to them
    if streams % 2 == 0:
        halves = [layout.batches(streams // 2, r, 2, train=True) for r in (0, 1)]
        assert [a + b for a, b in zip(*halves, strict=True)] == batches
    evaluation = layout.batches(3, 0, 1, train=False)
    assert sorted(p for b in evaluation for p in b) == list(range(len(layout)))


# ---------------------------------------------------------------------------- model


def tiny_model(chars: Vocab, hidden: int = 48) -> CharLanguageModel:
    config = CharLMModelConfig(embedding_dim=16, hidden_size=hidden, num_layers=1, dropout=0.0)
    return CharLanguageModel(config, len(chars))


def test_stepwise_state_gives_the_same_scores_as_one_pass():
    chars = Vocab(sorted(set(VERSE)))
    seed_everything(0)
    model = tiny_model(chars).eval()
    ids = torch.tensor([chars.encode(VERSE)])
    whole, _ = model.logits(ids)
    state, steps = None, []
    for t in range(ids.shape[1]):
        logits, state = model.logits(ids[:, t : t + 1], state)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), whole)


def stream_job(model, chars, text, seq_len, streams, eval_streams) -> Job:
    ids = chars.encode(text)
    train = window_split(CharStreams(ids, seq_len, streams))
    dev = window_split(CharStreams(ids, seq_len, eval_streams))
    return Job(model, train, dev, predict, score, Monitor("bpc", "min"), Bundle("charlm", {}))


def test_carried_state_scores_a_stream_as_one_unbroken_pass(tmp_path):
    chars = Vocab(sorted(set(VERSE)))
    seed_everything(1)
    model = tiny_model(chars).eval()
    text = VERSE * 3
    ids = torch.tensor([chars.encode(text)])
    with torch.no_grad():
        whole, _ = model.logits(ids[:, :-1])
    expected = torch.nn.functional.cross_entropy(whole[0], ids[0, 1:], reduction="sum").item()
    job = stream_job(model, chars, text, seq_len=7, streams=1, eval_streams=1)
    trainer = Trainer(TrainerConfig(progress_bar=False, device="cpu", eval_batch_size=1), None)
    scores = trainer.evaluate(model, job.dev, predict, score)
    assert scores["chars"] == len(text) - 1
    assert scores["loss"] * scores["chars"] == pytest.approx(expected, rel=1e-4)
    # stateless windows of the same length score worse: they start without context
    windows = window_split(CharWindows(chars.encode(text), 7))
    assert trainer.evaluate(model, windows, predict, score)["loss"] != pytest.approx(scores["loss"])


def test_eval_batch_size_does_not_change_the_dev_loss():
    chars = Vocab(sorted(set(VERSE)))
    seed_everything(2)
    model = tiny_model(chars).eval()
    job = stream_job(model, chars, VERSE * 5, seq_len=9, streams=4, eval_streams=6)
    losses = {
        size: Trainer(
            TrainerConfig(progress_bar=False, device="cpu", eval_batch_size=size), None
        ).evaluate(model, job.dev, predict, score)["loss"]
        for size in (1, 2, 4, 6, 32)
    }
    assert max(losses.values()) - min(losses.values()) < 1e-4, losses


def test_a_tiny_model_learns_what_only_carried_state_can_tell(tmp_path):
    """After "a" comes "b" or "d", alternately: what came 5 characters earlier decides it.
    Windows are 6 long, so a window that starts in between cannot tell on its own; with
    the state carried across windows every character is predictable."""
    cycle = "ab" + "c" * 3 + "ad" + "c" * 3
    text = cycle * 100
    chars = Vocab(sorted(set(text)))
    seed_everything(0)
    model = tiny_model(chars, hidden=32)
    config = TrainerConfig(
        max_epochs=15, lr=0.02, batch_size=4, progress_bar=False, device="cpu",
        lr_schedule="cosine", patience=0,
    )  # fmt: skip
    best = Trainer(config, tmp_path).fit(stream_job(model, chars, text, 6, 4, 4))
    assert best["bpc"] < 0.01
    windows = window_split(CharWindows(chars.encode(text), 6))  # the same model, no carrying
    stateless = Trainer(TrainerConfig(progress_bar=False, device="cpu"), None)
    assert stateless.evaluate(model, windows, predict, score)["bpc"] > 0.3
    greedy = model.eval().generate(chars.encode(cycle[:4]), 3 * len(cycle), temperature=0.0)
    assert "".join(chars.decode(greedy)) == (cycle * 5)[4 : 4 + 3 * len(cycle)]


def test_tiny_model_learns_to_recite(tmp_path):
    chars = Vocab(sorted(set(VERSE)))
    text = VERSE * 60
    windows = CharWindows(chars.encode(text), seq_len=40)
    seed_everything(0)
    model = tiny_model(chars, hidden=64)
    uniform_bpc = math.log2(len(chars) - 2)
    config = TrainerConfig(
        max_epochs=25, lr=0.01, batch_size=16, progress_bar=False, device="cpu", lr_schedule="none"
    )
    split = window_split(windows)
    job = Job(model, split, split, predict, score, Monitor("bpc", "min"), Bundle("charlm", {}))
    best = Trainer(config, tmp_path).fit(job)
    assert best["bpc"] < 0.2 * uniform_bpc
    greedy = model.eval().generate(chars.encode("to be, or "), len(VERSE), temperature=0.0)
    assert "".join(chars.decode(greedy)).startswith("not to be: that is the question.\nto be")


# ---------------------------------------------------------------------------- CLI


def test_cli_train_test_predict_round_trip(tmp_path):
    corpus = tmp_path / "verse.txt"
    corpus.write_text(VERSE * 80)
    run = tmp_path / "run"
    result = run_cli(
        "task=charlm", f"data.train={corpus}", "data.seq_len=40", "model.hidden_size=64",
        "model.num_layers=1", "model.dropout=0.0", "trainer.max_epochs=15", "trainer.lr=0.01",
        "trainer.batch_size=16", "trainer.progress_bar=false", "sample.length=60",
        f"hydra.run.dir={run}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"bpc", "loss", "perplexity", "chars"}
    assert last_json(result.stdout) == metrics
    assert metrics["chars"] == len(split_text(VERSE * 80, 0.1)[1]) - 1 and metrics["bpc"] < 1.0
    assert math.isclose(metrics["perplexity"], 2 ** metrics["bpc"], rel_tol=1e-3)
    assert math.isclose(metrics["loss"], metrics["bpc"] * math.log(2), rel_tol=1e-3)
    for name in ("curves.png", "metrics.csv", "sample.txt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    ckpt = run / "checkpoints" / "best.pt"

    test_file = tmp_path / "test.txt"
    test_file.write_text(VERSE * 3)
    result = run_cli(
        "task=charlm", "mode=test", f"ckpt={ckpt}", f"data.test={test_file}",
        f"hydra.run.dir={tmp_path / 't'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    scores = last_json(result.stdout)
    assert scores["chars"] == len(VERSE) * 3 - 1 and scores["bpc"] < 1.0

    result = run_cli(
        "task=charlm", "mode=predict", f"ckpt={ckpt}", "sample.temperature=0",
        "sample.length=32", f"hydra.run.dir={tmp_path / 'p'}", stdin="to be, or \nthat is\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = result.stdout.split("\n\n")[:2]
    assert first == "to be, or not to be: that is the question."
    assert second.startswith("that is") and len(second) == len("that is") + 32

    # a prompt char the model never saw names the input line
    result = run_cli(
        "task=charlm", "mode=predict", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'q'}",
        stdin="to be\nZebra\n",
    )  # fmt: skip
    assert result.returncode == 2 and "stdin.txt:2:" in result.stderr and "'Z'" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_bad_text_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nbroken \xff byte\n")
    result = run_cli("task=charlm", f"data.train={bad}", f"hydra.run.dir={tmp_path / 'r'}")
    assert result.returncode == 2
    assert f"{bad}:2: not valid UTF-8" in result.stderr and "Traceback" not in result.stderr
    result = run_cli(
        "task=charlm", f"data.train={tmp_path / 'none.txt'}", f"hydra.run.dir={tmp_path / 's'}"
    )
    assert result.returncode == 2 and "train file (data.train) not found" in result.stderr
