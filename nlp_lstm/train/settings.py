"""The ``trainer`` config section: :class:`TrainerConfig`, its defaults (the only copy) and
the checks of its values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nlp_lstm.config import check_fields
from nlp_lstm.errors import ConfigError


@dataclass
class TrainerConfig:
    """Settings of the ``trainer`` config section. These defaults are the only copy: the
    YAML under conf/ holds what differs (per-task recipes in ``task/``, hardware in
    ``trainer/``). Values are checked on construction (a one-line ConfigError)."""

    max_epochs: int = 50
    max_minutes: float | None = None  # a wall-clock budget for training: the epoch in progress
    # ends at it, is scored and saved, and training stops
    batch_size: int = 32  # per process
    batch_tokens: int | None = None  # per process: training batches of up to this many tokens
    # (examples x the longest, as fairseq's max_tokens) instead of batch_size examples
    eval_batch_size: int = 256
    lr: float = 1e-3
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    lr_schedule: Literal["plateau", "decay", "cosine", "none"] = "plateau"
    lr_decay: float = 0.05  # decay: lr / (1 + lr_decay * epoch)
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["32", "bf16", "fp16"] = "32"
    strategy: Literal["auto", "ddp"] = "auto"  # auto: DDP when launched by torchrun
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 5.0
    ema_decay: float | None = None  # evaluate and save an exponential moving average of the weights
    patience: int = 10  # epochs without improvement before stopping; 0 = never stop early
    seed: int = 42
    resume: str | None = None  # a checkpoint path, or "auto" for the run folder's last.pt
    overwrite: bool = False  # train over a run folder that already holds checkpoints
    limit_train_batches: int | None = None
    limit_eval_batches: int | None = None
    log_every_n_steps: int = 50
    progress_bar: bool | None = (
        None  # None: a bar on a terminal, a line per quarter epoch elsewhere
    )
    num_threads: int | None = None  # torch's threads (set by configure_process); null: default

    def __post_init__(self) -> None:
        """Reject settings that would train nothing or train wrongly, before any work."""
        at_least_one = ("max_epochs", "batch_size", "eval_batch_size", "accumulate_grad_batches",
                        "log_every_n_steps", "num_threads")  # fmt: skip
        check_fields(self, at_least_one=at_least_one, positive=("lr",))
        for name in ("limit_train_batches", "limit_eval_batches", "batch_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1 or null, got {value}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"max_minutes must be above 0 or null, got {self.max_minutes}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in (0, 1) or null, got {self.ema_decay}")
