"""Collectives that are no-ops when no process group exists (DINO's helpers assumed one did).

Runs are launched with ``torchrun``; :func:`init_from_env` sets up the process group from its
environment variables (``nccl`` on CUDA, ``gloo`` on CPU). The same variables set by hand (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``, e.g. from ``SLURM_PROCID`` under
``srun``) work too; docs/engine.md has the multi-node recipes.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_from_env(device: torch.device, timeout_minutes: float | None = None) -> None:
    """Join the process group torchrun describes; nothing when started as a single process.

    ``timeout_minutes`` (``train.dist_timeout_minutes``): how long a collective (a barrier while rank 0
    checks the data, an all-reduce while a peer is stuck) waits before the run fails; None keeps
    PyTorch's default.
    """
    if is_dist() or not launched_by_torchrun():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if timeout_minutes is None:
        dist.init_process_group(backend=backend)
    else:
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (returns a new tensor; the input is unchanged)."""
    if not is_dist():
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / world_size()


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (same shape on every rank) along dim 0 over ranks, in rank order. No gradient."""
    if not is_dist():
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.detach().contiguous())
    return torch.cat(parts, dim=0)


def weight_sums(module: torch.nn.Module) -> list[float]:
    """Every rank's float64 sum of ``module``'s parameters and buffers, in rank order (one entry
    without a process group). DDP keeps ranks bitwise equal, so the entries are equal unless it did not."""
    with torch.no_grad():
        total = sum(
            (t.detach().double().sum() for t in module.state_dict().values()),
            torch.zeros((), dtype=torch.float64),
        )
    device = next(module.parameters()).device
    return [float(x) for x in all_gather_cat(total.reshape(1).to(device)).cpu()]


def broadcast_state(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (in place)."""
    if not is_dist():
        return
    with torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, src)
