import itertools
import json
import math

import pytest
import torch

from nlp_lstm.checkpoint import Bundle
from nlp_lstm.contract import Job, Monitor
from nlp_lstm.data.text import IGNORE, CharWindows, split_text
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
    assert set(metrics) == {"bpc", "perplexity", "chars"} and last_json(result.stdout) == metrics
    assert metrics["chars"] == len(split_text(VERSE * 80, 0.1)[1]) - 1 and metrics["bpc"] < 1.0
    assert math.isclose(metrics["perplexity"], 2 ** metrics["bpc"], rel_tol=1e-3)
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
