"""Data-parallel training under ``torchrun``: process-group setup and rank helpers.

``torchrun --standalone --nproc_per_node=N`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` in each process. :func:`init_distributed`, called before
:func:`idou.training.loop.train` (which wraps the model in ``DistributedDataParallel`` once a
group exists), reads them and joins the group with NCCL on CUDA and gloo on the CPU; without
them it returns a single-process :class:`DistInfo` and touches nothing, so the same code runs
plain and under torchrun. :func:`cleanup` leaves the group at the end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        """True when running in a process group of more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0: the process that logs, writes checkpoints and exports."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables are set."""
    return all(k in os.environ for k in _ENV)


def init_distributed(device: str | torch.device | None = None,
                     backend: str | None = None) -> DistInfo:
    """Join the torchrun process group, or describe a single-process run.

    Args:
        device: "cuda", "cpu" or None (CUDA when available). Under torchrun on CUDA each process
            takes ``cuda:LOCAL_RANK``.
        backend: force a backend; default NCCL on CUDA, gloo on the CPU.

    Returns:
        This process's rank, local rank, world size, backend and device.
    """
    wanted = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    if not launched_by_torchrun():
        return DistInfo(device=wanted)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    world_size = int(os.environ["WORLD_SIZE"])
    if wanted.type == "cuda":
        wanted = torch.device("cuda", local_rank)
        torch.cuda.set_device(wanted)
    backend = backend or ("nccl" if wanted.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank, local_rank, world_size, backend, wanted)


def cleanup() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def training_device() -> torch.device:
    """``cuda:LOCAL_RANK`` (made current) when a GPU is present, else the CPU."""
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def agree(world: int, flag: bool, source: int | None = None) -> bool:
    """One decision for all DDP ranks: rank ``source``'s flag, or any rank's when None."""
    if world <= 1:
        return flag
    on_gpu = dist.get_backend() == "nccl"
    value = torch.tensor([1.0 if flag else 0.0],
                         device=torch.device("cuda", torch.cuda.current_device()) if on_gpu
                         else torch.device("cpu"))
    if source is None:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    else:
        dist.broadcast(value, src=source)
    return bool(value.item() > 0)
