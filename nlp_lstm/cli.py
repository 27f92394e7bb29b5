"""What ``python -m nlp_lstm`` does: check the task, compose the config, run the mode.

Everything the user can get wrong (an unknown task or mode, a bad value, bad data) ends as
one line on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nlp_lstm.config import conf_dir, task_module, task_names, to_dataclass
from nlp_lstm.errors import ConfigError, UserError
from nlp_lstm.files import atomic_write_text
from nlp_lstm.train import distributed
from nlp_lstm.train.process import configure_process
from nlp_lstm.train.settings import TrainerConfig

log = logging.getLogger("nlp_lstm")

RUN_STAMP = "NLP_LSTM_RUN_STAMP"
# modes that run on the main process only under torchrun (train and test shard their work)
MAIN_RANK_MODES = (
    "predict",
    "export",
)  # the run folder's time stamp, shared by torchrun's processes


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_task_arguments(argv: list[str]) -> None:
    """``task=X`` on the command line must name a conf/task/X.yaml; Hydra would otherwise
    fail with a multi-line message before our code runs."""
    known = task_names()
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key == "task":
            for name in value.split(","):
                if name not in known:
                    fail(f"unknown task {name!r} (tasks: {', '.join(known)})")


def check_overrides(argv: list[str]) -> None:
    """Compose the config once with the command line's overrides, so a mistake (an unknown
    key or group option, a malformed value) is one line and exit 2, not Hydra's several
    lines and exit 1. Sweeps and flags (``--multirun``, ``--help`` ...) are left to Hydra."""
    if any(arg.startswith("-") for arg in argv):
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        with initialize_config_dir(str(conf_dir()), version_base="1.3", job_name="nlp_lstm"):
            compose("config", overrides=argv, return_hydra_config=True)
    except Exception as err:  # Hydra and OmegaConf raise many kinds
        fail(describe_override_error(err))
    finally:
        GlobalHydra.instance().clear()


def describe_override_error(err: Exception) -> str:
    """One line for a failed composition: which override, and what is wrong with it."""
    text = str(err).strip()
    cause = str(err.__cause__ or "").strip()
    first = text.splitlines()[0] if text else type(err).__name__
    if "not in struct" in cause or ("Key '" in cause and "not in" in cause):
        key = first.split("'")[1] if "'" in first else "?"
        return (
            f"unknown key {key.lstrip('+~')} (every key and its value: "
            "python -m nlp_lstm task=<task> --cfg job)"
        )
    if "Could not find" in first:
        text = text.split("Config search path")[0]
        return " ".join(line.strip() for line in text.splitlines() if line.strip())[:300]
    return first[:300]


def name_checkpoint_task(argv: list[str]) -> list[str]:
    """``mode=serve`` and ``mode=inspect`` take the task from ``ckpt=``; without a ``task=``
    of the user's, name that task for Hydra too, so that the run folder is
    ``runs/<its task>/...`` rather than the default task's. (An unreadable checkpoint is
    left for the mode to report.)"""
    modes = [a.split("=", 1)[1] for a in argv if a.startswith("mode=")]
    ckpts = [a.split("=", 1)[1] for a in argv if a.startswith("ckpt=")]
    if not modes or modes[-1] not in ("serve", "inspect") or not ckpts:
        return argv
    if any(a.lstrip("+~").startswith("task=") for a in argv):
        return argv
    from nlp_lstm.checkpoint import load_checkpoint

    try:  # kept: the mode's own load of this file takes it instead of reading it again
        task = load_checkpoint(ckpts[-1], keep=True).bundle.task
    except UserError:
        return argv
    return [*argv, f"task={task}"] if task in task_names() else argv


def temporary_run_dir(argv: list[str]) -> str | None:
    """``mode=test``, ``predict`` and ``export`` work in a temporary folder (removed
    afterwards) unless ``hydra.run.dir`` names one: scoring 20 files should not leave 20
    run folders."""
    modes = [a.split("=", 1)[1] for a in argv if a.startswith("mode=")]
    if not modes or modes[-1] not in ("test", "predict", "export", "serve"):
        return None
    if any(a.startswith(("hydra.run.dir=", "-")) for a in argv):  # flags: Hydra's own
        return None
    import tempfile

    return tempfile.mkdtemp(prefix="nlp_lstm_")


def prepare_processes(argv: list[str]) -> list[str]:
    """Under torchrun: join the process group, give every rank the same run-folder time
    stamp, and keep Hydra's own files to rank 0. Returns the argv Hydra should see."""
    if not distributed.launched_by_torchrun():
        return argv
    try:
        distributed.init_from_env()
    except Exception as err:  # a rendezvous that cannot be reached
        fail(f"cannot join the torchrun process group ({type(err).__name__}: {err})")
    stamp = distributed.broadcast_from_main(time.strftime("%Y-%m-%d_%H-%M-%S"))
    os.environ[RUN_STAMP] = stamp
    if distributed.rank() > 0:
        argv = [*argv, "hydra.output_subdir=null"]
    return argv


