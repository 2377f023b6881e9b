"""The array contract every part of anatssl shares.

A :class:`Volume` is a float32 array ``(C, X, Y, Z)``, channel first, spatial axes in RAS order
(MONAI's convention after ``Orientation("RAS")``), with the 4x4 voxel -> world (mm) ``affine``.
Labels are integer arrays ``(1, X, Y, Z)`` on the same grid. Landmarks are world (mm) coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Volume:
    image: np.ndarray
    """(C, X, Y, Z) float32."""
    affine: np.ndarray
    """(4, 4) float64, voxel index -> world mm (RAS)."""
    path: str = "<memory>"
    label: np.ndarray | None = None
    """(1, X, Y, Z) integer organ labels on the image grid, if any."""
    landmarks: dict[str, list[float]] | None = None
    """name -> [x, y, z] world mm."""
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.image.shape[1:])  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """(..., 3) voxel indices -> (..., 3) world mm."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """(..., 3) world mm -> (..., 3) fractional voxel indices."""
        xyz = np.asarray(xyz, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        return xyz @ inv[:3, :3].T + inv[:3, 3]
