"""S2DC views (Pan et al., ICCV 2025): a slab of G x G crops, its affinely warped copy, per-crop
augmentations, and the *exact* token correspondence between the slab and its warped copy.

Geometry has one source of truth: a 3x3 homogeneous in-plane matrix ``F`` that maps a ``src`` slab
voxel (x, y) to its position in ``aug_full``. :func:`warp_inplane` resamples an image with it (output
voxel q reads the input at F^-1 q) and :func:`token_correspondence` maps token centres with the same
matrix, so the two cannot disagree (the public code derives the token shift separately and is off by
up to ~12 voxels). Voxel coordinates are indices: voxel v covers [v - 0.5, v + 0.5]; a token of
stride s at index a covers voxels [a s, a s + s) and is centred at a s + (s - 1) / 2.

Intensity: the paper shifts the intensity of ``aug_full`` (one draw) and of each ``aug_crop`` (one
draw per crop); with ``data.modality=mri`` the warped slab and each warped crop also get
:class:`~anatssl.views.intensity.MRIIntensity` (gamma, bias field, gain) before the shift, one draw for
the slab and one per crop; ``src`` stays clean as for CT. CT views are unchanged.

Everything here is numpy/torch on the CPU and draws all randomness from the ``rng`` it is given (these
run in DataLoader workers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from anatssl.data.volume import Volume
from anatssl.views.crops import crop_at, random_start
from anatssl.views.intensity import MRIIntensity

# -- geometry -----------------------------------------------------------------------------------------


def inplane_matrix(
    angle: float, scale: float, shift: tuple[float, float], centre: tuple[float, float]
) -> np.ndarray:
    """(3, 3) homogeneous map src voxel (x, y, 1) -> aug voxel: rotate by ``angle`` (rad) and scale
    isotropically about ``centre``, then translate by ``shift`` voxels."""
    c, s = math.cos(angle), math.sin(angle)
    lin = scale * np.array([[c, -s], [s, c]])
    ctr = np.asarray(centre, dtype=np.float64)
    out = np.eye(3)
    out[:2, :2] = lin
    out[:2, 2] = ctr - lin @ ctr + np.asarray(shift, dtype=np.float64)
    return out


def apply_inplane(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(3, 3) matrix, (..., 2) points -> (..., 2) mapped points."""
    xy = np.asarray(xy, dtype=np.float64)
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