def run_dir_of_current_job() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def record_in_run_log(message: str) -> None:
    """Write ``message`` to the run folder's run.log only (stderr already has it)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.emit(logging.LogRecord("nlp_lstm", logging.ERROR, "", 0, message, None, None))
            handler.flush()


def check_run_folder(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse to train over a run folder that holds checkpoints, unless resuming it or
    told to overwrite it."""
    checkpoints = run_dir / "checkpoints"
    if cfg.mode != "train" or not any(checkpoints.glob("*.pt")):
        return
    trainer = cfg.get("trainer", {})
    if trainer.get("resume"):
        return
    if trainer.get("overwrite"):
        shutil.rmtree(checkpoints)
        log.warning("trainer.overwrite=true: removed the checkpoints of %s", run_dir)
        return
    raise ConfigError(
        f"{run_dir} already holds checkpoints: continue it with trainer.resume=auto, "
        "or start over with trainer.overwrite=true"
    )


def quiet_other_ranks() -> None:
    """Ranks other than 0 log warnings only, to stderr (rank 0 owns run.log)."""
    if distributed.is_main():
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def run(cfg: DictConfig, run_dir: Path | None = None) -> None:
    """Dispatch to the task module's ``MODES[cfg.mode](cfg, run_dir)`` (the Hydra job's
    folder unless given), after making the process-wide settings of ``cfg.trainer``
    (:func:`~nlp_lstm.train.process.configure_process`); user errors exit 2."""
    try:
        quiet_other_ranks()
        name = cfg.task.name
        if name not in task_names():
            raise ConfigError(f"unknown task {name!r} (tasks: {', '.join(task_names())})")
        modes = task_modes(name)
        if cfg.mode not in modes:
            raise ConfigError(
                f"task {name} has no mode {cfg.mode!r} (modes: {', '.join(modes) or 'none'})"
            )
        configure_process(to_dataclass(TrainerConfig, cfg.get("trainer"), "trainer"))
        run_dir = run_dir or run_dir_of_current_job()
        check_run_folder(cfg, run_dir)
        if not distributed.is_main() and cfg.mode in MAIN_RANK_MODES:
            return  # one process predicts and writes; the others have nothing to do
        if distributed.is_main():
            atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        modes[cfg.mode](cfg, run_dir)
    except UserError as err:
        log.debug("user error", exc_info=True)
        record_in_run_log(f"error: {err}")
        fail(str(err))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        distributed.shutdown()


def task_modes(name: str) -> dict:
    """The modes of a task: its module's ``MODES``, and ``serve`` and ``inspect``, which
    every task has."""
    return {**getattr(task_module(name), "MODES", {}), "serve": serve_mode, "inspect": inspect_mode}


