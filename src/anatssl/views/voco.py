"""VoCo's views (Wu, Zhuang, Chen, "VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework
for 3D Medical Image Analysis", CVPR 2024, Sec. 3.2; public code Luffy03/VoCo ``utils/data_utils.py``).

A region of ``G x G`` base crops is cut from the scan: the base crops tile it without overlap in the
axial (X, Y) plane and span its whole depth (Z). ``n_random`` random crops of the same size are drawn
inside the region; the target of a random crop is its overlap with each base crop as a fraction of the
crop's own volume (the public code's ``area / total_area``: all crops share the Z range, so volume and
area fractions agree). Each row of targets sums to 1, because a random crop lies inside the region.

With ``data.modality=mri`` every base and random crop gets its own draw of
:class:`~anatssl.views.intensity.MRIIntensity` (gamma, bias field, gain), as the public code jitters each
crop's intensity (scale/shift) independently: the overlap must be read from anatomy, not from a shared
intensity. CT views are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anatssl.data.volume import Volume
from anatssl.views.crops import crop_at, random_crop
from anatssl.views.intensity import MRIIntensity

Box = tuple[tuple[int, int], ...]
"""((x0, x1), (y0, y1), (z0, z1)): half-open voxel ranges."""


def base_boxes(grid: int, size: Sequence[int]) -> list[Box]:
    """The ``grid x grid`` base crops of ``size`` (X, Y, Z) tiling the region, row-major: index i * grid + j
    is the crop at X block i, Y block j (the public code's order)."""
    sx, sy, sz = (int(s) for s in size)
    return [
        ((i * sx, (i + 1) * sx), (j * sy, (j + 1) * sy), (0, sz)) for i in range(grid) for j in range(grid)
    ]


def overlap_fractions(crop: Box, bases: Sequence[Box]) -> np.ndarray:
    """(K,) float64: volume of ``crop`` inside each base box, divided by the volume of ``crop``."""
    vol = float(np.prod([b - a for a, b in crop]))
    if vol <= 0:
        raise ValueError(f"crop box {crop} is empty")
    out = np.zeros(len(bases))
    for k, base in enumerate(bases):
        inter = 1.0
        for (a0, a1), (b0, b1) in zip(crop, base):
            inter *= max(0, min(a1, b1) - max(a0, b0))
        out[k] = inter / vol
    return out


@dataclass
class VoCoViews:
    """``{"bases": (G*G, C, S, S, D), "crops": (N, C, S, S, D), "targets": (N, G*G) float32,
    "crop_starts": (N, 2) int64}``: base crops, random crops, overlap targets, and where (X, Y) each
    random crop starts in the region (for inspection and tests)."""

    grid: int = 4
    crop_size: tuple[int, int, int] = (64, 64, 64)
    n_random: int = 4
    mri: MRIIntensity | None = None
    """MRI gamma / bias field / gain, one draw per crop (``data.modality=mri``); None for CT."""

    @property
    def region_shape(self) -> tuple[int, int, int]:
        sx, sy, sz = self.crop_size
        return (self.grid * sx, self.grid * sy, sz)

    def __call__(self, volume: Volume, rng: np.random.Generator, source: Any = None) -> dict[str, Any]:
        region, _ = random_crop(volume.image, self.region_shape, rng)
        bases = base_boxes(self.grid, self.crop_size)
        sx, sy, sz = self.crop_size
        starts = np.stack(
            [
                rng.integers(0, (self.grid - 1) * sx + 1, self.n_random),
                rng.integers(0, (self.grid - 1) * sy + 1, self.n_random),
            ],
            axis=1,
        ).astype(np.int64)
        crops, targets = [], []
        for x0, y0 in starts:
            box: Box = ((int(x0), int(x0) + sx), (int(y0), int(y0) + sy), (0, sz))
            crops.append(crop_at(region, (box[0][0], box[1][0], 0), self.crop_size))
            targets.append(overlap_fractions(box, bases))
        base_crops = np.stack([crop_at(region, (b[0][0], b[1][0], 0), self.crop_size) for b in bases])
        random_crops = np.stack(crops)
        if self.mri is not None:
            base_crops, random_crops = (
                self.mri.apply_each(base_crops, rng),
                self.mri.apply_each(random_crops, rng),
            )
        return {
            "bases": base_crops.astype(np.float32),
            "crops": random_crops.astype(np.float32),
            "targets": np.stack(targets).astype(np.float32),
            "crop_starts": starts,
        }
