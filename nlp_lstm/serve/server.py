"""``python -m nlp_lstm mode=serve ckpt=PATH`` (or ``serve.models={ner: PATH, sst: PATH}``):
load the predictors and serve them with uvicorn until SIGINT/SIGTERM, which stop taking
connections, let the requests in flight finish and exit 0.

With ``serve.workers=N`` uvicorn starts N processes, each loading every model and
answering on the same port; nothing is kept between requests, so replicas behind any load
balancer serve alike (docs/export-and-serving.md).
"""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

import uvicorn
from omegaconf import DictConfig

from nlp_lstm.config import plain, to_dataclass
from nlp_lstm.errors import ConfigError
from nlp_lstm.serve.app import create_app
from nlp_lstm.serve.settings import ServeConfig
from nlp_lstm.train import distributed

log = logging.getLogger(__name__)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, exiting 0 after a graceful stop on SIGTERM: uvicorn raises a
    caught SIGTERM again once it has stopped, which would end the process with -15."""

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", [])
        if sig == signal.SIGTERM and sig in captured:
            captured.remove(sig)


SETTINGS_ENV = "NLP_LSTM_SERVE_SETTINGS"  # how uvicorn's worker processes get the settings


@dataclass
class Settings:
    """What a serving process needs: the models, how to run them, the serve section."""

    models: dict[str, str]
    device: str
    precision: str
    num_threads: int | None
    serve: ServeConfig


def model_paths(cfg: DictConfig, serve: ServeConfig) -> dict[str, str]:
    """Name -> checkpoint: ``serve.models`` and ``ckpt`` (named by its task). Each file must
    exist, and a ``task=`` given beside one checkpoint must be its task."""
    from nlp_lstm.cli import checkpoint_task

    paths = dict(serve.models)
    if cfg.get("ckpt"):
        paths.setdefault(checkpoint_task(cfg), str(cfg.ckpt))
    if not paths:
        raise ConfigError("mode=serve needs ckpt=PATH or serve.models={name: PATH, ...}")
    for name, path in paths.items():
        if not Path(path).expanduser().is_file():
            raise ConfigError(f"serve.models.{name}: no checkpoint at {path}")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"model name {name!r}: use letters, digits, - and _")
    return paths


def load_models(settings: Settings) -> dict:
    import torch

    import nlp_lstm

    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    return {
        name: nlp_lstm.load(path, settings.device, precision=settings.precision)
        for name, path in settings.models.items()
    }


def app_from_env():
    """The app of a uvicorn worker process (``serve.workers`` > 1), from the settings the
    parent put in the environment."""
    values = json.loads(os.environ[SETTINGS_ENV])
    settings = Settings(**{**values, "serve": ServeConfig(**values["serve"])})
    return create_app(lambda: load_models(settings), settings.serve)


def serve(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=serve``: serve the checkpoints until stopped."""
    from nlp_lstm.train.settings import TrainerConfig

    if distributed.launched_by_torchrun():
        raise ConfigError("mode=serve runs without torchrun (serve.workers=N starts N processes)")
    config = to_dataclass(ServeConfig, cfg.get("serve", {}), "serve")
    trainer = to_dataclass(TrainerConfig, cfg.get("trainer", {}), "trainer")
    settings = Settings(model_paths(cfg, config), trainer.device,
                        trainer.precision, trainer.num_threads, config)  # fmt: skip
    log.info("serving on http://%s:%d (%s)", config.host, config.port,
             ", ".join(f"{n}: {p}" for n, p in settings.models.items()))  # fmt: skip
    common = {"host": config.host, "port": config.port, "access_log": config.log_requests,
              "log_config": None, "timeout_graceful_shutdown": 30}  # fmt: skip
    if config.workers > 1:
        os.environ[SETTINGS_ENV] = json.dumps(plain(asdict(settings)))
        uvicorn.run("nlp_lstm.serve.server:app_from_env", factory=True, workers=config.workers, **common)  # fmt: skip
        return
    app = create_app(lambda: load_models(settings), config)
    GracefulServer(uvicorn.Config(app, **common)).run()
