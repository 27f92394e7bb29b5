import json
import zipfile

import pytest

from tests.cli_helpers import REPO, last_json, run_cli

SMALL = [
    "embeddings=random",
    "embeddings.dim=16",
    "model.hidden_size=24",
    "model.char_dim=12",
    "model.char_hidden=12",
    "trainer.batch_size=16",
    "trainer.optimizer=adam",
    "trainer.lr=0.01",
    "trainer.lr_schedule=none",
    "trainer.progress_bar=false",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One toy NER training run through the CLI, shared by the tests below."""
    from tests.conftest import toy_ner_sentences, write_conll

    root = tmp_path_factory.mktemp("ner")
    files = {
        split: write_conll(root / f"{split}.txt", toy_ner_sentences(n, seed=s))
        for split, n, s in (("train", 300, 1), ("dev", 60, 2), ("test", 60, 3))
    }
    run_dir = root / "run"
    result = run_cli(
        "task=ner",
        f"data.train={files['train']}",
        f"data.dev={files['dev']}",
        "data.test=null",
        "trainer.max_epochs=6",
        f"hydra.run.dir={run_dir}",
        *SMALL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {"files": files, "run": run_dir, "result": result}


def test_training_writes_the_run_folder_and_learns(trained):
    run = trained["run"]
    for name in (
        "config.yaml",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "metrics.json",
        "metrics.csv",
        "curves.png",
        "run.log",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"f1", "precision", "recall", "per_type"}
    assert set(metrics["per_type"]) == {"PER", "LOC", "ORG"}
    assert metrics["f1"] >= 90.0  # the toy task is learnable from words and context
    assert last_json(trained["result"].stdout) == metrics
    assert len(trained["result"].stdout.strip().splitlines()) == 1  # stdout carries results only
    assert "epoch 6/6" in trained["result"].stderr


def test_mode_test_prints_one_json_line(trained, tmp_path):
    result = run_cli(
        "task=ner",
        "mode=test",
        f"ckpt={trained['run'] / 'checkpoints/best.pt'}",
        f"data.test={trained['files']['test']}",
        f"hydra.run.dir={tmp_path}",
        "embeddings=random",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scores = last_json(result.stdout)
    assert set(scores) == {"f1", "precision", "recall", "per_type"} and scores["f1"] >= 85.0
    assert json.loads((tmp_path / "test_metrics.json").read_text()) == scores
    # scoring the dev file reproduces the training run's best dev F1
    again = run_cli(
        "task=ner",
        "mode=test",
        f"ckpt={trained['run'] / 'checkpoints/best.pt'}",
        f"data.test={trained['files']['dev']}",
        f"hydra.run.dir={tmp_path / 'dev'}",
    )
    assert last_json(again.stdout)["f1"] == pytest.approx(
        json.loads((trained["run"] / "metrics.json").read_text())["f1"]
    )


def test_mode_predict_raw_text_and_conll(trained, tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("Mr John Smith said in Paris .\n\nthe Google Corp deal was new .\n")
    out = tmp_path / "tags.tsv"
    ckpt = trained["run"] / "checkpoints/best.pt"
    result = run_cli(
        "task=ner",
        "mode=predict",
        f"ckpt={ckpt}",
        f"input={raw}",
        f"output={out}",
        f"hydra.run.dir={tmp_path / 'p'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    blocks = out.read_text().strip("\n").split("\n\n")
    assert len(blocks) == 2
    first = [line.split("\t") for line in blocks[0].splitlines()]
    assert [t for t, _ in first] == ["Mr", "John", "Smith", "said", "in", "Paris", "."]
    assert [g for _, g in first] == ["O", "B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    # a CoNLL file as input (said explicitly), and stdout as output
    result = run_cli(
        "task=ner",
        "mode=predict",
        f"ckpt={ckpt}",
        f"input={trained['files']['dev']}",
        "input_format=conll",
        f"hydra.run.dir={tmp_path / 'q'}",
    )
    assert result.returncode == 0
    assert result.stdout.count("\n\n") == 60
    # raw text whose lines end in tag-shaped words is still raw text: nothing is dropped
    result = run_cli(
        "task=ner", "mode=predict", f"ckpt={ckpt}", stdin="Drive north on I-95\nGo O\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert [line.split("\t")[0] for line in result.stdout.split()[::2]] == [
        "Drive", "north", "on", "I-95", "Go", "O"
    ]  # fmt: skip
    # text on stdin
    result = run_cli(
        "task=ner",
        "mode=predict",
        f"ckpt={ckpt}",
        f"hydra.run.dir={tmp_path / 'r'}",
        stdin="in Rome .\n",
    )
    assert result.stdout.splitlines()[:3] == ["in\tO", "Rome\tB-LOC", ".\tO"]


def test_resume_auto_continues_the_run(trained, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained["run"], run)
    result = run_cli(
        "task=ner",
        f"data.train={trained['files']['train']}",
        f"data.dev={trained['files']['dev']}",
        "data.test=null",
        "trainer.max_epochs=7",
        "trainer.resume=auto",
        f"hydra.run.dir={run}",
        *SMALL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "resumed from" in result.stderr
        and "epoch 7/7" in result.stderr
        and "epoch 6/7" not in result.stderr
    )
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 1 + 7


def one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def test_bad_input_is_one_clear_line(tmp_path, toy_conll):
    bad = tmp_path / "bad.txt"
    bad.write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP\n")
    result = run_cli(
        "task=ner",
        f"data.train={bad}",
        f"data.dev={toy_conll['dev']}",
        f"hydra.run.dir={tmp_path / 'a'}",
        *SMALL,
    )
    one_line_error(result, f"{bad}:2:", "columns")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("M\u00fcnchen NNP B-NP B-LOC\n".encode("latin-1"))
    result = run_cli(
        "task=ner",
        f"data.train={toy_conll['train']}",
        f"data.dev={latin}",
        f"hydra.run.dir={tmp_path / 'b'}",
        *SMALL,
    )
    one_line_error(result, f"{latin}:1:", "UTF-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = run_cli(
        "task=ner",
        f"data.train={empty}",
        f"data.dev={toy_conll['dev']}",
        f"hydra.run.dir={tmp_path / 'c'}",
        *SMALL,
    )
    one_line_error(result, str(empty), "empty")


def test_missing_corpus_says_where_it_looked(tmp_path):
    result = run_cli(
        "task=ner", f"data.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    one_line_error(result, str(tmp_path / "nowhere" / "conll2003" / "train.txt"), "data.root")


def test_unknown_or_invalid_config_is_rejected(tmp_path):
    result = run_cli("task=ner", "trainer.no_such_key=1", f"hydra.run.dir={tmp_path / 'a'}")
    assert result.returncode != 0 and "no_such_key" in result.stderr
    result = run_cli("task=ner", "+model.no_such_key=1", f"hydra.run.dir={tmp_path / 'b'}")
    one_line_error(result, "model.no_such_key")
    result = run_cli("task=ner", "model.cell=rnn", f"hydra.run.dir={tmp_path / 'c'}")
    one_line_error(result, "model.cell", "lstm")


def test_multirun_sweep_makes_one_folder_per_run(tmp_path, toy_conll):
    result = run_cli(
        "--multirun",
        "task=ner",
        f"data.train={toy_conll['train']}",
        f"data.dev={toy_conll['dev']}",
        "data.test=null",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "model.cell=lstm,gru",
        f"hydra.sweep.dir={tmp_path}",
        *SMALL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit()) == [
        "0",
        "1",
    ]
    assert "cell: gru" in (tmp_path / "1" / "config.yaml").read_text()
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [line["job"] for line in lines] == [0, 1]  # each line says which job it is
    assert [o for o in lines[1]["overrides"] if o.startswith("model.cell")] == ["model.cell=gru"]
    for line, run in zip(lines, ("0", "1"), strict=True):
        metrics = json.loads((tmp_path / run / "metrics.json").read_text())
        assert {k: line[k] for k in metrics} == metrics and "job" not in metrics


def test_default_glove50_embeddings_run(tmp_path, toy_conll):
    result = run_cli(
        "task=ner",
        f"data.train={toy_conll['train']}",
        f"data.dev={toy_conll['dev']}",
        f"data.test={toy_conll['test']}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.progress_bar=false",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "embeddings glove50: pretrained rows for" in result.stderr
    assert "Embedding(" in (tmp_path / "run.log").read_text()


def test_wheel_ships_the_configs(tmp_path):
    import subprocess
    import sys

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("nlp_lstm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for config in (
        "config.yaml",
        "task/ner.yaml",
        "model/bilstm_crf.yaml",
        "hydra/job_logging/nlp_lstm.yaml",
    ):
        assert f"nlp_lstm/conf/{config}" in names


def test_quick_predict_gives_what_the_composed_config_gives(trained, tmp_path, monkeypatch):
    """A plain mode=predict call skips Hydra (its config comes from the checkpoint); its
    output equals a call that composes (hydra.run.dir makes the call a composed one)."""
    import nlp_lstm.cli as cli
    from tests.cli_helpers import run_main

    ckpt = trained["run"] / "checkpoints/best.pt"
    text = "Mr John Smith said in Paris .\nthe Google Corp deal was new .\n"
    plain = ["task=ner", "mode=predict", f"ckpt={ckpt}", "trainer.eval_batch_size=1"]
    assert cli.quick_predict_config(plain) is not None
    assert cli.quick_predict_config([*plain, f"hydra.run.dir={tmp_path}"]) is None
    assert cli.quick_predict_config([*plain, "model.hidden_size=3"]) is None
    assert cli.quick_predict_config(["task=ner", "mode=test", f"ckpt={ckpt}"]) is None
    assert cli.quick_predict_config(["task=translate", "mode=predict", f"ckpt={ckpt}"]) is None
    ran = []
    monkeypatch.setattr(
        cli,
        "run",
        lambda cfg, run_dir=None, _run=cli.run: ran.append(run_dir) or _run(cfg, run_dir),
    )
    code, quick, err = run_main(*plain, stdin=text)
    assert code == 0, err[-2000:]
    assert ran and ran[-1] is not None  # the quick path passed its own folder
    code, composed, err = run_main(*plain, f"hydra.run.dir={tmp_path / 'h'}", stdin=text)
    assert code == 0, err[-2000:]
    assert quick == composed and quick.count("\n\n") == 2
    # a task that is not the checkpoint's is one line, exit 2, on the quick path too
    code, out, err = run_main("task=sentiment", "mode=predict", f"ckpt={ckpt}", stdin=text)
    assert code == 2 and err.count("error:") == 1 and "not 'sentiment'" in err and not out


def test_a_run_logged_to_a_file_has_epoch_lines_and_no_bar(tmp_path, toy_conll):
    """stderr redirected (CI, nohup): no progress-bar fragments, one line per epoch and a
    line at each quarter of it; the bar is for terminals (or trainer.progress_bar=true)."""
    args = [a for a in SMALL if not a.startswith("trainer.progress_bar")]
    result = run_cli(
        "task=ner", f"data.train={toy_conll['train']}", f"data.dev={toy_conll['dev']}",
        "data.test=null", "trainer.max_epochs=2", f"hydra.run.dir={tmp_path}", *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    assert sum("] epoch 1/2 " in line for line in lines) == 1
    assert sum("] epoch 2/2 " in line for line in lines) == 1
    quarters = [line for line in lines if "] epoch 1: " in line]
    percents = [int(q.split("] epoch 1: ")[1].split("%")[0]) for q in quarters]
    assert len(percents) == 3 and 0 < percents[0] < percents[1] < percents[2] < 100
