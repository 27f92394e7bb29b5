"""What the Trainer optimises with: the optimizer and its parameter groups, the learning-rate
schedule, and the exponential moving average of the weights (``trainer.ema_decay``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nlp_lstm.contract import Monitor
from nlp_lstm.train.settings import TrainerConfig

if TYPE_CHECKING:
    from torch.optim.swa_utils import AveragedModel

Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


def build_optimizer(model: nn.Module, config: TrainerConfig) -> torch.optim.Optimizer:
    """``trainer.optimizer`` over :func:`parameter_groups`, fused where torch can."""
    params = parameter_groups(model, config.lr)
    choices = {
        "sgd": (torch.optim.SGD, {"momentum": config.momentum}),
        "adam": (torch.optim.Adam, {}),
        "adamw": (torch.optim.AdamW, {}),
    }
    optimizer_class, extra = choices[config.optimizer]
    kwargs = {"lr": config.lr, "weight_decay": config.weight_decay, **extra}
    try:  # one fused kernel for all parameters (about 4x faster than the loop on the CPU)
        return optimizer_class(params, **kwargs, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return optimizer_class(params, **kwargs)


def parameter_groups(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """Optimizer groups: every trainable parameter at ``lr``, except those held directly by
    a submodule with an ``lr_scale`` attribute (e.g. the word matrix of a TokenEmbedder),
    which train at ``lr * lr_scale``. Schedules then scale every group alike."""
    scaled: dict[float, list[nn.Parameter]] = {}
    claimed: set[int] = set()
    for module in model.modules():
        scale = getattr(module, "lr_scale", None)
        if scale is None or float(scale) == 1.0:
            continue
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        scaled.setdefault(float(scale), []).extend(own)
        claimed.update(id(p) for p in own)
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in claimed]
    groups = [{"params": rest, "lr": lr}] if rest else []
    return groups + [{"params": ps, "lr": lr * scale} for scale, ps in scaled.items() if ps]


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainerConfig, monitor: Monitor
) -> Scheduler | None:
    """``trainer.lr_schedule``, stepped once per epoch (:func:`step_scheduler`); None for
    ``none``."""
    if config.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode=monitor.mode,
            factor=config.plateau_factor,
            patience=config.plateau_patience,
        )
    if config.lr_schedule == "decay":
        decay = config.lr_decay
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: 1.0 / (1.0 + decay * epoch)
        )
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.max_epochs)
    return None


def step_scheduler(scheduler: Scheduler | None, value: float) -> None:
    """The end-of-epoch step: the plateau schedule reads the monitored ``value``."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(value)
    elif scheduler is not None:
        scheduler.step()


def build_ema(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """PyTorch's AveragedModel keeping an exponential moving average of the weights
    (and buffers), updated after every optimizer step, with a warm-up; None without
    ``decay`` (see :func:`ema_with_warmup`)."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel

    return AveragedModel(model, multi_avg_fn=ema_with_warmup(decay), use_buffers=True)


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay of the ``updates``-th average (1-based; the first copies the weights):
    ``min(decay, (1 + n) / (10 + n))`` with ``n = updates - 1``, as TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)`` and timm's EMA warm up. A short run then
    averages over the steps it has, never mostly over its first weights."""
    n = updates - 1
    return min(decay, (1 + n) / (10 + n))


def ema_with_warmup(decay: float):
    """``AveragedModel``'s ``multi_avg_fn`` for an EMA with warm-up (:func:`ema_decay_at`).
    The decay is computed on the device from the model's own count of updates
    (``n_averaged``, restored on resume), so a step never waits for the device."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:
        if not averaged:
            return
        if not torch.is_floating_point(averaged[0]):  # integer and boolean buffers
            torch._foreach_copy_(averaged, current)  # (counters, masks) follow the model
            return
        n = n_averaged.to(averaged[0].dtype)  # the updates before this one, the first a copy
        weight = 1.0 - torch.clamp((1 + n) / (10 + n), max=decay)
        torch._foreach_lerp_(averaged, current, weight)

    return update
