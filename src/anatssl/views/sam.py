"""SAM's training views: two overlapping, independently augmented crops of one volume, and the exact
voxel correspondence between them (Yan et al., IEEE TMI 2022, Sec. III-A).

Each view ``v`` resamples the volume on its own output grid through a similarity transform

    input_voxel = centre_v + scale_v * R_v @ (out_voxel - (C - 1) / 2)

(``scale_v`` isotropic, ``R_v`` a small rotation about a random axis), so a point of view 1 maps to
view 2 by composing one transform with the other's inverse: no approximation, no label needed.
Intensity augmentation (optional tissue remap, contrast, brightness, Gaussian noise) is independent per
view; with ``data.modality=mri`` each view also gets :class:`~anatssl.views.intensity.MRIIntensity`
(gamma, bias field, gain) and the tissue remap's bands cover MRI's tissue intensities
(``TISSUE_BANDS["mri"]``) instead of CT's soft-tissue HU band.

Positive pairs are anchored on view 1's fine-embedding grid (stride 2, block-centred, see
``sam_model``), preferably in the foreground (intensity above ``fg_threshold``: matching air to air
teaches nothing), and their partners are fractional fine-grid positions of view 2.

Runs in DataLoader workers: numpy + scipy only, all randomness from the given ``rng``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

from anatssl.data.volume import Volume
from anatssl.errors import DataError
from anatssl.views.intensity import MRIIntensity

FINE_STRIDE = 2
TISSUE_BANDS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "ct": ((0.45, 0.65), (0.01, 0.04)),
    "mri": ((0.15, 0.9), (0.03, 0.1)),
}
"""Per modality, the normalised intensities where the tissue remap's bumps are centred and the range
of their widths (``sam.tissue_range`` / ``sam.tissue_width`` left null take these).

``ct``: the soft-tissue band -100..300 HU of the [-1000, 1000] window, bumps 20-80 HU wide (organs
differ by 30-60 HU and by ~140 HU between contrast phases). ``mri``: percentile-scaled MRI has no HU;
its tissues spread over the whole scale (T1 brain: CSF ~0.1-0.3, grey matter ~0.4-0.6, white matter
~0.6-0.8; T2 reverses them), so the bumps are centred anywhere from just above the background (a bump
at 0.15 moves the background 0 by at most a third of its amplitude) to the brightest tissue, and are
wider (0.03-0.1) because MRI tissue classes are broader and further apart on this scale."""


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """(3, 3) rotation by an angle uniform in [-max_deg, max_deg] about a uniformly random axis."""
    if max_deg <= 0:
        return np.eye(3)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis) + 1e-12
    angle = np.deg2rad(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)  # Rodrigues


def foreground_voxels(image: np.ndarray, threshold: float, path: str) -> np.ndarray:
    """(C, X, Y, Z) image -> (M, 3) int indices of voxels whose first channel exceeds ``threshold``."""
    fg = np.argwhere(image[0] > threshold)
    if len(fg) == 0:
        raise DataError(
            f"{path}: no voxel above the foreground threshold {threshold} (intensity range "
            f"[{float(image.min()):.3g}, {float(image.max()):.3g}] after normalisation); check the "
            f"intensity preset (data.modality; data.hu_window for CT, data.mri_percentiles for MRI) "
            "or lower the threshold"
        )
    return fg


def _in_box(vox: np.ndarray, box: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(N, 3) voxel positions -> (N,) bool, inside the half-open kept part ``[lo, hi)`` of a view."""
    return np.all((vox >= box[0]) & (vox < box[1]), axis=1)


def tissue_remap(
    x: np.ndarray,
    rng: np.random.Generator,
    shift: float,
    bands: int,
    centre_range: tuple[float, float],
    width_range: tuple[float, float] = TISSUE_BANDS["ct"][1],
) -> np.ndarray:
    """A random, smooth, non-monotone intensity remap ``x + sum_k a_k exp(-(x - c_k)^2 / 2 w_k^2)``.

    Two crops of one scan show each tissue at exactly the same intensity, but two patients do not
    (CT: contrast phase, physiology, kidney cortex is ~30 HU unenhanced and ~170 HU venous; MRI:
    scanner, sequence parameters). A global contrast/brightness change keeps the order of tissues, so a
    network can still match by the exact intensity of a tissue and fail across patients. Shifting a few
    random intensity bands up or down (amplitude ``a_k ~ U(-shift, shift)``, centre ``c_k ~
    U(centre_range)``, width ``w_k ~ U(width_range)``, all in normalised [0, 1] units, see
    ``TISSUE_BANDS``), independently per view, changes the relative intensities of tissues as a change
    of patient does, while edges and shapes stay where they are, so matching must rely on anatomy.
    Hand-written: MONAI's intensity transforms (RandHistogramShift, RandAdjustContrast) are monotone.
    """
    out = x
    for _ in range(bands):
        a = rng.uniform(-shift, shift)
        c = rng.uniform(*centre_range)
        w = rng.uniform(*width_range)
        out = out + a * np.exp(-0.5 * ((x - c) / w) ** 2)
    return out


