"""Distributed set-up from the environment: ``torchrun`` sets RANK/LOCAL_RANK/WORLD_SIZE, one process is world 1.

This module is the single place that turns the environment (and the legacy ``--launcher pytorch`` /
``--local_rank`` arguments of ``torch.distributed.launch``) into ``(rank, world_size, device)``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist

logger = logging.getLogger("sdsd")


@dataclasses.dataclass
class DistInfo:
    """Where this process stands: its rank, the world size, and the device it computes on."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def select_device(gpu_ids=None, local_rank: int = 0, want: str | None = None) -> torch.device:
    """Pick the compute device.

    Args:
        gpu_ids: the option file's ``gpu_ids`` (``[]``/``None`` means CPU unless ``want`` says cuda).
        local_rank: this process's local rank; it indexes ``gpu_ids`` under torchrun.
        want: ``"cpu"``, ``"cuda"`` or ``None`` (auto: CUDA when available and gpu_ids is not empty).

    With no CUDA available, a CUDA request falls back to the CPU with a single warning line.
    """
    if want == "cpu":
        return torch.device("cpu")
    wants_cuda = want == "cuda" or (want is None and gpu_ids not in ([], ()))
    if not wants_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if want == "cuda" or gpu_ids:
            _warn_once("CUDA is not available: running on the CPU (gpu_ids ignored)")
        return torch.device("cpu")
    ids = list(gpu_ids) if gpu_ids else list(range(torch.cuda.device_count()))
    index = ids[local_rank % len(ids)] if ids else local_rank
    return torch.device("cuda", index % torch.cuda.device_count())


@functools.cache
def _warn_once(message: str) -> None:
    if logging.getLogger("sdsd").handlers or logging.getLogger().handlers:
        logger.warning(message)
    else:  # no logging configured (e.g. a library call): still say it, once, on one line
        print(f"warning: {message}", flush=True)


DEFAULT_TIMEOUT_S = 1800.0


def collective_timeout_s() -> float:
    """How long one collective or store request may take, in seconds: ``$SDSD_DIST_TIMEOUT_S``, default 1800.

    Raises:
        UserError: the variable is set to something other than a positive number.
    """
    from sdsd.errors import UserError

    raw = os.environ.get("SDSD_DIST_TIMEOUT_S")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise UserError(f"SDSD_DIST_TIMEOUT_S={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise UserError(f"SDSD_DIST_TIMEOUT_S={raw!r} must be a positive number of seconds")
    return value


def init_distributed(gpu_ids=None, want: str | None = None, timeout_s: float | None = None) -> DistInfo:
    """Initialise ``torch.distributed`` when launched by torchrun (WORLD_SIZE > 1), else return world size 1.

    NCCL on CUDA, gloo on CPU. Safe to call twice. ``timeout_s`` (default :func:`collective_timeout_s`) bounds each
    collective.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(gpu_ids, local_rank, want)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        limit = timeout_s if timeout_s is not None else collective_timeout_s()
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=limit))
    elif device.type == "cuda":
        torch.cuda.set_device(device)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=device,
                    initialized=dist.is_initialized())


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def barrier() -> None:
    if is_dist():
        dist.barrier()


def rank_zero_only(func):
    """Run ``func`` on rank 0 only; other ranks get ``None``."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if get_rank() == 0:
            return func(*args, **kwargs)
        return None

    return wrapper


def all_gather_object(obj) -> list:
    """Gather a picklable object from every rank (a one-element list in a single process)."""
    if not is_dist():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
