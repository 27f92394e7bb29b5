"""nlp_lstm.inspect and mode=inspect on the tiny trained model of every task: the gate
names and shapes, the recomputed last-layer states against the model's own, gate ranges,
the files the mode writes, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import nlp_lstm
from nlp_lstm.data.batching import move_batch
from nlp_lstm.inside import forecast_inputs, parse_key, translate_inputs
from tests.cli_helpers import last_json, run_main

TASKS = ("ner", "sentiment", "charlm", "translate", "forecast")
TOL = 1e-5


@pytest.fixture(scope="module")
def predictors(trained_models) -> dict:
    return {task: nlp_lstm.load(trained_models["ckpt"][task], "cpu") for task in TASKS}


def texts_for(task: str, files: dict) -> list:
    return {
        "ner": ["Mr John Smith said in Paris . Reuters Corp was new .", "Mr Lee"],
        "sentiment": ["a gorgeous and moving film", "dull"],
        "charlm": ["To be, or not", "KING: a good day"],  # d, g, y: unseen chars
        "translate": ["ein hund", "eine katze"],
        "forecast": [str(files["series"])],
    }[task]


def own_states(task: str, predictor, text) -> dict[str, torch.Tensor]:
    """The model's own last-layer outputs (both directions joined) over ``text``."""
    model = predictor.model
    with torch.no_grad():
        if task in ("ner", "sentiment"):
            if task == "ner":
                from nlp_lstm.tasks.ner import cut_input

                _, tokens, ranges = cut_input(text)
                sentences = [[t.text for t in tokens[a:b]] for a, b in ranges]
            else:
                sentences = [[t for t, _, _ in predictor.tokenize(text)]]
            split = predictor.split(sentences)
            parts = []
            for index, sentence in enumerate(sentences):
                batch = move_batch(split.collate([index]), predictor.device)
                embedded = model.embedder(
                    batch.words, batch.chars, batch.char_index, batch.char_lengths
                )
                out = model.encoder(embedded, batch.lengths, batch.mask).states
                parts.append(out[0, : len(sentence)])
            return {"encoder": torch.cat(parts)}
        if task == "charlm":
            ids = torch.tensor([predictor.chars.encode(text)])
            return {"rnn": model.rnn(model.embedding(ids))[0][0]}
        if task == "translate":
            seen = translate_inputs(predictor, text)
            memory, _ = model.encode(seen["batch"])
            return {"encoder": memory.states[0], "decoder": seen["decoder_states"][0]}
        seen = forecast_inputs(predictor, text)
        segments = seen["segments"]
        lengths = torch.full((segments.shape[0],), segments.shape[1])
        states = seen["member"].encoder(segments, lengths).states
        return {"encoder": states.reshape(-1, states.shape[-1])}


def recurrent(task: str, model, module: str) -> torch.nn.Module:
    if task == "charlm":
        return model.rnn
    if task == "translate":
        return getattr(model, module).rnn
    if task == "forecast":
        return (model.members[0] if hasattr(model, "members") else model).encoder.rnn
    return model.encoder.rnn


@pytest.mark.parametrize("task", TASKS)
def test_inspect_names_shapes_and_states(task, predictors, trained_models):
    predictor = predictors[task]
    texts = texts_for(task, trained_models["files"])
    results = nlp_lstm.inspect(predictor, texts)
    assert len(results) == len(texts)
    modules = {"translate": {"encoder", "decoder"}, "charlm": {"rnn"}}.get(task, {"encoder"})
    for text, arrays in zip(texts, results, strict=True):
        assert {k.split(".")[0] for k in arrays} == modules
        own = own_states(task, predictor, text)
        for module in modules:
            rnn = recurrent(task, predictor.model, module)
            labels = arrays[f"{module}.positions"]
            steps, hidden = len(labels), rnn.hidden_size
            assert labels.dtype.kind == "U" and steps > 0
            quantities = ("i", "f", "g", "o", "c", "h") if isinstance(rnn, torch.nn.LSTM) else (
                "r", "z", "n", "h")  # fmt: skip
            directions = ["", ".reverse"] if rnn.bidirectional else [""]
            expected = {
                f"{module}.l{k}{d}.{q}"
                for k in range(rnn.num_layers)
                for d in directions
                for q in quantities
            }
            names = {k for k in arrays if k.startswith(module + ".") and parse_key(k)}
            assert names == expected
            for name in names:
                value = arrays[name]
                assert value.shape == (steps, hidden) and value.dtype == np.float32
                q = parse_key(name)[3]
                if q in ("i", "f", "o", "r", "z"):
                    assert value.min() >= 0 and value.max() <= 1
                elif q in ("g", "n", "h"):
                    assert np.abs(value).max() <= 1
            last = rnn.num_layers - 1
            mine = [arrays[f"{module}.l{last}{d}.h"] for d in directions]
            recomputed = np.concatenate(mine, axis=-1)
            theirs = own[module].float().numpy()
            assert recomputed.shape == theirs.shape
            assert np.abs(recomputed - theirs).max() <= TOL, (task, module)
    if task == "charlm":
        assert "".join(results[0]["rnn.positions"]) == texts[0]
    if task == "translate":
        assert results[0]["decoder.positions"][0] == "<s>"


