"""A ring buffer of past embeddings used as shared negatives (MoCo, He et al. CVPR 2020; S2DC's L_g).

The queue lives in buffers (``queue`` (K, D), ``ptr``, ``count``) so it is checkpointed with the
model and a resumed run continues with the same negatives. Under DDP every rank enqueues the keys of
*all* ranks (gathered in rank order), so the queues stay identical across ranks, as in MoCo.
"""

from __future__ import annotations

import torch
from torch import nn

from anatssl.engine.distributed import all_gather_cat


class FeatureQueue(nn.Module):
    """FIFO of ``size`` vectors of dimension ``dim``; only the filled part is ever returned."""

    queue: torch.Tensor
    ptr: torch.Tensor
    count: torch.Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 0 or dim < 1:
            raise ValueError(f"queue size must be >= 0 and dim >= 1, got size={size}, dim={dim}")
        self.size = size
        self.register_buffer("queue", torch.zeros(size, dim))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def features(self) -> torch.Tensor:
        """(min(count, size), D) stored vectors (slot order, not age order; negatives need no order)."""
        n = min(int(self.count), self.size)
        return self.queue[:n]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, gather: bool = True) -> None:
        """Append (B, D) ``keys`` (of every rank when ``gather`` and distributed); the oldest go first."""
        if self.size == 0:
            return
        keys = keys.detach()
        if gather:
            keys = all_gather_cat(keys.contiguous())
        keys = keys.to(self.queue.dtype)
        n = keys.shape[0]
        if n >= self.size:  # more keys than slots: keep the newest ``size``, in order, from slot 0
            self.queue.copy_(keys[-self.size :])
            self.ptr.zero_()
            self.count.fill_(self.size)
            return
        p = int(self.ptr)
        first = min(n, self.size - p)
        self.queue[p : p + first] = keys[:first]
        if first < n:  # wrap around
            self.queue[: n - first] = keys[first:]
        self.ptr.fill_((p + n) % self.size)
        self.count.fill_(min(int(self.count) + n, self.size))
