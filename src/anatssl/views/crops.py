"""Fixed-size crops of channel-first volumes, zero-padded where they leave the volume.

Pure numpy: these run in DataLoader workers. ``start`` is the voxel index of the crop's first voxel in
the source volume (it may be negative, or run past the end, when the crop is padded), so that any
crop voxel ``v`` is source voxel ``start + v``: the one fact a method needs to relate two views.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def crop_at(image: np.ndarray, start: Sequence[int], size: Sequence[int], fill: float = 0.0) -> np.ndarray:
    """(C, X, Y, Z) -> (C, *size): the box ``[start, start + size)``; outside voxels are ``fill``."""
    c = image.shape[0]
    out = np.full((c, *size), fill, dtype=image.dtype)
    src, dst = [], []
    for s0, n, dim in zip(start, size, image.shape[1:]):
        a, b = max(s0, 0), min(s0 + n, dim)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - s0, b - s0))
    out[(slice(None), *dst)] = image[(slice(None), *src)]
    return out


def random_start(shape: Sequence[int], size: Sequence[int], rng: np.random.Generator) -> tuple[int, ...]:
    """A uniformly random crop origin; a dimension smaller than the crop is centred (padded both sides)."""
    starts = []
    for dim, n in zip(shape, size):
        if dim >= n:
            starts.append(int(rng.integers(0, dim - n + 1)))
        else:
            starts.append(-((n - dim) // 2))
    return tuple(starts)


def random_crop(
    image: np.ndarray, size: Sequence[int], rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, ...]]:
    """A random ``size`` crop of ``image`` (C, X, Y, Z) and its start index."""
    start = random_start(image.shape[1:], size, rng)
    return crop_at(image, start, size), start


def crop_around(
    image: np.ndarray, center: Sequence[int] | np.ndarray, size: Sequence[int]
) -> tuple[np.ndarray, tuple[int, ...]]:
    """The ``size`` crop centred on voxel ``center`` (zero-padded at borders) and its start index."""
    start = tuple(int(c) - n // 2 for c, n in zip(center, size))
    return crop_at(image, start, size), start
