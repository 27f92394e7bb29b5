"""Settings of the whole process, made once where it starts (the CLI's ``run``, or a script
that builds a Trainer itself): torch's threads and oneDNN's kernel cache; also seeding and
the device this process runs on. The Trainer itself changes nothing process-wide."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from nlp_lstm.errors import ConfigError
from nlp_lstm.train import distributed
from nlp_lstm.train.settings import TrainerConfig

ONEDNN_CACHE = "16"


def configure_process(config: TrainerConfig) -> None:
    """Apply ``trainer.num_threads`` (torch's intra-op threads; null keeps torch's default)
    and cap oneDNN's kernel cache. Call it before the first forward pass."""
    bound_cpu_kernel_cache()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)


def bound_cpu_kernel_cache() -> None:
    """Cap oneDNN's CPU kernel caches (unless the user set the variables).

    oneDNN (PyTorch's CPU kernels for convolutions, LSTMs and bf16 matrix products) caches a
    compiled primitive, with its buffers, for every distinct input shape: up to 1,024 in
    oneDNN's own cache (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``) and as many again in PyTorch's
    (ideep's ``LRU_CACHE_CAPACITY``). Length-bucketed batches have ever-new shapes, so with
    the defaults the caches grow for epochs while rarely being hit: NER with the char CNN
    held ~220 MiB; bf16 translation training went from 0.9 to 1.9 GiB in 100 batches. Both
    variables are read when the first primitive is made, so this must run before the first
    forward pass.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE)
    os.environ.setdefault("LRU_CACHE_CAPACITY", ONEDNN_CACHE)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; under torchrun, this process's GPU."""
    if isinstance(name, torch.device):
        return name
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA device is available (use auto or cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", distributed.local_rank())
    return torch.device(name)
