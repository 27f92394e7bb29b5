"""Char LM generation speed: characters per second of a trained char LM continuing a
prompt, stepping its LSTM the old way (``nn.LSTM`` over one position: oneDNN's sequence
kernel, set up anew at every call) and through ``rnn_step`` (the fused cell kernels), in
the same run, with the samples of both checked equal.

    python scripts/bench_generate.py --ckpt runs/charlm/RUN/checkpoints/best.pt \\
        --threads 2 --json scripts/results/bench_generate_cpu.json

Both ways run the same sampling code (temperature 0.8, the given seeds) through the
predictor (``Generator.generate``: what ``mode=predict`` and ``mode=serve`` call); the
old way is restored by stepping ``model.logits`` over one position, as before. Times are
the best of ``--repeats``; peak RSS is read after each way.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt", default="ROMEO:\n")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    import nlp_lstm

    torch.set_num_threads(args.threads)
    generator = nlp_lstm.load(args.ckpt, "cpu")
    model = generator.model
    lean_step = model.step

    def module_step(ids, state):  # the step before rnn_step: nn.LSTM over one position
        logits, state = model.logits(ids.unsqueeze(1), state)
        return logits[:, -1], state

    results, samples = {}, {}
    for name, step in (("nn.LSTM step", module_step), ("rnn_step", lean_step)):
        model.step = step
        generator.generate(args.prompt, length=50, seed=0)  # warm-up
        times = []
        for seed in range(args.repeats):
            began = time.perf_counter()
            samples.setdefault(seed, []).append(
                generator.generate(args.prompt, length=args.length, seed=seed)
            )
            times.append(time.perf_counter() - began)
        best = min(times)
        results[name] = {
            "seconds": best,
            "chars_per_s": args.length / best,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    model.step = lean_step
    same = all(a == b for a, b in samples.values())
    base = results["nn.LSTM step"]["chars_per_s"]
    rnn = model.rnn
    print(f"{args.ckpt}: {rnn.num_layers} x {rnn.hidden_size} {type(rnn).__name__}, "
          f"{args.length} chars x {args.repeats} seeds, {args.threads} thread(s); "
          f"samples equal: {same}")  # fmt: skip
    print(f"{'step':<16}{'chars/s':>10}{'speed-up':>10}{'peak RSS MiB':>15}")
    for name, result in results.items():
        result["speedup"] = result["chars_per_s"] / base
        print(f"{name:<16}{result['chars_per_s']:>10,.0f}{result['speedup']:>9.1f}x"
              f"{result['peak_rss_mib']:>15,.0f}")  # fmt: skip
    if not same:
        raise SystemExit("the two ways sampled different text")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"ckpt": args.ckpt, "threads": args.threads, "length": args.length,
                  "samples_equal": same, "results": results}  # fmt: skip
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
