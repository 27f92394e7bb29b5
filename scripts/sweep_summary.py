"""Summarise a ``--multirun`` sweep: each run's overrides and metrics, then mean, standard
deviation and range of every scalar metric across the runs.

    python -m nlp_lstm --multirun task=sentiment trainer.seed=1,2,3 hydra.sweep.dir=multirun/sst2
    python scripts/sweep_summary.py multirun/sst2 [--json summary.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--json", help="write the summary here")
    args = parser.parse_args()
    runs = []
    for metrics_file in sorted(args.sweep_dir.glob("*/metrics.json"), key=lambda p: p.parent.name):
        overrides_file = metrics_file.parent / ".hydra" / "overrides.yaml"
        overrides = (
            [line[2:].strip() for line in overrides_file.read_text().splitlines()]
            if overrides_file.is_file()
            else []
        )
        runs.append(
            {
                "run": metrics_file.parent.name,
                "overrides": overrides,
                "metrics": json.loads(metrics_file.read_text()),
            }
        )
    if not runs:
        raise SystemExit(f"no */metrics.json under {args.sweep_dir}")
    keys = [k for k, v in runs[0]["metrics"].items() if isinstance(v, (int, float))]
    for run in runs:
        values = "  ".join(f"{k} {run['metrics'][k]:.2f}" for k in keys)
        print(f"{run['run']:>4}  {values}  [{' '.join(run['overrides'])}]")
    summary = {}
    for key in keys:
        values = [run["metrics"][key] for run in runs]
        summary[key] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }
        s = summary[key]
        print(
            f"{key}: mean {s['mean']:.2f} ± {s['std']:.2f} (min {s['min']:.2f}, max {s['max']:.2f}, n={len(values)})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
