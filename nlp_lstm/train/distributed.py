"""Several processes through torch.distributed, as launched by ``torchrun``.

``torchrun --nproc_per_node=N -m nlp_lstm ...`` starts N copies of the program with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in the environment.
:func:`init_from_env` joins the process group (gloo on CPU, NCCL on GPU); the helpers below
are no-ops in a single process, so the same code runs with and without torchrun.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group when launched by torchrun with more than one process;
    ``backend`` defaults to NCCL when CUDA is available, else gloo. Returns whether
    this is a multi-process run."""
    if not launched_by_torchrun():
        return False
    if dist.is_initialized():
        return True
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if active() else 0


def is_main() -> bool:
    """Rank 0 (or a single process): the one process that writes files and prints."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over ranks, in place (no host sync on a GPU)."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_to_main(value: T) -> list[T] | None:
    """Every rank's ``value`` as a list on rank 0 (rank order); None on other ranks."""
    if not active():
        return [value]
    out: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(value, out, dst=0)
    return out


def all_gather(value: T) -> list[T]:
    """Every rank's ``value`` on every rank, in rank order."""
    if not active():
        return [value]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def broadcast_from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """What the training step calls: the model, or DDP around it under torchrun."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)
