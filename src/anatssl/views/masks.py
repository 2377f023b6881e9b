"""Block masks for masked-image modelling on 3D crops (Alice, SimMIM-style).

A crop of shape (X, Y, Z) is divided into ``patch``-sized blocks and a fraction ``ratio`` of them is
masked (rounded to the nearest whole block; at least one block stays visible whenever ``ratio < 1``).

* ``cube``: 3D blocks ``patch^3`` (Alice's default here; the natural 3D analogue of SimMIM).
* ``tube``: ``patch x patch`` blocks in the (X, Y) plane running through the whole Z depth (the public
  Alice code's 2D block mask repeated over the slices).

Masked voxels are set to 0 by the caller (:func:`apply_mask`), as in the public Alice code: with CT
windowed to [0, 1], 0 is the window floor (air), so masked regions read as "nothing there".
"""

from __future__ import annotations

import numpy as np

MASK_SHAPES = ("cube", "tube")


def block_mask(
    shape: tuple[int, int, int], patch: int, ratio: float, kind: str, rng: np.random.Generator
) -> np.ndarray:
    """(X, Y, Z) bool mask, True = masked. Sizes must be multiples of ``patch``."""
    if kind not in MASK_SHAPES:
        raise ValueError(f"mask shape {kind!r}; valid: {', '.join(MASK_SHAPES)}")
    if patch < 1:
        raise ValueError(f"mask patch must be >= 1, got {patch}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    if any(s % patch for s in shape):
        raise ValueError(
            f"crop size {tuple(shape)} is not a multiple of the mask patch {patch}; "
            "choose a crop size divisible by mask_patch"
        )
    grid = [s // patch for s in shape]
    if kind == "tube":
        grid[2] = 1
    n = int(np.prod(grid))
    k = int(round(ratio * n))
    if ratio < 1.0:
        k = min(k, n - 1)
    flat = np.zeros(n, dtype=bool)
    flat[rng.choice(n, size=k, replace=False)] = True
    m = flat.reshape(grid)
    reps = (patch, patch, patch if kind == "cube" else shape[2])
    return np.repeat(np.repeat(np.repeat(m, reps[0], 0), reps[1], 1), reps[2], 2)


def apply_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(C, X, Y, Z) image with the (X, Y, Z) ``mask`` voxels set to 0 (a copy)."""
    return np.where(mask[None], np.zeros((), dtype=image.dtype), image)
