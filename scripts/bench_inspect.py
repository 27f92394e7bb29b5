"""What looking inside costs: a trained model's recurrent modules over the first positions
of a split, run three ways in the same invocation, each in a fresh process (so each peak
RSS is its own):

* ``forward``: the inspect pipeline (same inputs, batches, embedding and decoding) with the
  fused ``nn.LSTM``/``nn.GRU`` in place of the gate recomputation: the plain forward pass;
* ``inspect``: :func:`nlp_lstm.inside.run_modules`, every gate recomputed step by step;
* ``scan``: ``inspect`` plus the running sums of mode=inspect's cells and saturation
  (:func:`nlp_lstm.cells.scan`).

    python scripts/bench_inspect.py --ckpt runs/charlm/RUN/checkpoints/best.pt \\
        --positions 20000 --json scripts/results/bench_inspect_charlm.json

Times are the best of ``--repeats``; ratios are against ``forward`` of the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

PHASES = ("forward", "inspect", "scan")


def fused(rnn, inputs, lengths=None, state=None):
    """The fused module over the same inputs (packed when lengths are given)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    if lengths is not None:
        inputs = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
    rnn(inputs, state)
    return {}


def run_phase(args) -> dict:
    import torch

    import nlp_lstm
    from nlp_lstm import cells, inside

    torch.set_num_threads(args.threads)
    predictor = nlp_lstm.load(args.ckpt, "cpu")
    data = dict(predictor.bundle.config.get("data", {}))
    sample = cells.read_sample(predictor, data, args.split, args.positions)
    if args.phase == "forward":
        inside.rnn_gates = fused  # the runners call it by this module-level name

    def work():
        if args.phase == "scan":
            return cells.scan(predictor, sample)
        for start in range(0, len(sample.items), inside.BATCH):
            indices = list(range(start, min(start + inside.BATCH, len(sample.items))))
            cells.sample_modules(predictor, sample, indices)
        return None

    times = []
    for _ in range(args.repeats):
        began = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - began)
    return {
        "seconds": min(times),
        "inputs": len(sample.items),
        "positions": sum(result.positions.values()) if result else None,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--positions", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args)))
        return
    results = {}
    for phase in PHASES:
        command = [sys.executable, __file__, "--phase", phase, "--ckpt", args.ckpt,
                   "--split", args.split, "--positions", str(args.positions),
                   "--repeats", str(args.repeats), "--threads", str(args.threads)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"{phase} failed:\n{done.stderr[-3000:]}")
        results[phase] = json.loads(done.stdout.strip().splitlines()[-1])
    base = results["forward"]["seconds"]
    positions = results["scan"]["positions"]
    print(f"{args.ckpt}: {results['scan']['inputs']:,} inputs, {positions:,} positions "
          f"of the {args.split} split, {args.threads} thread(s)")  # fmt: skip
    print(f"{'pass':<10}{'seconds':>10}{'positions/s':>14}{'vs forward':>12}{'peak RSS MiB':>15}")
    for phase, result in results.items():
        result["ratio_to_forward"] = result["seconds"] / base
        print(f"{phase:<10}{result['seconds']:>10.2f}{positions / result['seconds']:>14,.0f}"
              f"{result['ratio_to_forward']:>11.1f}x{result['peak_rss_mib']:>15,.0f}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"ckpt": str(args.ckpt), "split": args.split, "threads": args.threads,
                  "positions": positions, "phases": results}  # fmt: skip
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
