"""The Optuna search drives real training runs from a conf/hparams_search config."""

import json
import subprocess
import sys

import yaml

from tests.cli_helpers import REPO


def test_ner_search_config_composes_and_runs_two_tiny_trials(tmp_path, toy_conll):
    search = yaml.safe_load((REPO / "conf/hparams_search/ner_optuna.yaml").read_text())
    assert search["task"] == "ner" and search["metric"] == "f1"
    tiny = [
        f"data.train={toy_conll['train']}", f"data.dev={toy_conll['dev']}", "data.test=null",
        "debug=tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
    ]  # fmt: skip
    study = tmp_path / "study"
    command = [sys.executable, "scripts/search.py", "ner_optuna", "--n-trials", "2",
               "--study-dir", str(study), *tiny]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [line["trial"] for line in lines] == [0, 1]
    for line in lines:
        assert set(line["params"]) == set(search["params"])
        assert 100 <= line["params"]["model.hidden_size"] <= 300
        assert 0.0005 <= line["params"]["trainer.lr"] <= 0.005
        run = study / str(line["trial"])
        metrics = json.loads((run / "metrics.json").read_text())
        assert line["f1"] == metrics["f1"]
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["model"]["hidden_size"] == line["params"]["model.hidden_size"]
        assert config["trainer"]["max_epochs"] == 1  # the command line beats the search's own
    # the same command again continues the stored study
    result = subprocess.run([*command[:3], "--n-trials", "1", *command[5:]], cwd=REPO,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["trial"] == 2
    summary = subprocess.run(
        [sys.executable, "scripts/sweep_summary.py", str(study), "--sort", "f1"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert summary.returncode == 0, summary.stderr
    listed = [row.split()[0] for row in summary.stdout.splitlines()[:3]]
    f1 = {run: json.loads((study / run / "metrics.json").read_text())["f1"] for run in listed}
    assert sorted(listed) == ["0", "1", "2"]
    assert [f1[run] for run in listed] == sorted(f1.values(), reverse=True)
