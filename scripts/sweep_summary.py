"""Summarise a ``--multirun`` sweep: each run's overrides and metrics, then mean, standard
deviation and range of every scalar metric across the runs.

    python -m nlp_lstm --multirun task=sentiment trainer.seed=1,2,3 hydra.sweep.dir=multirun/sst2
    python scripts/sweep_summary.py multirun/sst2 [--json summary.json]

``--group-by data.horizon`` summarises each value of that override on its own (seeds of
several settings in one sweep); ``--sort f1`` lists the runs best first (an Optuna search's
trials: ``python scripts/search.py``); ``--digits`` sets the printed precision.
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
    parser.add_argument("--group-by", help="an override key whose values are summarised apart")
    parser.add_argument("--digits", type=int, default=2)
    parser.add_argument("--sort", help="list the runs by this metric, best (highest) first")
    parser.add_argument("--ascending", action="store_true", help="with --sort: lowest first")
    args = parser.parse_args()
    runs = []
    for metrics_file in sorted(
        args.sweep_dir.glob("*/metrics.json"), key=lambda p: p.parent.name.zfill(6)
    ):
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
    if args.sort:
        if args.sort not in keys:
            raise SystemExit(f"--sort {args.sort}: the runs report {', '.join(keys)}")
        runs.sort(key=lambda run: run["metrics"][args.sort], reverse=not args.ascending)
    d = args.digits
    for run in runs:
        values = "  ".join(f"{k} {run['metrics'][k]:.{d}f}" for k in keys)
        print(f"{run['run']:>4}  {values}  [{' '.join(run['overrides'])}]")
    groups: dict[str, list[dict]] = {}
    for run in runs:
        value = next(
            (o.split("=", 1)[1] for o in run["overrides"] if o.split("=", 1)[0] == args.group_by),
            "all",
        )
        groups.setdefault(value, []).append(run)
    summary = {}
    for group, members in groups.items():
        if args.group_by:
            print(f"{args.group_by}={group}")
        summary[group] = {}
        for key in keys:
            values = [run["metrics"][key] for run in members]
            s = summary[group][key] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values),
                "max": max(values),
            }
            print(
                f"  {key}: mean {s['mean']:.{d}f} ± {s['std']:.{d}f} "
                f"(min {s['min']:.{d}f}, max {s['max']:.{d}f}, n={len(values)})"
            )
    if not args.group_by:
        summary = summary["all"]
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
