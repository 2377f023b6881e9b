"""Views of Tang et al. (CVPR 2022) Swin-UNETR pretraining: two crops, rotation, in-painting cut-outs.

With ``data.modality=mri`` each crop first gets :class:`~anatssl.views.intensity.MRIIntensity` (gamma,
bias field, gain), independently per view, so the clean target is the augmented crop; the paper (CT)
has no intensity augmentation here, and CT views are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anatssl.data.volume import Volume
from anatssl.views.crops import random_crop
from anatssl.views.intensity import MRIIntensity


def rotate_about_z(x: np.ndarray, k: int) -> np.ndarray:
    """Rotate (C, X, Y, Z) by ``k * 90`` degrees in the axial (X, Y) plane, i.e. about the slice axis."""
    return np.ascontiguousarray(np.rot90(x, k=k, axes=(1, 2)))


def cutout(
    x: np.ndarray,
    rng: np.random.Generator,
    max_boxes: int,
    min_frac: float,
    max_frac: float,
    noise_prob: float,
) -> np.ndarray:
    """In-painting corruption: 1..max_boxes random cuboids, each filled with U(0,1) noise or zeros."""
    out = x.copy()
    size = np.array(x.shape[1:])
    for _ in range(int(rng.integers(1, max_boxes + 1))):
        box = np.maximum(1, (size * rng.uniform(min_frac, max_frac, size=3)).astype(int))
        start = [int(rng.integers(0, s - b + 1)) for s, b in zip(size, box)]
        sl = (slice(None), *(slice(a, a + b) for a, b in zip(start, box)))
        if rng.random() < noise_prob:
            out[sl] = rng.random(out[sl].shape, dtype=np.float32)
        else:
            out[sl] = 0.0
    return out


@dataclass
class SwinSSLViews:
    crop_size: tuple[int, int, int]
    max_boxes: int = 4
    min_box_frac: float = 0.1
    max_box_frac: float = 0.3
    noise_prob: float = 0.5
    mri: MRIIntensity | None = None
    """MRI gamma / bias field / gain per view (``data.modality=mri``); None for CT."""

    def __call__(self, volume: Volume, rng: np.random.Generator, source: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for v in (1, 2):
            crop, _ = random_crop(volume.image, self.crop_size, rng)
            if self.mri is not None:
                crop = self.mri(crop, rng)
            k = int(rng.integers(0, 4))
            clean = rotate_about_z(crop, k).astype(np.float32)
            out[f"x{v}"] = cutout(
                clean, rng, self.max_boxes, self.min_box_frac, self.max_box_frac, self.noise_prob
            )
            out[f"target{v}"] = clean
            out[f"rot{v}"] = k
        return out
