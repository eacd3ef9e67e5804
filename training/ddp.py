"""Data-parallel training under ``torchrun``: process-group setup and rank helpers.

``torchrun --nproc_per_node=N -m idou.cli train CONFIG.toml`` (or ``--standalone``) sets
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each process.
:func:`init_distributed` reads them and joins the group with NCCL on CUDA and gloo on the CPU;
without them it returns a single-process :class:`DistInfo` and touches nothing, so the same
training code runs plain and under torchrun.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

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


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` when distributed; ``model`` otherwise."""
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper (for checkpoints and export)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def distributed_sampler(dataset: Any, info: DistInfo, shuffle: bool = True, seed: int = 0
                        ) -> Any:
    """A ``DistributedSampler`` splitting ``dataset`` over the ranks, or None in one process."""
    if not info.distributed:
        return None
    from torch.utils.data import DistributedSampler

    return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                              shuffle=shuffle, seed=seed, drop_last=True)


def all_reduce_mean(value: float, info: DistInfo) -> float:
    """The mean of a scalar over all ranks (the value itself in one process)."""
    if not info.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64,
                          device=info.device if info.backend == "nccl" else "cpu")
    dist.all_reduce(tensor)
    return float(tensor.item()) / info.world_size


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (e.g. a run id or a stop decision)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
