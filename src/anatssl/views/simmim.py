"""SimMIM's views (Xie et al., CVPR 2022, in 3D): one random crop and its block mask.

With ``data.modality=mri`` the crop gets :class:`~anatssl.views.intensity.MRIIntensity` (gamma, bias field,
gain) before masking, so input and reconstruction target carry the same intensities; CT crops are
unchanged (SimMIM augments geometry only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anatssl.data.volume import Volume
from anatssl.views.crops import random_crop
from anatssl.views.intensity import MRIIntensity
from anatssl.views.masks import block_mask


@dataclass
class SimMIMViews:
    """One random crop and its block mask: ``{"x": (C, X, Y, Z), "mask": (1, X, Y, Z) 0/1 float32}``."""

    crop_size: tuple[int, int, int]
    mask_patch: int = 16
    ratio_min: float = 0.6
    ratio_max: float = 0.75
    shape: str = "cube"
    mri: MRIIntensity | None = None
    """MRI gamma / bias field / gain of the crop (``data.modality=mri``); None for CT."""

    def __call__(self, volume: Volume, rng: np.random.Generator, source: Any = None) -> dict[str, Any]:
        crop, _ = random_crop(volume.image, self.crop_size, rng)
        if self.mri is not None:
            crop = self.mri(crop, rng)
        ratio = float(rng.uniform(self.ratio_min, self.ratio_max))
        mask = block_mask(tuple(self.crop_size), self.mask_patch, ratio, self.shape, rng)  # type: ignore[arg-type]
        return {"x": crop.astype(np.float32), "mask": mask[None].astype(np.float32)}
