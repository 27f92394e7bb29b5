"""One NER training epoch in one process against torchrun + DistributedDataParallel.

    NLP_LSTM_DATA=../shared/data python scripts/bench_ddp.py --json scripts/results/bench_ddp_cpu.json

Runs the default ``task=ner`` for one epoch (no early stop, same data, same per-process
batch size) as (a) one process with ``--threads`` x ``--nproc`` threads and (b)
``torchrun --nproc_per_node=N`` with ``--threads`` threads each, and reads the epoch's
training throughput from each run's metrics.csv. Prints a table and writes JSON with the
peak RSS of the largest process beside every time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# runs a command and prints the peak RSS (KiB) of the largest process it started: a fresh
# wrapper per measurement, since RUSAGE_CHILDREN keeps the maximum of every child ever waited
MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(done.stderr[-3000:] if done.returncode else "")
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(done.returncode)
"""


def run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and the peak RSS (MiB) of the largest process this command started."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *command], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr}")
    return seconds, int(done.stdout.split()[-1]) / 1024


def epoch_row(run_dir: Path) -> dict[str, str]:
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per torchrun process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    common = [
        "task=ner",
        "trainer.max_epochs=1",
        f"trainer.device={args.device}",
        "trainer.progress_bar=false",
    ]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        configurations = [
            (
                f"1 process x {args.nproc * args.threads} threads",
                [sys.executable, "-m", "nlp_lstm", *common],
                args.nproc * args.threads,
            ),
            (
                f"torchrun {args.nproc} processes x {args.threads} threads",
                [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    f"--nproc_per_node={args.nproc}",
                    "-m",
                    "nlp_lstm",
                    *common,
                ],
                args.threads,
            ),
        ]
        for index, (name, command, threads) in enumerate(configurations):
            run_dir = Path(tmp) / f"run{index}"
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            command = [*command, f"trainer.num_threads={threads}", f"hydra.run.dir={run_dir}"]
            wall, peak = run(command, env)
            row = epoch_row(run_dir)
            results.append(
                {
                    "configuration": name,
                    "train_sentences_per_s": round(float(row["train_examples_per_s"]), 1),
                    "epoch_seconds": round(float(row["epoch_seconds"]), 2),
                    "dev_f1_after_one_epoch": float(row["dev_f1"]),
                    "wall_seconds_with_startup": round(wall, 1),
                    "peak_rss_mib_largest_process": round(peak),
                }
            )
    base = results[0]["train_sentences_per_s"]
    for row in results:
        row["speedup"] = round(row["train_sentences_per_s"] / base, 2)
    print(
        f"{'configuration':<34} {'sent/s':>8} {'epoch s':>8} {'speedup':>8} {'dev F1':>7} {'RSS MiB':>8}"
    )
    for row in results:
        print(
            f"{row['configuration']:<34} {row['train_sentences_per_s']:8.0f} {row['epoch_seconds']:8.1f}"
            f" {row['speedup']:8.2f} {row['dev_f1_after_one_epoch']:7.2f}"
            f" {row['peak_rss_mib_largest_process']:8d}"
        )
    if args.json:
        import torch

        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "device": args.device,
            },
            "note": "trainer.batch_size is per process: torchrun's effective batch is nproc x larger",
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
