"""Seconds from process start to the first tagged sentence, and each process's peak RSS:
``python -m nlp_lstm task=ner mode=predict`` on the quick path (config from the checkpoint)
and composed by Hydra (what every call did before the quick path), beside ``import torch``
alone and an exported ONNX graph served with numpy + onnxruntime (scripts/tag_onnx.py).

    NLP_LSTM_DATA=../shared/data python scripts/bench_predict_start.py --ckpt runs/ner/.../best.pt \
        [--repeats 5] [--json scripts/results/bench_predict_start_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SENTENCE = "Peter Blackburn visited Berlin on Monday .\n"


def first_output(command: list[str], cwd: str | None = None) -> tuple[float, float]:
    """Seconds until the command's first stdout line, and its peak RSS in MiB."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, cwd=cwd,
    )  # fmt: skip
    process.stdin.write(SENTENCE)
    process.stdin.close()
    line = process.stdout.readline()
    seconds = time.perf_counter() - start
    process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0 or (not line and "import" not in command[-1]):
        raise SystemExit(f"failed: {' '.join(command)}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    parser.add_argument("--before", help="a checkout of the code to compare with (its "
                        "python -m nlp_lstm runs from there), e.g. a git worktree")  # fmt: skip
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "ner.onnx"
        subprocess.run([python, "-m", "nlp_lstm", "task=ner", "mode=export", f"ckpt={args.ckpt}",
                        "export.format=onnx", f"export.path={onnx_path}"],
                       check=True, capture_output=True)  # fmt: skip
        predict = [python, "-m", "nlp_lstm", "task=ner", "mode=predict", f"ckpt={args.ckpt}"]
        cases = {
            "import torch (floor)": [python, "-c", "import torch; print(flush=True)"],
            "predict, composed by Hydra": [*predict, f"hydra.run.dir={folder}/run"],
            "predict, quick path": predict,
            "ONNX graph, onnxruntime only": [python, str(Path(__file__).with_name("tag_onnx.py")), str(onnx_path)],
        }  # fmt: skip
        folders = dict.fromkeys(cases)
        if args.before:
            name = f"predict, code at {args.before}"
            cases[name], folders[name] = predict, args.before
        rows = []
        for _ in range(args.repeats):  # interleaved, so load changes hit every case alike
            for name, command in cases.items():
                rows.append((name, *first_output(command, folders[name])))
        results = []
        for name in cases:
            runs = [(s, m) for n, s, m in rows if n == name]
            seconds = [s for s, _ in runs]
            results.append({"case": name, "median_s": statistics.median(seconds), "min_s": min(seconds),
                            "max_s": max(seconds), "peak_rss_mib": max(m for _, m in runs)})  # fmt: skip
            print(f"{name:38} median {results[-1]['median_s']:.2f} s (min {min(seconds):.2f}, "
                  f"max {max(seconds):.2f})  peak {results[-1]['peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
    if args.json:
        summary = {"repeats": args.repeats, "sentence": SENTENCE.strip(), "rows": results}
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
