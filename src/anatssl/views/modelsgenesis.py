"""Models Genesis' views: a random sub-volume, corrupted, and the original as the restoration target.

Zhou et al., "Models Genesis: Generic Autodidactic Models for 3D Medical Image Analysis", MICCAI 2019;
"Models Genesis", Medical Image Analysis 67, 2021 (Sec. 2.1, Fig. 2). Numbers and order as in the public
code (MrGiovanni/ModelsGenesis, ``pytorch/config.py`` and ``pytorch/utils.py:generate_pair``):

1. flips along random axes, applied to input *and* target (``flip_rate`` 0.4, up to three);
2. local pixel shuffling (``local_rate`` 0.5): 10,000 random blocks of 1..dim/10 voxels per axis, each
   refilled with a permutation of the *original* voxels of that block (later blocks overwrite earlier
   ones where they overlap);
3. non-linear intensity transform (``nonlinear_rate`` 0.9): a cubic Bezier curve through (0, 0) and
   (1, 1) with two random control points in [0, 1]^2 (monotone by construction), used as a lookup
   table; half the time the curve is inverted (1 - ...: (0, 1) to (1, 0)), as the public code does;
4. in-painting or out-painting (``paint_rate`` 0.9, then in-painting with ``inpaint_rate`` 0.2,
   out-painting 0.8): in-painting fills up to 5 boxes of dim/6..dim/3 voxels with U(0, 1) noise
   (each box, the first included, with probability 0.95); out-painting fills everything with noise
   except up to 5 boxes of 3/7..4/7 of each dim (the first always, the next 4 with 0.95 each), which
   keep the image. Boxes keep 3 voxels from the border.

Intensities are expected in normalised [0, 1] (CT: the window of ``data.hu_window``, as the public
code's [-1000, 1000] HU; MRI: the percentile scaling); the Bezier lookup clamps values outside it. With
``data.modality=mri`` the crop first gets :class:`~anatssl.views.intensity.MRIIntensity` (gamma, bias
field, gain), input and target alike (the target is the augmented, uncorrupted crop); the paper (CT)
has none, and CT views are unchanged. Every random number comes from the
per-sample ``rng``, so a resumed run sees the same corruptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import comb
from typing import Any

import numpy as np

from anatssl.data.volume import Volume
from anatssl.views.crops import random_crop
from anatssl.views.intensity import MRIIntensity

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
"""((x0, x1), (y0, y1), (z0, z1)): half-open voxel ranges of a box."""

CURVE_SAMPLES = 100_000
"""Points on the Bezier curve used as the lookup table (the public code's ``nTimes``)."""


# -- 1. flips ---------------------------------------------------------------------------------------------
def random_flips(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator, rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """(C, X, Y, Z) input and target flipped together along random axes: while U < rate, 3 at most."""
    for _ in range(3):
        if rng.random() >= rate:
            break
        axis = 1 + int(rng.integers(0, 3))
        x, y = np.flip(x, axis=axis), np.flip(y, axis=axis)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


# -- 2. local pixel shuffling -----------------------------------------------------------------------------
def shuffle_blocks(x: np.ndarray, boxes: Sequence[Box], rng: np.random.Generator) -> np.ndarray:
    """(C, X, Y, Z) -> copy where each box, in order, holds a permutation of the original voxels of that
    box (the same permutation for every channel). Voxels outside all boxes are unchanged; a voxel in
    several boxes takes the value written by the last one."""
    out = x.copy()
    c = x.shape[0]
    for (x0, x1), (y0, y1), (z0, z1) in boxes:
        window = x[:, x0:x1, y0:y1, z0:z1].reshape(c, -1)
        perm = rng.permutation(window.shape[1])
        out[:, x0:x1, y0:y1, z0:z1] = window[:, perm].reshape(c, x1 - x0, y1 - y0, z1 - z0)
    return out


def shuffle_boxes(shape: Sequence[int], rng: np.random.Generator, n_blocks: int = 10_000) -> list[Box]:
    """``n_blocks`` boxes with edges uniform in 1..max(1, dim // 10), placed uniformly inside ``shape``."""
    dims = np.asarray(shape[-3:], dtype=np.int64)
    hi = np.maximum(dims // 10, 1)
    sizes = rng.integers(1, hi + 1, size=(n_blocks, 3))
    starts = rng.integers(0, dims - sizes + 1)
    ends = starts + sizes
    return [
        ((int(s[0]), int(e[0])), (int(s[1]), int(e[1])), (int(s[2]), int(e[2]))) for s, e in zip(starts, ends)
    ]


def local_pixel_shuffling(x: np.ndarray, rng: np.random.Generator, n_blocks: int = 10_000) -> np.ndarray:
    """Models Genesis' local pixel shuffling: 10,000 small random blocks, each permuted (public code)."""
    return shuffle_blocks(x, shuffle_boxes(x.shape, rng, n_blocks), rng)


# -- 3. non-linear intensity transform --------------------------------------------------------------------
def bezier_curve(points: np.ndarray, n: int = CURVE_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """(4, 2) control points -> (xs, ys) of the cubic Bezier curve at ``n`` parameters t in [0, 1],
    ``B(t) = sum_i C(3, i) t^i (1 - t)^(3 - i) P_i`` (from P_0 at t = 0 to P_3 at t = 1)."""
    t = np.linspace(0.0, 1.0, n)
    deg = len(points) - 1
    basis = np.stack([comb(deg, i) * t**i * (1 - t) ** (deg - i) for i in range(deg + 1)])
    return points[:, 0] @ basis, points[:, 1] @ basis


def intensity_curve(
    p1: Sequence[float] | np.ndarray, p2: Sequence[float] | np.ndarray, invert: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The lookup table (xs increasing, ys) of the Bezier curve (0, 0), p1, p2, (1, 1); both coordinates
    are monotone in t for control points in [0, 1]^2, so ys is non-decreasing in xs. ``invert``: ys
    reversed, a non-increasing curve from (0, 1) to (1, 0) (the public code's "flip" half)."""
    pts = np.array([[0.0, 0.0], list(p1), list(p2), [1.0, 1.0]], dtype=np.float64)
    xs, ys = bezier_curve(pts)
    return xs, (ys[::-1] if invert else ys)


def nonlinear_transform(x: np.ndarray, rng: np.random.Generator, invert_rate: float = 0.5) -> np.ndarray:
    """Every voxel mapped through a random monotone Bezier curve (two control points U[0, 1]^2)."""
    p = rng.random(4)
    xs, ys = intensity_curve(p[:2], p[2:], bool(rng.random() < invert_rate))
    return np.interp(x, xs, ys).astype(x.dtype)


# -- 4. in-painting and out-painting ----------------------------------------------------------------------
def _box(dims: Sequence[int], sizes: Sequence[int], rng: np.random.Generator) -> Box:
    """A box of ``sizes`` at least 3 voxels from each border (the public code's margin)."""
    out = []
    for dim, size in zip(dims, sizes):
        lo, hi = 3, dim - size - 3
        start = int(rng.integers(lo, hi + 1)) if hi >= lo else max((dim - size) // 2, 0)
        out.append((start, start + size))
    return (out[0], out[1], out[2])


def inpaint_boxes(shape: Sequence[int], rng: np.random.Generator, max_boxes: int = 5) -> list[Box]:
    """Up to ``max_boxes`` boxes, each drawn while U < 0.95, edges uniform in dim/6..dim/3."""
    dims = [int(d) for d in shape[-3:]]
    boxes = []
    for _ in range(max_boxes):
        if rng.random() >= 0.95:
            break
        sizes = [int(rng.integers(max(d // 6, 1), max(d // 3, 1) + 1)) for d in dims]
        boxes.append(_box(dims, sizes, rng))
    return boxes


def outpaint_boxes(shape: Sequence[int], rng: np.random.Generator, max_extra: int = 4) -> list[Box]:
    """One box, then up to ``max_extra`` more while U < 0.95; edges ``dim - U{3 dim/7..4 dim/7}``."""
    dims = [int(d) for d in shape[-3:]]

    def one() -> Box:
        sizes = [d - int(rng.integers(3 * d // 7, 4 * d // 7 + 1)) for d in dims]
        return _box(dims, sizes, rng)

    boxes = [one()]
    for _ in range(max_extra):
        if rng.random() >= 0.95:
            break
        boxes.append(one())
    return boxes


def box_mask(shape: Sequence[int], boxes: Sequence[Box]) -> np.ndarray:
    """(X, Y, Z) bool: True inside any of the boxes."""
    m = np.zeros(tuple(shape[-3:]), dtype=bool)
    for (x0, x1), (y0, y1), (z0, z1) in boxes:
        m[x0:x1, y0:y1, z0:z1] = True
    return m


def in_painting(x: np.ndarray, boxes: Sequence[Box], rng: np.random.Generator) -> np.ndarray:
    """(C, X, Y, Z) -> copy with the voxels inside ``boxes`` replaced by U(0, 1) noise."""
    out = x.copy()
    for (x0, x1), (y0, y1), (z0, z1) in boxes:
        out[:, x0:x1, y0:y1, z0:z1] = rng.random((x.shape[0], x1 - x0, y1 - y0, z1 - z0), dtype=np.float32)
    return out


def out_painting(x: np.ndarray, boxes: Sequence[Box], rng: np.random.Generator) -> np.ndarray:
    """(C, X, Y, Z) -> U(0, 1) noise everywhere except inside ``boxes``, which keep ``x``."""
    out = rng.random(x.shape, dtype=np.float32).astype(x.dtype)
    keep = box_mask(x.shape, boxes)
    out[:, keep] = x[:, keep]
    return out


# -- the views --------------------------------------------------------------------------------------------
@dataclass
class ModelsGenesisViews:
    """One random crop, corrupted: ``{"x": (C, X, Y, Z) corrupted, "target": (C, X, Y, Z) original
    (flipped as x), "applied": (4,) float32 flags [local shuffle, non-linear, in-paint, out-paint]}``."""

    crop_size: tuple[int, int, int]
    flip_rate: float = 0.4
    local_rate: float = 0.5
    shuffle_blocks: int = 10_000
    nonlinear_rate: float = 0.9
    nonlinear_invert_rate: float = 0.5
    paint_rate: float = 0.9
    inpaint_rate: float = 0.2
    mri: MRIIntensity | None = None
    """MRI gamma / bias field / gain of the crop (``data.modality=mri``); None for CT."""

    def __call__(self, volume: Volume, rng: np.random.Generator, source: Any = None) -> dict[str, Any]:
        crop, _ = random_crop(volume.image, self.crop_size, rng)
        if self.mri is not None:
            crop = self.mri(crop, rng)
        y = crop.astype(np.float32)
        y, x = random_flips(y, y, rng, self.flip_rate)
        x = x.copy()
        applied = np.zeros(4, dtype=np.float32)
        if rng.random() < self.local_rate:
            x = local_pixel_shuffling(x, rng, self.shuffle_blocks)
            applied[0] = 1.0
        if rng.random() < self.nonlinear_rate:
            x = nonlinear_transform(x, rng, self.nonlinear_invert_rate)
            applied[1] = 1.0
        if rng.random() < self.paint_rate:
            if rng.random() < self.inpaint_rate:
                x = in_painting(x, inpaint_boxes(x.shape, rng), rng)
                applied[2] = 1.0
            else:
                x = out_painting(x, outpaint_boxes(x.shape, rng), rng)
                applied[3] = 1.0
        return {"x": x.astype(np.float32), "target": y, "applied": applied}