def test_inspect_errors(predictors):
    with pytest.raises(nlp_lstm.errors.UserError, match="empty text"):
        nlp_lstm.inspect(predictors["ner"], ["   "])
    for task in ("charlm", "sentiment", "translate"):
        with pytest.raises(nlp_lstm.errors.UserError, match="empty text"):
            nlp_lstm.inspect(predictors[task], ["ok", ""])
    with pytest.raises(nlp_lstm.errors.UserError, match="LSTM or GRU"):
        nlp_lstm.inspect(object(), ["text"])


def input_file(task: str, files: dict, folder: Path) -> Path:
    if task == "forecast":
        return files["series"]
    path = folder / f"{task}.txt"
    path.write_text("\n".join(texts_for(task, files)) + "\n")
    return path


@pytest.mark.parametrize("task", TASKS)
def test_inspect_mode_writes_every_file(task, trained_models, tmp_path):
    source = input_file(task, trained_models["files"], tmp_path)
    run = tmp_path / "run"
    code, out, err = run_main(
        "mode=inspect", f"ckpt={trained_models['ckpt'][task]}", f"input={source}",
        "trainer.device=cpu", f"hydra.run.dir={run}",
    )  # fmt: skip
    assert code == 0, err[-2000:]
    summary = last_json(out)
    assert summary["task"] == task
    assert set(summary["files"]) == {
        "gates",
        "page",
        "saturation",
        "cells",
        "cells_plot",
        "lstmvis",
    }
    for name, path in summary["files"].items():
        if name != "lstmvis":
            assert Path(path).is_file() and Path(path).stat().st_size > 0
    modules = {"translate": {"encoder", "decoder"}, "charlm": {"rnn"}}.get(task, {"encoder"})
    assert {p.name for p in (run / "lstmvis").iterdir()} == modules
    for module in modules:
        assert {p.name for p in (run / "lstmvis" / module).iterdir()} == {
            "lstm.yml", "states.h5", "words.h5", "words.dict"}  # fmt: skip
    split = summary["split"]
    assert split["name"] == "dev" and split["positions"] > 0 and split["inputs"] > 0
    assert summary["cells"] and all(-1 <= c["r"] <= 1 for c in summary["cells"].values())
    cells = (run / "cells.md").read_text()
    assert all(f"| {name} |" in cells for name in summary["cells"])
    assert (run / "cells.png").read_bytes()[:4] == b"\x89PNG"
    gates = np.load(run / "gates.npz")
    first_input = {"forecast": str(source), "charlm": source.read_text()}.get(
        task, texts_for(task, trained_models["files"])[0]
    )  # charlm: the file is one passage
    first = nlp_lstm.inspect(nlp_lstm.load(trained_models["ckpt"][task], "cpu"), [first_input])[0]
    if task == "charlm":
        assert "".join(gates["rnn.positions"]) == source.read_text()
    assert set(gates.files) == set(first)
    page = (run / "inside.html").read_text()
    assert "<script>" in page and "http" not in page.split("<script>")[1]
    assert (run / "saturation.png").read_bytes()[:4] == b"\x89PNG"
    counts = summary["forget_saturated"]
    assert counts and all(0 <= c["saturated"] <= c["units"] for c in counts.values())