@dataclass
class SAMViews:
    """Picklable ``(volume, rng, source) -> dict`` of SAM's two views and their correspondence.

    Returns (C = crop size, N = num_pairs):
        ``view1``, ``view2``: (1, Cx, Cy, Cz) float32 augmented crops;
        ``pts1``: (N, 3) float32 fine-grid indices in view 1 (integers);
        ``pts2``: (N, 3) float32 fractional fine-grid indices of the partners in view 2;
        ``valid``: (N,) bool, False for padding when the overlap holds fewer than N grid points;
        ``grid2mm``: (3, 3) float32, a step on view 2's fine grid -> displacement in mm (for the
        exclusion radius of the negatives).
    """

    crop_size: tuple[int, int, int] = (48, 48, 48)
    num_pairs: int = 100
    scale_range: tuple[float, float] = (0.8, 1.2)
    """Output voxel = scale input voxels. SAM augments scale so embeddings do not encode voxel size."""
    rotate_deg: float = 10.0
    max_shift: float = 0.5
    """Largest offset between the crop centres, as a fraction of the crop extent per axis (>= 50%
    overlap per axis at 0.5)."""
    contrast_range: tuple[float, float] = (0.85, 1.15)
    brightness: float = 0.1
    noise_std: float = 0.03
    blur_sigma: tuple[float, float] = (0.0, 0.0)
    """Gaussian blur of each view, sigma ~ U(lo, hi) output voxels, independently per view. Both crops of
    one scan share its noise and fine texture; blurring them differently (and adding independent noise)
    keeps the network from matching by that texture instead of by anatomy."""
    fg_threshold: float = 0.05
    tissue_shift: float = 0.0
    """Largest shift of one intensity band (normalised units) by the per-view tissue remap, 0 = off."""
    tissue_bands: int = 3
    """Number of Gaussian bumps of the remap (see :func:`tissue_remap`)."""
    tissue_range: tuple[float, float] = TISSUE_BANDS["ct"][0]
    """Intensities (normalised) where the bumps are centred (``TISSUE_BANDS``: CT soft tissue here)."""
    tissue_width: tuple[float, float] = TISSUE_BANDS["ct"][1]
    """Range of the bumps' widths (normalised units, ``TISSUE_BANDS``)."""
    mri: MRIIntensity | None = None
    """MRI gamma / bias field / gain per view (``data.modality=mri``); None for CT."""
    fov_cut: float = 0.0
    """Field-of-view cut: each end of each axis of a view is, with probability 1/2, blanked (set to the
    background value 0) to a depth ~ U(0, fov_cut) of the crop, independently per view. Both crops of
    one scan share the scan's edges at the same anatomical place, so without it a network can locate a
    point by its distance to the edge of the scan, a cue that does not carry over to a patient scanned
    over another range. Pairs whose point falls in a blanked part of either view are not used."""

    def __post_init__(self) -> None:
        if any(c % FINE_STRIDE or c < 2 * FINE_STRIDE for c in self.crop_size):
            raise ValueError(f"crop_size {self.crop_size} must be even and >= {2 * FINE_STRIDE}")
        if self.num_pairs < 1:
            raise ValueError(f"num_pairs must be >= 1, got {self.num_pairs}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be 0 < lo <= hi, got {self.scale_range}")
        if not 0 <= self.max_shift < 1:
            raise ValueError(f"max_shift must be in [0, 1), got {self.max_shift}")

    # -- geometry ----------------------------------------------------------------------------
    def _transform(self, rng: np.random.Generator, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A view's (3,3) matrix and (3,) offset: input_voxel = A @ out_voxel + t."""
        scale = rng.uniform(*self.scale_range)
        a = scale * random_rotation(rng, self.rotate_deg)
        half = (np.asarray(self.crop_size, dtype=np.float64) - 1) / 2
        return a, centre - a @ half

    def __call__(self, volume: Volume, rng: np.random.Generator, source: Any = None) -> dict[str, Any]:
        img = np.asarray(volume.image, dtype=np.float32)
        shape = np.asarray(img.shape[1:])
        fg = foreground_voxels(img, self.fg_threshold, volume.path)
        crop = np.asarray(self.crop_size, dtype=np.float64)

        c1 = fg[rng.integers(len(fg))].astype(np.float64)
        a1, t1 = self._transform(rng, c1)
        shift = rng.uniform(-1, 1, size=3) * self.max_shift * crop * np.abs(np.diag(a1))
        a2, t2 = self._transform(rng, c1 + shift)

        boxes = [self._fov_box(rng) for _ in range(2)]
        views = [self._sample(img, a, t, rng, box) for (a, t), box in zip(((a1, t1), (a2, t2)), boxes)]

        # fine grid of view 1 (block centres) -> input voxels -> view 2 voxels -> view 2 fine grid
        fshape = (crop // FINE_STRIDE).astype(int)
        g1 = np.stack(np.meshgrid(*[np.arange(n) for n in fshape], indexing="ij"), -1).reshape(-1, 3)
        v1 = FINE_STRIDE * g1 + (FINE_STRIDE - 1) / 2
        inp = v1 @ a1.T + t1
        v2 = (inp - t2) @ np.linalg.inv(a2).T
        g2 = (v2 - (FINE_STRIDE - 1) / 2) / FINE_STRIDE
        in_view2 = np.all((g2 >= 0) & (g2 <= fshape - 1), axis=1)
        in_volume = np.all((inp >= 0) & (inp <= shape - 1), axis=1)
        ok = in_view2 & in_volume & _in_box(v1, boxes[0]) & _in_box(v2, boxes[1])
        vals = map_coordinates(img[0], inp.T, order=1, mode="constant", cval=0.0)
        is_fg = ok & (vals > self.fg_threshold)
        chosen = self._choose(rng, np.flatnonzero(is_fg), np.flatnonzero(ok & ~is_fg))
        n = len(chosen)
        pts1 = np.zeros((self.num_pairs, 3), np.float32)
        pts2 = np.zeros((self.num_pairs, 3), np.float32)
        valid = np.zeros(self.num_pairs, bool)
        pts1[:n], pts2[:n], valid[:n] = g1[chosen], g2[chosen], True
        spacing = np.asarray(volume.spacing, dtype=np.float64)
        grid2mm = (spacing[:, None] * a2) * FINE_STRIDE
        return {
            "view1": views[0],
            "view2": views[1],
            "pts1": pts1,
            "pts2": pts2,
            "valid": valid,
            "grid2mm": grid2mm.astype(np.float32),
        }

    def _choose(self, rng: np.random.Generator, fg_idx: np.ndarray, bg_idx: np.ndarray) -> np.ndarray:
        """Up to ``num_pairs`` indices: foreground first, then other overlap points."""
        take_fg = rng.permutation(fg_idx)[: self.num_pairs]
        rest = self.num_pairs - len(take_fg)
        take_bg = rng.permutation(bg_idx)[:rest] if rest > 0 else bg_idx[:0]
        return np.concatenate([take_fg, take_bg]).astype(np.int64)

    def _fov_box(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) voxel bounds of the part of a view that is kept (see ``fov_cut``)."""
        crop = np.asarray(self.crop_size, dtype=np.float64)
        lo, hi = np.full(3, -0.5), crop - 0.5
        if self.fov_cut > 0:
            cut = rng.uniform(0, self.fov_cut, size=(2, 3)) * crop * (rng.random((2, 3)) < 0.5)
            lo, hi = lo + cut[0], hi - cut[1]
        return lo, hi

    def _sample(
        self,
        img: np.ndarray,
        a: np.ndarray,
        t: np.ndarray,
        rng: np.random.Generator,
        box: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Resample one view (trilinear, zero outside the volume and the ``box``), augment its intensities."""
        grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in self.crop_size], indexing="ij"))
        coords = np.einsum("ij,jxyz->ixyz", a, grid) + t[:, None, None, None]
        out = np.stack([map_coordinates(c, coords, order=1, mode="constant", cval=0.0) for c in img])
        if box is not None and self.fov_cut > 0:
            keep = _in_box(grid.reshape(3, -1).T, box).reshape(self.crop_size)
            out = out * keep
        if self.blur_sigma[1] > 0:
            sigma = rng.uniform(*self.blur_sigma)
            out = np.stack([gaussian_filter(c, sigma) for c in out]) if sigma > 0 else out
        if self.tissue_shift > 0:
            out = tissue_remap(
                out, rng, self.tissue_shift, self.tissue_bands, self.tissue_range, self.tissue_width
            )
        if self.mri is not None:  # after the remap: tissue (patient) -> gamma (sequence) -> field (coil)
            out = self.mri(out, rng)
        out = out * rng.uniform(*self.contrast_range) + rng.uniform(-self.brightness, self.brightness)
        if self.noise_std > 0:
            out = out + rng.normal(0, self.noise_std, size=out.shape)
        return out.astype(np.float32)
