"""Hyperparameter search with Optuna over the toolkit's own configs.

    python scripts/search.py ner_optuna [--n-trials N] [--study-dir DIR] [key=value ...]
    python scripts/sweep_summary.py DIR --sort f1      # the table of trials, best first

A search is a YAML file under ``conf/hparams_search/``: the task, the dev metric to
optimise, fixed overrides and a search space written as hydra-optuna-sweeper writes it
(``choice(...)``, ``interval(a, b)``, ``range(a, b)``, ``tag(log, interval(a, b))``).
Each trial is one ordinary ``python -m nlp_lstm`` training run in ``DIR/<trial>`` (its
run folder: config, metrics, checkpoints, curves) and one JSON line on stdout naming the
trial, its parameters and its dev metrics. The study is stored in ``DIR/optuna.db``, so
running the same command again continues it.

Why not Hydra's sweeper plugin: hydra-optuna-sweeper 1.3 (the current release) pins
``optuna<3``, which a current Optuna install cannot satisfy; this script drives Optuna
directly, with the same search-space syntax.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import optuna
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

from nlp_lstm.config import task_module

REPO = Path(__file__).resolve().parents[1]
SEARCHES = REPO / "conf" / "hparams_search"


def load_search(name: str) -> dict:
    path = Path(name) if name.endswith((".yaml", ".yml")) else SEARCHES / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SEARCHES.glob("*.yaml")))
        raise SystemExit(f"error: no search {name!r} (known: {known})")
    search = yaml.safe_load(path.read_text())
    missing = [k for k in ("task", "metric", "params") if k not in search]
    if missing:
        raise SystemExit(f"error: {path}: missing {', '.join(missing)}")
    metrics = getattr(task_module(search["task"]), "METRICS", {})
    if search["metric"] not in metrics:
        raise SystemExit(f"error: {path}: task {search['task']} reports no dev {search['metric']!r} "
                         f"(its metrics: {', '.join(metrics)})")  # fmt: skip
    search["direction"] = "maximize" if metrics[search["metric"]] == "max" else "minimize"
    return search


def space(params: dict[str, str]) -> dict[str, object]:
    """Each key's parsed sweep (or fixed value), checked once up front."""
    parser = OverridesParser.create()
    parsed = {}
    for key, value in params.items():
        try:
            parsed[key] = parser.parse_override(f"{key}={value}").value()
        except Exception as err:  # Hydra's grammar errors
            raise SystemExit(f"error: search param {key}={value}: {err}") from None
    return parsed


def suggest(trial: optuna.Trial, key: str, sweep: object) -> object:
    """One value for ``key`` from its sweep, as the Optuna sweeper maps them."""
    if isinstance(sweep, ChoiceSweep):
        return trial.suggest_categorical(key, list(sweep.list))
    if isinstance(sweep, RangeSweep):
        return trial.suggest_int(key, int(sweep.start), int(sweep.stop) - 1, step=int(sweep.step))
    if isinstance(sweep, IntervalSweep):
        log = "log" in sweep.tags
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return trial.suggest_int(key, sweep.start, sweep.end, log=log)
        return trial.suggest_float(key, float(sweep.start), float(sweep.end), log=log)
    return sweep  # a fixed value


def run_trial(task: str, overrides: list[str], run_dir: Path) -> dict:
    """One training run through the CLI; its dev metrics (metrics.json)."""
    command = [
        sys.executable,
        "-m",
        "nlp_lstm",
        f"task={task}",
        *overrides,
        f"hydra.run.dir={run_dir}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "stderr.txt").write_text(result.stderr)
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1:] or ["(no message)"]
        raise RuntimeError(f"trial failed (exit {result.returncode}): {last[0]}")
    return json.loads((run_dir / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("search", help="a conf/hparams_search/*.yaml name, or a YAML path")
    parser.add_argument("overrides", nargs="*", help="key=value for every trial")
    parser.add_argument("--n-trials", type=int)
    parser.add_argument("--study-dir", type=Path)
    args = parser.parse_intermixed_args()
    search = load_search(args.search)
    params = space(search["params"])
    fixed = [*search.get("overrides", []), *args.overrides]
    name = Path(args.search).stem
    study_dir = args.study_dir or REPO / "multirun" / "search" / name
    study_dir.mkdir(parents=True, exist_ok=True)
    metric = search["metric"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}[
        search.get("sampler", "tpe")
    ](seed=search.get("seed"))
    study = optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{study_dir / 'optuna.db'}",
        load_if_exists=True,
        direction=search["direction"],
        sampler=sampler,
    )

    def objective(trial: optuna.Trial) -> float:
        chosen = {key: suggest(trial, key, sweep) for key, sweep in params.items()}
        overrides = [*fixed, *(f"{k}={v}" for k, v in chosen.items())]
        run_dir = study_dir / str(trial.number)
        metrics = run_trial(search["task"], overrides, run_dir)
        line = {"trial": trial.number, "run_dir": str(run_dir), "params": chosen, **metrics}
        print(json.dumps(line), flush=True)
        return float(metrics[metric])

    study.optimize(
        objective, n_trials=args.n_trials or search.get("n_trials", 20), catch=(RuntimeError,)
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise SystemExit("error: no trial completed (see each trial's stderr.txt)")
    best = study.best_trial
    print(
        f"best trial {best.number}: {metric} {best.value:.4g} with {best.params}", file=sys.stderr
    )
    print(f"table: python scripts/sweep_summary.py {study_dir} --sort {metric}", file=sys.stderr)


if __name__ == "__main__":
    main()