def warp_inplane(
    image: np.ndarray | torch.Tensor, matrix: np.ndarray, mode: str = "bilinear"
) -> torch.Tensor:
    """Resample (C, X, Y, Z) ``image`` so that output voxel q holds input(F^-1 q); zero outside.

    The warp is in-plane (x, y), identical for every z, so it runs as one 2-D ``grid_sample`` over
    C * Z channels (exact for a linear image: bilinear interpolation with ``align_corners=True``).
    """
    img = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).float()
    c, nx, ny, nz = img.shape
    inv = np.linalg.inv(matrix)
    gx, gy = np.meshgrid(np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64), indexing="ij")
    src = apply_inplane(inv, np.stack([gx, gy], axis=-1))  # (X, Y, 2) input coordinates
    # grid_sample's input is (1, C*Z, H=X, W=Y); grid[..., 0] indexes W (our y), grid[..., 1] H (our x)
    norm_x = 2.0 * src[..., 0] / max(nx - 1, 1) - 1.0
    norm_y = 2.0 * src[..., 1] / max(ny - 1, 1) - 1.0
    grid = torch.from_numpy(np.stack([norm_y, norm_x], axis=-1)).float().unsqueeze(0)
    planes = img.permute(0, 3, 1, 2).reshape(1, c * nz, nx, ny)
    out = F.grid_sample(planes, grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out.reshape(c, nz, nx, ny).permute(0, 2, 3, 1).contiguous()


def token_centres(n_tokens: int, stride: int) -> np.ndarray:
    """Voxel coordinate of the centre of tokens 0..n-1 along one axis."""
    return np.arange(n_tokens, dtype=np.float64) * stride + (stride - 1) / 2.0


def token_correspondence(matrix: np.ndarray, n_tokens: tuple[int, int], stride: int) -> np.ndarray:
    """Mutual-nearest token pairs of one z-layer under ``F = matrix``.

    Args:
        matrix: (3, 3) src voxel -> aug voxel.
        n_tokens: (Tx, Ty) tokens per in-plane axis of the slab (both views have the same grid).
        stride: voxels per token.
    Returns:
        (Tx * Ty,) int64: for src token i = x * Ty + y, the aug token j it is paired with, or -1 when
        its centre leaves the aug view, the reverse map of its nearest partner leaves the src view, or
        the two nearest-neighbour maps disagree.
    """
    tx, ty = n_tokens
    ext = np.array([tx * stride, ty * stride], dtype=np.float64)
    cx, cy = np.meshgrid(token_centres(tx, stride), token_centres(ty, stride), indexing="ij")
    centres = np.stack([cx, cy], axis=-1).reshape(-1, 2)

    def nearest(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inside = np.all((pts >= -0.5) & (pts <= ext - 0.5), axis=-1)
        idx = np.rint((pts - (stride - 1) / 2.0) / stride).astype(np.int64)
        idx = np.clip(idx, 0, np.array([tx - 1, ty - 1]))
        return idx[:, 0] * ty + idx[:, 1], inside

    fwd, fwd_in = nearest(apply_inplane(matrix, centres))
    back, back_in = nearest(apply_inplane(np.linalg.inv(matrix), centres))
    src = np.arange(tx * ty)
    ok = fwd_in & back_in[fwd] & (back[fwd] == src)
    return np.where(ok, fwd, -1).astype(np.int64)


def match_matrix(match: torch.Tensor, n_aug: int) -> torch.Tensor:
    """(..., m) partner indices (-1 none) -> (..., m, n_aug) {0, 1} float correspondence G."""
    g = torch.zeros(*match.shape, n_aug + 1, dtype=torch.float32, device=match.device)
    idx = torch.where(match < 0, torch.full_like(match, n_aug), match)
    g.scatter_(-1, idx.unsqueeze(-1), 1.0)
    return g[..., :n_aug]


def crop_affine(
    rng: np.random.Generator, crop: int, rot_deg: float, trans: float, scale: float, scale_mode: str
) -> torch.Tensor:
    """A random (3, 4) ``affine_grid`` theta for one cubic crop: rotation about the two in-plane axes
    (x, y) within +-rot_deg, translation within +-trans voxels, scale factors.

    ``scale_mode='fixed'``: one isotropic factor in [1 - scale, 1 + scale]. ``'official'``: independent
    per-axis factors 1 + U(-1, 1) (= U(0, 2)), what the public code's MONAI call draws; floored at
    0.05 to keep the matrix invertible.
    """
    ax, ay = np.deg2rad(rng.uniform(-rot_deg, rot_deg, size=2))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    if scale_mode == "official":
        factors = np.maximum(1.0 + rng.uniform(-1.0, 1.0, size=3), 0.05)
    else:
        factors = np.full(3, rng.uniform(1.0 - scale, 1.0 + scale))
    lin = rx @ ry @ np.diag(factors)
    shift = rng.uniform(-trans, trans, size=3) * 2.0 / max(crop - 1, 1)  # voxels -> [-1, 1] units
    # our axes (x, y, z) are grid_sample's (D, H, W); its grid coordinates run (W, H, D) = (z, y, x)
    perm = np.eye(3)[::-1]
    theta = np.zeros((3, 4))
    theta[:, :3] = perm @ lin @ perm.T
    theta[:, 3] = perm @ shift
    return torch.from_numpy(theta).float()


def warp_crops(crops: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
    """(K, C, c, c, c) crops, (K, 3, 4) thetas -> warped crops (trilinear, zero padding)."""
    grid = F.affine_grid(thetas, list(crops.shape), align_corners=True)
    return F.grid_sample(crops, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


# -- the view function --------------------------------------------------------------------------------


@dataclass
class S2DCSample:
    """One sample's views before being cut into crops (used by the inspector)."""

    slab: torch.Tensor
    """(C, G c, G c, c) src slab."""
    aug_slab: torch.Tensor
    """(C, G c, G c, c) warped slab, before the intensity shift."""
    matrix: np.ndarray
    """(3, 3) src voxel -> aug voxel."""
    match: np.ndarray
    """(Tz, Tx * Ty) aug partner of each src token per z-layer, -1 if none."""
    origin: tuple[int, ...]
    """Slab start voxel in the volume (negative / past the end where zero-padded)."""


def to_crops(slab: torch.Tensor, grid: int, crop: int) -> torch.Tensor:
    """(C, G c, G c, c) -> (G * G, C, c, c, c), crop k = gx * G + gy."""
    c = slab.shape[0]
    x = slab.reshape(c, grid, crop, grid, crop, crop)
    return x.permute(1, 3, 0, 2, 4, 5).reshape(grid * grid, c, crop, crop, crop).contiguous()


class S2DCViews:
    """Picklable view function ``(volume, rng, source) -> dict`` for :class:`~anatssl.methods.s2dc.S2DC`.

    Returns ``src``, ``aug_full``, ``aug_crop`` (G * G, C, c, c, c) float32, ``match`` (Tz, Tx * Ty)
    int64, ``crop_k`` (the crop whose global embeddings are contrasted) and ``matrix`` (3, 3).
    """

    def __init__(
        self,
        grid: int,
        crop: int,
        stride: int,
        rot_full_deg: float = 30.0,
        scale_full: tuple[float, float] = (0.9, 1.2),
        trans_full: float = 24.0,
        rot_crop_deg: float = 20.0,
        scale_crop: float = 0.1,
        trans_crop: float = 24.0,
        intensity_shift: float = 0.1,
        crop_scale_mode: str = "fixed",
        mri: MRIIntensity | None = None,
    ) -> None:
        if crop % stride:
            raise ValueError(f"crop {crop} is not a multiple of the token stride {stride}")
        self.grid, self.crop, self.stride = grid, crop, stride
        self.rot_full, self.scale_full = rot_full_deg, scale_full
        self.rot_crop, self.scale_crop = rot_crop_deg, scale_crop
        # translations are given for 96^3 crops (the paper) and scale with the crop size
        self.trans_full = trans_full * crop / 96.0
        self.trans_crop = trans_crop * crop / 96.0
        self.intensity_shift = intensity_shift
        self.crop_scale_mode = crop_scale_mode
        self.mri = mri

    @property
    def slab_shape(self) -> tuple[int, int, int]:
        return (self.grid * self.crop, self.grid * self.crop, self.crop)

    @property
    def token_grid(self) -> tuple[int, int, int]:
        t = self.crop // self.stride
        return (self.grid * t, self.grid * t, t)

    def sample(self, volume: Volume, rng: np.random.Generator) -> S2DCSample:
        shape = self.slab_shape
        origin = random_start(volume.image.shape[1:], shape, rng)
        slab = torch.from_numpy(crop_at(np.asarray(volume.image, dtype=np.float32), origin, shape))
        angle = math.radians(rng.uniform(-self.rot_full, self.rot_full))
        scale = rng.uniform(*self.scale_full)
        tx_, ty_ = rng.uniform(-self.trans_full, self.trans_full, size=2)
        shift = (float(tx_), float(ty_))
        centre = ((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0)
        matrix = inplane_matrix(angle, scale, shift, centre)
        aug = warp_inplane(slab, matrix)
        tx, ty, tz = self.token_grid
        layer = token_correspondence(matrix, (tx, ty), self.stride)
        return S2DCSample(slab, aug, matrix, np.tile(layer, (tz, 1)), origin)

    def __call__(self, volume: Volume, rng: np.random.Generator, source: object = None) -> dict[str, object]:
        s = self.sample(volume, rng)
        g, c = self.grid, self.crop
        src = to_crops(s.slab, g, c)
        shift = self.intensity_shift
        aug_slab = s.aug_slab
        if self.mri is not None:
            aug_slab = torch.from_numpy(self.mri(aug_slab.numpy(), rng))
        aug_full = to_crops(aug_slab, g, c) + float(rng.uniform(-shift, shift))
        thetas = torch.stack(
            [
                crop_affine(rng, c, self.rot_crop, self.trans_crop, self.scale_crop, self.crop_scale_mode)
                for _ in range(g * g)
            ]
        )
        shifts = torch.from_numpy(rng.uniform(-shift, shift, size=g * g)).float()
        warped = warp_crops(src, thetas)
        if self.mri is not None:
            warped = torch.from_numpy(self.mri.apply_each(warped.numpy(), rng))
        aug_crop = warped + shifts.view(-1, 1, 1, 1, 1)
        return {
            "src": src.numpy(),
            "aug_full": aug_full.numpy(),
            "aug_crop": aug_crop.numpy(),
            "match": s.match,
            "crop_k": int(rng.integers(g * g)),
            "matrix": s.matrix.astype(np.float32),
        }
