"""Several processes on the CPU (gloo), as torchrun runs them."""

import csv
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from nlp_lstm.checkpoint import load_checkpoint
from nlp_lstm.data.batching import BucketBatchSampler
from nlp_lstm.train import distributed
from nlp_lstm.train.trainer import Trainer
from tests.cli_helpers import last_json, run_cli
from tests.conftest import toy_ner_sentences, write_conll
from tests.toy_jobs import quiet, toy_job

SGD = dict(optimizer="sgd", lr=0.5, momentum=0.0, batch_size=8, eval_batch_size=8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, run_dir: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    distributed.init_from_env("gloo")
    try:
        job = toy_job(n=32)
        trainer = Trainer(quiet(limit_train_batches=1, **SGD), run_dir)
        best = trainer.fit(job)
        torch.save(
            {"model": job.model.state_dict(), "metrics": best, "step": trainer.state.step},
            os.path.join(run_dir, f"rank{rank}.pt"),
        )
    finally:
        distributed.shutdown()


def test_two_processes_step_like_one_process_that_saw_both_shards(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    mp.spawn(_worker, args=(2, free_port(), str(run_dir)), nprocs=2, join=True)
    ranks = [torch.load(run_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["step"] == ranks[1]["step"] == 1

    # one process, one SGD step on the union of the two ranks' first batches
    job = toy_job(n=32)
    start = {k: v.clone() for k, v in job.model.state_dict().items()}
    sampler = BucketBatchSampler(job.train.lengths, 8, shuffle=True, seed=42, world_size=2)
    sampler.set_epoch(1)
    first, second = sampler.global_batches()[:2]
    loss_sum, count = job.model(job.train.collate(first + second))
    (loss_sum / count).backward()
    with torch.no_grad():
        for p in job.model.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad
    changed = 0
    for name, value in job.model.state_dict().items():
        for rank in ranks:
            torch.testing.assert_close(rank["model"][name], value, atol=1e-6, rtol=1e-5)
        changed += int(not torch.equal(value, start[name]))
    assert changed > 5

    # one set of checkpoints, from rank 0, resumable on both ranks
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert len(last.payload["rng"]) == 2
    with open(run_dir / "metrics.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 1

    # every rank got the same dev metrics, equal to one process scoring the checkpoint
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    fresh = toy_job(n=32)
    fresh.model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.pt").model)
    single = Trainer(quiet(**SGD), None).evaluate(
        fresh.model, fresh.dev, fresh.predict, fresh.score
    )
    assert single == ranks[0]["metrics"]


@pytest.mark.slow
def test_torchrun_cli_trains_into_one_run_folder_and_resumes(tmp_path):
    train = write_conll(tmp_path / "train.txt", toy_ner_sentences(120, seed=1))
    dev = write_conll(tmp_path / "dev.txt", toy_ner_sentences(40, seed=2))
    args = [
        "task=ner",
        f"data.train={train}",
        f"data.dev={dev}",
        "data.test=null",
        "embeddings=random",
        "embeddings.dim=16",
        "model.hidden_size=16",
        "trainer.max_epochs=2",
        "trainer.batch_size=8",
        "trainer.progress_bar=false",
    ]

    def torchrun(*extra):
        return subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
            + ["-m", "nlp_lstm", *args, *extra],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"},
        )

    done = torchrun()
    assert done.returncode == 0, done.stderr[-3000:]
    folders = list((tmp_path / "runs" / "ner").iterdir())
    assert len(folders) == 1  # both ranks wrote to the same run folder
    run = folders[0]
    assert {"config.yaml", "metrics.json", "metrics.csv", "curves.png", "run.log"} <= {
        p.name for p in run.iterdir()
    }
    json_lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(json_lines) == 1  # results printed by rank 0 only
    trained = json.loads(json_lines[0])

    # the checkpoint scores the same on dev in a single process
    tested = run_cli(
        "task=ner",
        "mode=test",
        f"ckpt={run}/checkpoints/best.pt",
        f"data.test={dev}",
        f"hydra.run.dir={tmp_path}/test",
    )
    assert tested.returncode == 0, tested.stderr[-2000:]
    assert last_json(tested.stdout)["f1"] == trained["f1"]

    resumed = torchrun("trainer.resume=auto", "trainer.max_epochs=3", f"hydra.run.dir={run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with open(run / "metrics.csv") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [1, 2, 3]

    # predict under torchrun: one process writes the file, the same file as one process
    raw = tmp_path / "raw.txt"
    raw.write_text("Mr John Smith said in Paris. The Google Corp deal was new.\nin Rome .\n")
    ckpt = f"ckpt={run}/checkpoints/best.pt"
    single = run_cli(
        "task=ner", "mode=predict", ckpt, f"input={raw}", f"output={tmp_path / 'one.tsv'}"
    )
    assert single.returncode == 0, single.stderr[-2000:]
    both = torchrun("mode=predict", ckpt, f"input={raw}", f"output={tmp_path / 'two.tsv'}")
    assert both.returncode == 0, both.stderr[-2000:]
    assert (tmp_path / "two.tsv").read_text() == (tmp_path / "one.tsv").read_text()
    assert (tmp_path / "one.tsv").read_text().count("\n\n") == 3  # three sentences
