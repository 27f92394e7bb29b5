"""What ``python -m nlp_lstm`` does with a composed config: pick the task and the mode."""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nlp_lstm.data.errors import UserError

log = logging.getLogger("nlp_lstm")

TASKS = ("ner", "sentiment", "charlm", "translate")
MODES = ("train", "test", "predict")


def conf_dir() -> str:
    """The config folder: shipped inside the package, or the repository's top-level conf/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise RuntimeError("nlp_lstm's conf/ folder is missing from this installation")


def run_dir_of_current_job() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def run(cfg: DictConfig) -> None:
    """Dispatch to ``nlp_lstm.tasks.<task>.<mode>(cfg, run_dir)``; user errors exit 2."""
    try:
        name = cfg.task.name
        if name not in TASKS:
            raise UserError(f"unknown task {name!r} (choose from {', '.join(TASKS)})")
        if cfg.mode not in MODES:
            raise UserError(f"unknown mode {cfg.mode!r} (choose from {', '.join(MODES)})")
        try:
            module = importlib.import_module(f"nlp_lstm.tasks.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"nlp_lstm.tasks.{name}":
                raise UserError(f"task {name!r} is not implemented yet") from None
            raise
        run_dir = run_dir_of_current_job()
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
        getattr(module, cfg.mode)(cfg, run_dir)
    except UserError as err:
        log.debug("user error", exc_info=True)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
