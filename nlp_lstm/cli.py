"""What ``python -m nlp_lstm`` does: check the task, compose the config, run the mode.

Everything the user can get wrong (an unknown task or mode, a bad value, bad data) ends as
one line on stderr and exit code 2.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nlp_lstm.config import task_module, task_names
from nlp_lstm.errors import ConfigError, UserError
from nlp_lstm.train import distributed

log = logging.getLogger("nlp_lstm")

RUN_STAMP = "NLP_LSTM_RUN_STAMP"  # the run folder's time stamp, shared by torchrun's processes


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


def quiet_other_ranks() -> None:
    """Ranks other than 0 log warnings only, to stderr (rank 0 owns run.log)."""
    if distributed.is_main():
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def run(cfg: DictConfig) -> None:
    """Dispatch to the task module's ``MODES[cfg.mode](cfg, run_dir)``; user errors exit 2."""
    try:
        quiet_other_ranks()
        name = cfg.task.name
        if name not in task_names():
            raise ConfigError(f"unknown task {name!r} (tasks: {', '.join(task_names())})")
        modes = getattr(task_module(name), "MODES", {})
        if cfg.mode not in modes:
            raise ConfigError(
                f"task {name} has no mode {cfg.mode!r} (modes: {', '.join(modes) or 'none'})"
            )
        run_dir = run_dir_of_current_job()
        if distributed.is_main():
            OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
        modes[cfg.mode](cfg, run_dir)
    except UserError as err:
        log.debug("user error", exc_info=True)
        fail(str(err))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        distributed.shutdown()
