"""Deterministic, resumable sample order for pretraining.

Every sample the run ever draws has a *global position* ``pos``; which volume it shows and the random
generator its views draw from are functions of ``(seed, pos)`` alone. Hence a run resumed at step ``s``
sees exactly the samples the uninterrupted run would have seen, whatever the number of DataLoader
workers. Under DDP, rank ``r`` of ``W`` takes the positions ``((s*A + a)*W + r)*B + b``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from anatssl.errors import DataError
from anatssl.views.base import ViewFn, VolumeProvider

log = logging.getLogger("anatssl")


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


class ViewDataset(Dataset[dict[str, Any]]):
    """Map-style dataset indexed by global position; ``views`` cuts the sample from its volume."""

    def __init__(self, source: VolumeProvider, views: ViewFn, seed: int) -> None:
        if len(source) == 0:
            raise DataError("the dataset is empty: no readable scans are left")
        self.source = source
        self.views = views
        self.seed = seed
        self._warned: set[str] = set()

    def volume_index(self, pos: int) -> int:
        n = len(self.source)
        return int(epoch_permutation(self.seed, pos // n, n)[pos % n])

    def __getitem__(self, pos: int) -> dict[str, Any]:
        n = len(self.source)
        idx = self.volume_index(pos)
        rng = np.random.default_rng([self.seed, pos])
        for attempt in range(n):
            k = (idx + attempt) % n
            try:
                volume = self.source.load(k)
            except DataError as e:
                key = str(e)
                if key not in self._warned:
                    self._warned.add(key)
                    log.warning("skipping a bad scan (position %d): %s", pos, e)
                continue
            return self.views(volume, rng, self.source)
        raise DataError("every scan in the dataset failed to load; see the warnings above")

    def __len__(self) -> int:  # positions are unbounded; the sampler decides how many are drawn
        return 2**62


class StepBatchSampler(Sampler[list[int]]):
    """Yields the position lists of (micro-)batches for steps ``start_step .. max_steps-1``."""

    def __init__(
        self,
        start_step: int,
        max_steps: int,
        batch_size: int,
        grad_accum: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.start_step = start_step
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.rank = rank
        self.world_size = world_size

    def positions(self, step: int, micro: int) -> list[int]:
        base = ((step * self.grad_accum + micro) * self.world_size + self.rank) * self.batch_size
        return list(range(base, base + self.batch_size))

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.max_steps):
            for micro in range(self.grad_accum):
                yield self.positions(step, micro)

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step) * self.grad_accum


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack arrays / tensors; keep lists of anything else (e.g. paths)."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        if isinstance(vals[0], np.ndarray):
            out[key] = torch.from_numpy(np.stack(vals))
        elif isinstance(vals[0], torch.Tensor):
            out[key] = torch.stack(vals)
        elif isinstance(vals[0], (int, float)) and not isinstance(vals[0], bool):
            out[key] = torch.tensor(vals)
        else:
            out[key] = vals
    return out
