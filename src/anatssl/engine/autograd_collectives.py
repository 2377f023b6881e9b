"""Collectives with a backward: what a loss or a layer that mixes ranks needs under DDP.

``torch.distributed.all_gather`` / ``all_reduce`` record nothing for autograd, so a loss that gathers
embeddings from the other ranks with them sends no gradient back to the rank that made them (lightly
#1920 / #1977). These functions do, and are no-ops (identity) when no process group exists.

The convention that makes the gradients right: the objective of a DDP step is the *sum* of the
per-rank losses, ``L = sum_r L_r``, and DDP then divides the summed parameter gradients by the world
size ``W`` (it averages), so the update follows ``grad (1 / W) sum_r L_r``. A tensor ``x_s`` made on
rank ``s`` that rank ``r`` uses through a collective gets ``dL / dx_s = sum_r dL_r / dx_s``: the
backward of a gather is therefore "all-reduce (sum) the gradients of the gathered tensor, keep this
rank's slice", and the backward of an all-reduce (sum) is an all-reduce (sum) of the gradients.

Why our own ``Function`` and not ``torch.distributed.nn.functional.all_gather``: that one is correct
too (its backward is a reduce-scatter on NCCL and an all-to-all + sum elsewhere; on gloo with torch
2.13 it gives the same gradients as ours, checked in ``tests/engine/test_ddp_grads.py``), but it is
deprecated since torch 2.x (a FutureWarning pointing to the private ``_functional_collectives``), its
all-to-all path needs a backend that implements ``all_to_all`` (MPI and custom backends vary), and it
returns one tensor per rank. Ours uses only ``all_gather`` and ``all_reduce``, which every backend
has; its backward all-reduces the whole gathered gradient (W times a reduce-scatter's traffic,
negligible for (B, 512) embeddings).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from anatssl.engine import distributed as D


class _AllGatherCat(torch.autograd.Function):
    """(B, ...) on each rank -> (W * B, ...), rank order; backward: all-reduce sum, own slice."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        w, r = D.world_size(), D.rank()
        ctx.rank, ctx.batch = r, t.shape[0]
        parts = [torch.empty_like(t) for _ in range(w)]
        dist.all_gather(parts, t.contiguous())
        parts[r] = t  # this rank's own slice stays the same tensor values (bitwise: a copy of t)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; backward: the sum over ranks of the gradients."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        out = t.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


def all_gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """(B, ...) per rank -> (W * B, ...) in rank order, differentiable (see the module docstring).

    Every rank must pass the same shape. Identity without a process group.
    """
    if not D.is_dist() or D.world_size() == 1:
        return t
    return _AllGatherCat.apply(t)


def all_reduce_sum_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, differentiable; identity without a process group."""
    if not D.is_dist() or D.world_size() == 1:
        return t
    return _AllReduceSum.apply(t)
