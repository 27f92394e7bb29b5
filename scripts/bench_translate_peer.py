"""nlp_lstm against OpenNMT-py on the same translation model and the same wall-clock
budget, one after the other in one invocation: Multi30k de->en on this machine's CPU.

    python scripts/bench_translate_peer.py --minutes 10 --threads 1 \\
        --json scripts/results/bench_translate_peer_cpu.json

* the peer: ``../shared/bench/peer_onmt_translate.sh`` (read its header: it builds
  OpenNMT-py 3.5.1 in its own venv on the first run). It trains a fixed number of steps, so
  a short probe run (``--probe-steps``, 20 val lines) measures its seconds per step first,
  and the main run gets ``minutes x 60 / seconds per step`` steps (``--peer-steps N``
  skips the probe);
* ours: ``python -m nlp_lstm experiment=translate_onmt_rnn trainer.max_minutes=M`` (the
  same shape: joint BPE 8k, BiLSTM 2 x 256, decoder 2 x 256, general attention, input
  feeding, dropout 0.3, Adam 1e-3, 2,048-token batches), under ``/usr/bin/time -v``, once
  per ``--precisions`` (default: the recipe's bf16 autocast, then float32 as the peer).

Both print val BLEU (sacreBLEU, detokenised, against the raw references) greedy and with
a beam of 5 after training, the decoding seconds of each (model time), the training target
tokens per second (EOS included), the peak training RSS and the parameter count. The JSON
holds ``{"peer": {...}, "ours": {...}, "ratios": {...}}`` (ours: the first precision) and
every precision's run and ratios under ``ours_by_precision`` and ``ratios_by_precision``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEER = REPO.parent / "shared" / "bench" / "peer_onmt_translate.sh"
KEYS = ("tgt_tokens_per_s", "steps", "bleu_greedy", "bleu_beam5", "decode_greedy_s",
        "decode_beam5_s", "peak_rss_mib", "params", "train_wall_s")  # fmt: skip
RATIO_KEYS = ("tgt_tokens_per_s", "steps", "peak_rss_mib", "decode_greedy_s", "decode_beam5_s")


def run_peer(steps: int, threads: int, data: Path, val_lines: int | None = None) -> dict:
    """One run of the peer script; its table parsed."""
    env = {**os.environ, "TRAIN_STEPS": str(steps), "THREADS": str(threads),
           "PEER_DATA": str(data)}  # fmt: skip
    if val_lines:
        env["VAL_LINES"] = str(val_lines)
    done = subprocess.run(["bash", str(PEER)], capture_output=True, text=True, env=env,
                          cwd=REPO, check=False)  # fmt: skip
    if done.returncode:
        sys.exit(f"the peer failed:\n{done.stderr[-3000:]}")
    table = done.stdout

    def value(label: str) -> float:  # the table prints f"{label:58s} {value}"
        line = next(line for line in table.splitlines() if line.startswith(label))
        return float(line[58:].split()[0].replace(",", ""))

    run_dir = Path(next(ln for ln in table.splitlines() if ln.startswith("run dir")).split()[-1])
    params = re.search(r"parameters: (\d+)", (run_dir / "train.out").read_text())
    return {
        "tgt_tokens_per_s": value("training target tokens/s"),
        "steps": steps,
        "seconds_per_1k_steps": value("seconds per 1,000 steps"),
        "bleu_greedy": value("val BLEU greedy"),
        "bleu_beam5": value("val BLEU beam 5"),
        "decode_greedy_s": value("decode val greedy s"),
        "decode_beam5_s": value("decode val beam 5 s"),
        "peak_rss_mib": value("training peak RSS MiB"),
        "params": int(params.group(1)) if params else None,
        "train_wall_s": value("training wall s"),
        "run_dir": str(run_dir),
        "table": table,
    }


def gnu_time(path: Path) -> dict[str, float]:
    fields = {}
    for line in path.read_text().splitlines():
        key, _, val = line.strip().rpartition(": ")
        fields[key] = val
    return {"peak_rss_mib": int(fields["Maximum resident set size (kbytes)"]) / 1024}


def run_ours(minutes: float, threads: int, precision: str, data: Path, out: Path,
             extra: list[str]) -> dict:  # fmt: skip
    """The matched recipe at ``precision`` for ``minutes`` of training; its reports parsed."""
    import nlp_lstm

    run_dir = out / f"ours-{precision}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = ["/usr/bin/time", "-v", "-o", str(out / "ours.time"), sys.executable, "-m",
               "nlp_lstm", "experiment=translate_onmt_rnn", f"trainer.max_minutes={minutes}",
               "trainer.max_epochs=1000", "trainer.patience=0", f"trainer.num_threads={threads}",
               f"trainer.precision={precision}", "trainer.progress_bar=false",
               f"hydra.run.dir={run_dir}", *extra]  # fmt: skip
    env = {**os.environ, "NLP_LSTM_DATA": str(data), "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    if done.returncode:
        sys.exit(f"nlp_lstm failed:\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - started
    final = json.loads((run_dir / "metrics.json").read_text())
    with open(run_dir / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    seconds = sum(float(r["epoch_seconds"]) for r in rows)
    tokens = sum(float(r["train_units_per_s"]) * float(r["epoch_seconds"]) for r in rows)
    model = nlp_lstm.load(run_dir / "checkpoints" / "best.pt", "cpu").model
    params = sum(p.numel() for p in model.parameters())
    return {
        "precision": precision,
        "tgt_tokens_per_s": tokens / seconds,
        "steps": int(float(rows[-1]["step"])),
        "epochs": len(rows),
        "bleu_greedy": final["greedy_bleu"],
        "bleu_beam5": final["bleu"],
        "decode_greedy_s": final["greedy_seconds"],
        "decode_beam5_s": final["beam_seconds"],
        **gnu_time(out / "ours.time"),
        "params": params,
        "train_wall_s": wall,
        "train_seconds_in_epochs": seconds,
        "run_dir": str(run_dir),
    }


def shown(value) -> str:
    return f"{value:>14,.2f}" if isinstance(value, float) else f"{value!s:>14}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--probe-steps", type=int, default=100)
    parser.add_argument("--peer-steps", type=int, help="skip the probe: train the peer N steps")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["bf16", "32"],
        help="our runs, one per trainer.precision (the first is the JSON's ours)",
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_translate_peer"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("overrides", nargs="*", help="extra key=value for nlp_lstm's run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    steps = args.peer_steps
    probe = None
    if steps is None:
        probe = run_peer(args.probe_steps, args.threads, args.data, val_lines=20)
        steps = max(1, round(args.minutes * 60 / (probe["seconds_per_1k_steps"] / 1000)))
        print(f"peer probe: {probe['seconds_per_1k_steps']:.0f} s per 1,000 steps -> {steps} "
              f"steps in {args.minutes:g} minutes", flush=True)  # fmt: skip
    peer = run_peer(steps, args.threads, args.data)
    print(peer.pop("table"), flush=True)
    runs = {p: run_ours(args.minutes, args.threads, p, args.data, args.out, args.overrides)
            for p in args.precisions}  # fmt: skip
    ratios = {
        precision: {key: ours[key] / peer[key] for key in RATIO_KEYS}
        for precision, ours in runs.items()
    }
    print(f"\nbudget: {args.minutes:g} minutes of training each, "
          f"{args.threads} thread(s), one after the other")  # fmt: skip
    print(f"{'':24}{'OpenNMT-py':>14}" + "".join(f"{'ours ' + p:>14}{'/peer':>8}" for p in runs))
    for key in KEYS:
        row = f"{key:<24}{shown(peer.get(key))}"
        for precision, ours in runs.items():
            ratio = f"{ratios[precision][key]:>7.2f}x" if key in RATIO_KEYS else " " * 8
            row += f"{shown(ours.get(key))}{ratio}"
        print(row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        first = args.precisions[0]
        report = {"minutes": args.minutes, "threads": args.threads, "peer": peer,
                  "ours": runs[first], "ratios": ratios[first],
                  "ours_by_precision": runs, "ratios_by_precision": ratios,
                  "probe": probe and {k: v for k, v in probe.items() if k != "table"}}  # fmt: skip
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