def test_inspect_mode_bad_input(trained_models, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    code, _, err = run_main("mode=inspect", f"ckpt={trained_models['ckpt']['charlm']}",
                            f"input={empty}", f"hydra.run.dir={tmp_path / 'a'}")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "empty" in err or "no lines" in err
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\t\n")
    code, _, err = run_main("mode=inspect", f"ckpt={trained_models['ckpt']['ner']}",
                            f"input={blank}", f"hydra.run.dir={tmp_path / 'c'}")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "empty" in err
    code, _, err = run_main("mode=inspect", f"ckpt={tmp_path / 'missing.pt'}",
                            f"input={empty}", f"hydra.run.dir={tmp_path / 'b'}")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not found" in err


def test_gru_layers_and_saturation(trained_models, tmp_path):
    """A two-layer GRU in place of the char LM's LSTM: r, z, n, h of both layers, the last
    layer's h equal to the module's output, and the plot and counts of its update gates."""
    from nlp_lstm.inside import forget_saturated, inside_page, plot_saturation, saturation

    predictor = nlp_lstm.load(trained_models["ckpt"]["charlm"], "cpu")
    old = predictor.model.rnn
    torch.manual_seed(0)
    predictor.model.rnn = torch.nn.GRU(old.input_size, 8, num_layers=2, batch_first=True).eval()
    results = nlp_lstm.inspect(predictor, ["To be", "or not"])
    assert sorted(k for k in results[0] if parse_key(k)) == [
        f"rnn.l{k}.{q}" for k in (0, 1) for q in sorted("rznh")
    ]
    ids = torch.tensor([predictor.chars.encode("To be")])
    with torch.no_grad():
        own = predictor.model.rnn(predictor.model.embedding(ids))[0][0].numpy()
    assert np.abs(results[0]["rnn.l1.h"] - own).max() <= TOL
    fractions = saturation(results)
    assert set(fractions) == {f"rnn.l{k}.{q}" for k in (0, 1) for q in "rz"}
    counts = forget_saturated(fractions, "gru")
    assert set(counts) == {"rnn.l0", "rnn.l1"} and counts["rnn.l0"]["units"] == 8
    plot_saturation(fractions, tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 0
    page = inside_page(results[0], "charlm", "x.pt")
    assert '"l1"' in page and "__DATA__" not in page


def test_mode_inspect_names_its_run_folder_after_the_checkpoints_task(
    trained_models, tmp_path, monkeypatch
):
    # without task=, Hydra's run folder is runs/<the checkpoint's task>/..., not runs/ner/
    from nlp_lstm.cli import name_checkpoint_task

    ckpt = trained_models["ckpt"]["charlm"]
    assert name_checkpoint_task(["mode=inspect", f"ckpt={ckpt}"])[-1] == "task=charlm"
    assert name_checkpoint_task(["mode=serve", f"ckpt={ckpt}", "task=ner"]) == [
        "mode=serve", f"ckpt={ckpt}", "task=ner"]  # fmt: skip
    assert name_checkpoint_task(["mode=test", f"ckpt={ckpt}"]) == ["mode=test", f"ckpt={ckpt}"]
    missing = ["mode=inspect", f"ckpt={tmp_path / 'none.pt'}"]
    assert name_checkpoint_task(missing) == missing  # the mode reports it


def test_inspect_mode_split_choices(trained_models, tmp_path):
    """inspect.split=null reads the input only; a split whose file is missing is one line."""
    source = input_file("ner", trained_models["files"], tmp_path)
    ckpt = trained_models["ckpt"]["ner"]
    code, out, err = run_main("mode=inspect", f"ckpt={ckpt}", f"input={source}",
                              "inspect.split=null", f"hydra.run.dir={tmp_path / 'a'}")  # fmt: skip
    assert code == 0, err[-2000:]
    summary = last_json(out)
    assert set(summary["files"]) == {"gates", "page", "saturation"} and not summary["cells"]
    assert "split" not in summary and not (tmp_path / "a" / "cells.md").exists()
    code, _, err = run_main("mode=inspect", f"ckpt={ckpt}", f"input={source}",
                            f"data.dev={tmp_path / 'gone.txt'}", f"hydra.run.dir={tmp_path / 'b'}")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "gone.txt" in err and "inspect.split=null" in err
    code, _, err = run_main("mode=inspect", f"ckpt={ckpt}", f"input={source}",
                            "inspect.split=nope", f"hydra.run.dir={tmp_path / 'c'}")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "inspect.split" in err
