"""``kill -9`` in the middle of training, then ``trainer.resume=auto``: the run ends exactly
where an uninterrupted run ends (one CPU thread makes the arithmetic repeatable), and no
temporary file is left behind."""

import os
import signal
import subprocess
import sys
import time

import torch

from nlp_lstm.checkpoint import load_checkpoint
from tests.cli_helpers import REPO, run_cli
from tests.conftest import toy_ner_sentences, write_conll


def test_kill_9_then_resume_is_bit_identical(tmp_path):
    train = write_conll(tmp_path / "train.txt", toy_ner_sentences(200, seed=1))
    dev = write_conll(tmp_path / "dev.txt", toy_ner_sentences(40, seed=2))
    args = [
        "task=ner", f"data.train={train}", f"data.dev={dev}", "data.test=null",
        "embeddings=random", "embeddings.dim=16", "model.hidden_size=16",
        "trainer.max_epochs=5", "trainer.batch_size=8", "trainer.num_threads=1",
        "trainer.progress_bar=false", "trainer.lr_schedule=plateau",
    ]  # fmt: skip
    full = run_cli(*args, f"hydra.run.dir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-2000:]

    cut = tmp_path / "cut"
    process = subprocess.Popen(
        [sys.executable, "-m", "nlp_lstm", *args, f"hydra.run.dir={cut}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = cut / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    epoch = load_checkpoint(last).payload["trainer"]["epoch"]
    assert 1 <= epoch < 5  # killed mid-run
    # what a kill during a checkpoint or metrics write leaves: torn temporary files
    (cut / "checkpoints" / ".last.pt.x1y2z3.tmp").write_bytes(b"half a checkpoint")
    (cut / ".metrics.csv.x1y2z3.tmp").write_text("epoch,lo")

    resumed = run_cli(*args, "trainer.resume=auto", f"hydra.run.dir={cut}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {last} at epoch {epoch}" in resumed.stderr
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(last)
    assert a.payload["trainer"]["epoch"] == b.payload["trainer"]["epoch"] == 5
    for name, value in a.model.items():
        assert torch.equal(value, b.model[name]), name
    assert [r["dev_f1"] for r in a.payload["trainer"]["history"]] == [
        r["dev_f1"] for r in b.payload["trainer"]["history"]
    ]
    assert not list(cut.rglob("*.tmp"))
