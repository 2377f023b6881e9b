"""The embedding-map contract shared by SAM (producer) and Alice's pair miner (consumer).

An :class:`EmbeddingMap` holds SAM's two unit-norm embedding grids of one volume, each with the 4x4
affine that maps its grid index to world millimetres (RAS). Any embedding-grid index therefore maps
to a voxel index of *any* grid of the same scan (the training volume's, after its own preprocessing)
and back, through world coordinates: one pair of functions does this, :meth:`grid_to_world` /
:meth:`world_to_grid`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EmbeddingMap:
    fine: np.ndarray
    """(D, Fx, Fy, Fz) float16, L2-normalised along D."""
    coarse: np.ndarray
    """(D, Cx, Cy, Cz) float16, L2-normalised along D."""
    fine_affine: np.ndarray
    """(4, 4) fine-grid index -> world mm."""
    coarse_affine: np.ndarray
    """(4, 4) coarse-grid index -> world mm."""
    meta: dict[str, object] = field(default_factory=dict)
    """source path, source hash, model hash, stride, spacing ..."""
    fine_mask: np.ndarray | None = None
    """(Fx, Fy, Fz) bool, optional: fine cells inside the body (any voxel of the cell above the
    foreground level). ``match_points`` only matches into these cells when present."""

    @staticmethod
    def grid_to_world(affine: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """(..., 3) grid indices -> (..., 3) world mm."""
        idx = np.asarray(idx, dtype=np.float64)
        return idx @ affine[:3, :3].T + affine[:3, 3]

    @staticmethod
    def world_to_grid(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
        """(..., 3) world mm -> (..., 3) fractional grid indices."""
        inv = np.linalg.inv(affine)
        xyz = np.asarray(xyz, dtype=np.float64)
        return xyz @ inv[:3, :3].T + inv[:3, 3]

    @property
    def fine_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.fine.shape[1:])  # type: ignore[return-value]