def serve_mode(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=serve``, the same for every task: the task comes from each checkpoint."""
    from nlp_lstm.serve.server import serve

    serve(cfg, run_dir)


def inspect_mode(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=inspect``, the same for every task: the task comes from the checkpoint."""
    from nlp_lstm.inside import inspect_mode as run_inspect

    run_inspect(cfg, run_dir)


def checkpoint_task(cfg: DictConfig) -> str:
    """The task of ``ckpt=`` (for the modes that take it from there: serve, inspect); a
    ``task=`` given on the command line must be that task."""
    from nlp_lstm.checkpoint import load_checkpoint

    task = load_checkpoint(cfg.ckpt, None, keep=True).bundle.task
    if task_on_command_line() and task != cfg.task.name:
        raise ConfigError(f"task={cfg.task.name} but {cfg.ckpt} holds a {task} model")
    return task


def task_on_command_line() -> bool:
    """Whether this Hydra run was given ``task=`` (else cfg.task is only the default)."""
    return "task" in command_line_keys()


def command_line_keys() -> set[str]:
    """The keys this Hydra run was given on the command line (``data.dev``, ``task``, ...);
    none outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    return {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}


# ---------------------------------------------------------------------------- quick predict

QUICK_TASKS = ("ner", "sentiment")  # predict reads nothing but the checkpoint's sections
QUICK_KEYS = ("task", "mode", "ckpt", "input", "output", "input_format", "output_format")
QUICK_TRAINER_KEYS = ("device", "precision", "eval_batch_size", "num_threads", "progress_bar")


def quick_predict_config(argv: list[str]) -> DictConfig | None:
    """The config of a plain ``mode=predict`` call, built from the checkpoint instead of
    composed by Hydra (composing takes ~1 s, longer than tagging a sentence).

    A checkpoint holds the config its model was trained with; a predict call only adds
    its files and, at most, how to run (``trainer.device``, ``precision``,
    ``eval_batch_size``, ``num_threads``, ``progress_bar``; the rest of the trainer section
    keeps its defaults, as in a composed predict call). Any other argument (another key, a
    group, a sweep, a flag) returns None and Hydra composes as usual, so results never depend
    on which path ran."""
    if distributed.launched_by_torchrun() or not argv:
        return None
    values: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        trainer_key = key.startswith("trainer.") and key.split(".", 1)[1] in QUICK_TRAINER_KEYS
        if not sep or not (key in QUICK_KEYS or trainer_key):
            return None
        values[key] = value
    if values.get("mode") != "predict" or not values.get("ckpt"):
        return None
    if values.get("task", "ner") not in QUICK_TASKS:  # their predict reads sample/decode too
        return None
    from nlp_lstm.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(values["ckpt"], values.get("task", "ner"), keep=True)
    saved = checkpoint.bundle.config
    trainer = dataclasses.asdict(TrainerConfig())
    trainer["eval_batch_size"] = saved.get("trainer", {}).get(
        "eval_batch_size", trainer["eval_batch_size"]
    )
    base = {
        **{k: v for k, v in saved.items() if k != "trainer"},
        "trainer": trainer,
        "mode": "predict",
        "ckpt": None,
        "input": None,
        "output": None,
        "input_format": "text",
        "output_format": "text",
    }
    given = [f"{k}={v}" for k, v in values.items() if k != "task"]
    return OmegaConf.merge(OmegaConf.create(base), OmegaConf.from_dotlist(given))


def quick_predict(argv: list[str]) -> bool:
    """Run ``mode=predict`` without Hydra when :func:`quick_predict_config` allows; logs go
    to stderr as usual. Returns whether it ran."""
    try:
        cfg = quick_predict_config(argv)
    except UserError as err:
        fail(str(err))
    if cfg is None:
        return False
    import tempfile

    logging.basicConfig(
        level=logging.INFO,
        format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    with tempfile.TemporaryDirectory(prefix="nlp_lstm_") as folder:
        run(cfg, Path(folder))
    return True
