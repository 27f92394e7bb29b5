"""The property cells of mode=inspect: the properties' known values, the running sums
against numpy's correlations, the LSTMVis export, and a tiny char LM that learns to count
(fixed-length lines) whose counting unit the finder ranks first."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import nlp_lstm
from nlp_lstm.cells import Scan, char_properties, line_chunks
from nlp_lstm.lstmvis import write_lstmvis
from tests.cli_helpers import last_json, run_main


def test_char_properties_known_values():
    text = 'KING:\nTo (be) "or" No\n'
    found = char_properties(text)
    assert found["position in line"].tolist() == [0, 1, 2, 3, 4, 5, *range(16)]
    assert found["speaker-name line"].tolist() == [1.0] * 6 + [0.0] * 16
    quoted = [c for c, q in zip(text, found["inside quotes"], strict=True) if q]
    assert "".join(quoted) == '"or"'
    bracketed = [c for c, b in zip(text, found["inside brackets"], strict=True) if b]
    assert "".join(bracketed) == "(be)"
    capitals = [c for c, b in zip(text, found["capital letter"], strict=True) if b]
    assert "".join(capitals) == "KINGTN"


def test_line_chunks_keep_whole_lines():
    text = "".join(f"line {i}\n" for i in range(100)) + "x" * 50
    pieces = list(line_chunks(text, 40))
    assert "".join(pieces) == text
    assert all(len(p) <= 40 for p in pieces)
    assert all(p.endswith("\n") for p in pieces[:-2])


def test_scan_matches_numpy_and_finds_a_planted_unit():
    rng = np.random.default_rng(0)
    scan = Scan(keep=50)
    xs, ys = [], []
    for size in (30, 7, 63):  # the sums are folded over chunks of any size
        steps = np.arange(size, dtype=float)
        gates = {q: rng.random((size, 5)).astype(np.float32) for q in ("i", "f", "o", "c", "h")}
        gates = {f"l0.{q}": v for q, v in gates.items()}
        gates["l0.c"][:, 3] = steps / 10 + rng.normal(0, 0.05, size)  # the counting unit
        values = {"count": steps, "constant": np.ones(size)}
        scan.add("rnn", gates, [str(i) for i in range(size)], values)
        xs.append(gates)
        ys.append(steps)
    joined = {k: np.concatenate([g[k] for g in xs]) for k in xs[0]}
    y = np.concatenate(ys)
    r = scan.correlations("rnn")
    for key in ("rnn.l0.c", "rnn.l0.h"):
        x = joined[key.split(".", 1)[1]]
        expected = [np.corrcoef(x[:, u], y)[0, 1] for u in range(5)]
        assert np.allclose(r[key][:, scan.names["rnn"].index("count")], expected, atol=1e-9)
    best = scan.best(top=2)
    assert set(best) == {"count"}  # a constant property has no correlation to report
    assert best["count"][0].name == "rnn.l0.c[3]" and best["count"][0].r > 0.95
    low, high = scan.saturation()["rnn.l0.f"]
    assert np.allclose(low, (joined["l0.f"] < 0.1).mean(0))
    assert np.allclose(high, (joined["l0.f"] > 0.9).mean(0))
    assert scan.positions["rnn"] == 100 and len(scan.kept_labels["rnn"]) == 50
    assert np.array_equal(np.concatenate(scan.kept["rnn"]["l0.c"]), joined["l0.c"][:50])


def test_lstmvis_export_round_trip(tmp_path):
    import h5py

    rng = np.random.default_rng(1)
    arrays = {f"l{k}{d}.{q}": rng.random((6, 4)).astype(np.float32)
              for k in (0, 1) for d in ("", ".reverse") for q in ("c", "h", "f")}  # fmt: skip
    labels = ["To", " ", "be", "\n", "To", ""]
    folder = write_lstmvis(tmp_path / "rnn", "charlm rnn", "test", labels, arrays)
    with h5py.File(folder / "states.h5") as file:
        assert sorted(file) == ["output1", "output2", "states1", "states2"]
        both = np.concatenate([arrays["l1.c"], arrays["l1.reverse.c"]], axis=1)
        assert np.array_equal(file["states2"][:], both)
    ids = {int(i): w for w, i in (line.split(" ") for line in (folder / "words.dict").read_text().splitlines())}  # fmt: skip
    with h5py.File(folder / "words.h5") as file:
        words = [ids[int(i)] for i in file["word_ids"][:]]
    assert words == ["To", "␣", "be", "⏎", "To", "∅"]
    config = OmegaConf.load(folder / "lstm.yml")
    assert config.word_sequence.path == "word_ids" and config.files.states == "states.h5"
    assert {(t.type, t.layer, t.path) for t in config.states.types} == {
        ("state", 1, "states1"), ("output", 1, "output1"),
        ("state", 2, "states2"), ("output", 2, "output2")}  # fmt: skip


def counter_text(lines: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join("".join(rng.choice("abcdefghij") for _ in range(8)) + "\n" for _ in range(lines))


BOUND = 0.75  # |r| of the trained counter's best unit with the position in its line


def test_a_tiny_char_lm_that_counts_has_its_counting_unit_ranked_first(tmp_path):
    """Lines of eight random letters: the newline is predictable only by counting, so the
    trained model holds a unit that tracks the position in the line; the finder ranks it
    first, with the correlation numpy computes over every unit of the whole dev text."""
    train, dev = tmp_path / "train.txt", tmp_path / "dev.txt"
    train.write_text(counter_text(1400, 1))
    dev.write_text(counter_text(150, 2))
    code, _, err = run_main(
        "task=charlm", f"data.train={train}", f"data.dev={dev}", "data.seq_len=36",
        "model.hidden_size=8", "model.num_layers=1", "model.embedding_dim=8",
        "model.dropout=0", "trainer.max_epochs=12", "trainer.batch_size=16", "trainer.lr=0.02",
        "trainer.progress_bar=false", "sample.length=10", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert code == 0, err[-2000:]
    ckpt = tmp_path / "run" / "checkpoints" / "best.pt"
    first = tmp_path / "first.txt"
    first.write_text("abcdefgh\n")
    code, out, err = run_main("mode=inspect", f"ckpt={ckpt}", f"input={first}",
                              f"hydra.run.dir={tmp_path / 'inside'}")  # fmt: skip
    assert code == 0, err[-2000:]
    found = last_json(out)["cells"]["position in line"]
    assert abs(found["r"]) >= BOUND, found

    # brute force: every unit's correlation over the same dev text, by numpy
    predictor = nlp_lstm.load(ckpt, "cpu")
    pieces = list(line_chunks(dev.read_text(), 400))
    arrays = nlp_lstm.inspect(predictor, pieces)
    column = np.concatenate([char_properties(p)["position in line"] for p in pieces])
    units = {f"rnn.l0.{q}[{u}]": np.concatenate([a[f"rnn.l0.{q}"][:, u] for a in arrays])
             for q in ("c", "h") for u in range(8)}  # fmt: skip
    r = {name: np.corrcoef(values, column)[0, 1] for name, values in units.items()}
    best = max(r, key=lambda name: abs(r[name]))
    assert found["unit"] == best and found["r"] == pytest.approx(r[best], abs=1e-4)

    # the same model with its LSTM untrained (PyTorch's initialisation) has no such unit
    torch.manual_seed(0)
    predictor.model.rnn.reset_parameters()
    arrays = nlp_lstm.inspect(predictor, pieces)
    untrained = max(
        abs(np.corrcoef(np.concatenate([a[f"rnn.l0.{q}"][:, u] for a in arrays]), column)[0, 1])
        for q in ("c", "h") for u in range(8)
    )  # fmt: skip
    assert untrained < abs(found["r"]) - 0.25, (untrained, found)
