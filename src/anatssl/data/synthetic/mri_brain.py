"""``mri-brain`` subjects: the MNI152 T1 template warped by a known random transform, with MRI-like
intensity changes, its merged Harvard-Oxford + JHU labels and their centroids as landmarks.

Geometry. A subject's grid is ``size`` voxels of ``spacing`` mm (default 64 x 76 x 64 at 3 mm, i.e.
192 x 228 x 192 mm: the MNI brain, 140 x 175 x 130 mm, scaled by up to 1.1 and rotated by up to 10
degrees still fits), RAS, world 0 at the grid centre. Subject world point ``p`` shows the template at

    phi(p) = w(c + L (p - t)),   L = R S,   w(q) = q + u(q)

with ``c`` the template brain's centre (MNI (0, -18, 18)), ``R`` a rotation by U(-10, 10) degrees about
each axis, ``S`` = diag(isotropic U(0.9, 1.1) x per-axis U(0.95, 1.05)) (head size and shape),
``t`` a translation of U(-10, 10) mm per axis (head position), and ``u`` an elastic displacement in
template space: 12 Gaussian bumps (sigma 25 mm, centres uniform in the brain's box, each vector
U(-3, 3) mm per component), smooth and small enough (|grad u| < 0.5) that ``w`` is invertible; its
inverse is found by fixed-point iteration (``q = y - u(q)``). The parameters were fixed before any
model was trained on the data (they are what separates two heads after rigid positioning, not tuned
to a result).

* image: the template (Gaussian-prefiltered, sigma 0.42 x spacing, then trilinear) at ``phi(p)``;
* labels: the merged atlas (``mri_atlas.MRI_LABELS``) at ``phi(p)``, nearest neighbour;
* landmarks: each label's template centroid ``m`` mapped into the subject, ``phi^-1(m)``, world mm;
  those outside the grid are left out.

Intensity (applied to the warped template ``x`` in [0, 1], in this order): gamma ``x ** g``,
g = exp(U(log 0.7, log 1.4)) (grey/white contrast of other sequences and scanners); a multiplicative
bias field ``exp(b(p))`` with a linear ramp of U(-0.15, 0.15) per 100 mm per axis plus 4 Gaussian bumps
(sigma 60 mm, amplitude U(-0.2, 0.2)); a scanner scale U(300, 1200); Rician noise (magnitude of a
complex signal with Gaussian noise of sd U(0.005, 0.02) of the scale in each part: white-matter SNR
50-200, as a 1 mm T1 scan's ~10-40 averaged over a 3 mm voxel). Written as int16.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anatssl.data.synthetic.mri_atlas import MRI_LABELS, BrainAtlas, load_atlas, missing_sources
from anatssl.errors import ConfigError, DataError

DEFAULT_SIZE: tuple[int, int, int] = (64, 76, 64)
DEFAULT_SPACING: tuple[float, float, float] = (3.0, 3.0, 3.0)
BRAIN_CENTRE_MM: tuple[float, float, float] = (0.0, -18.0, 18.0)
"""Centre of the MNI152 brain's bounding box (x -70..70, y -105..70, z -50..85 mm), rounded."""
PREFIX = "brain_"
SUBFOLDERS: tuple[str, ...] = ("imagesTr", "labelsTr", "landmarks")


@dataclass(frozen=True)
class WarpParams:
    """Ranges of the random subject transform (see the module docstring)."""

    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    anisotropy: tuple[float, float] = (0.95, 1.05)
    translate_mm: float = 10.0
    elastic_bumps: int = 12
    elastic_sigma_mm: float = 25.0
    elastic_mm: float = 3.0


@dataclass(frozen=True)
class IntensityParams:
    gamma: tuple[float, float] = (0.7, 1.4)
    bias_ramp: float = 0.15
    bias_bumps: int = 4
    bias_sigma_mm: float = 60.0
    bias_amplitude: float = 0.2
    scale: tuple[float, float] = (300.0, 1200.0)
    noise: tuple[float, float] = (0.005, 0.02)


def _bumps(points: np.ndarray, centres: np.ndarray, vectors: np.ndarray, sigma: float) -> np.ndarray:
    """(N, 3) points -> (N, D) sum over K Gaussian bumps of ``vectors`` (K, D) centred at (K, 3)."""
    out = np.zeros((len(points), vectors.shape[1]))
    for c, v in zip(centres, vectors):
        g = np.exp(-np.sum((points - c) ** 2, axis=1) / (2.0 * sigma**2))
        out += g[:, None] * v[None, :]
    return out


@dataclass(frozen=True)
class BrainWarp:
    """The known subject -> template map ``phi(p) = w(c + L (p - t))`` (module docstring)."""

    linear: np.ndarray
    """L = R S, (3, 3)."""
    translation: np.ndarray
    """t, (3,) mm."""
    centre: np.ndarray
    """c, (3,) MNI mm."""
    bump_centres: np.ndarray
    """(K, 3) MNI mm."""
    bump_vectors: np.ndarray
    """(K, 3) mm."""
    sigma: float

    def affine_to_template(self, p: np.ndarray) -> np.ndarray:
        """(N, 3) subject world -> (N, 3) template world before the elastic part: c + L (p - t)."""
        return self.centre + (np.asarray(p, np.float64) - self.translation) @ self.linear.T

    def displacement(self, q: np.ndarray) -> np.ndarray:
        return _bumps(np.asarray(q, np.float64), self.bump_centres, self.bump_vectors, self.sigma)

    def to_template(self, p: np.ndarray) -> np.ndarray:
        """phi: (N, 3) subject world mm -> (N, 3) MNI mm."""
        q = self.affine_to_template(p)
        return q + self.displacement(q)

    def to_subject(self, y: np.ndarray, iterations: int = 50) -> np.ndarray:
        """phi^-1: (N, 3) MNI mm -> (N, 3) subject world mm (fixed point of q = y - u(q), then the
        affine inverse). Raises if the iteration has not converged to 1e-6 mm."""
        y = np.asarray(y, np.float64)
        q = y.copy()
        for _ in range(iterations):
            q_new = y - self.displacement(q)
            if np.max(np.abs(q_new - q)) < 1e-9:
                q = q_new
                break
            q = q_new
        residual = np.max(np.abs(q + self.displacement(q) - y)) if len(y) else 0.0
        if residual > 1e-6:
            raise DataError(f"elastic warp not invertible here (residual {residual:.2g} mm)")
        return (q - self.centre) @ np.linalg.inv(self.linear).T + self.translation


def draw_warp(rng: np.random.Generator, params: WarpParams = WarpParams()) -> BrainWarp:
    """A random :class:`BrainWarp` (rotation about x, y, z in that order, then scale)."""
    a = np.deg2rad(rng.uniform(-params.rotate_deg, params.rotate_deg, 3))
    cx, cy, cz = np.cos(a)
    sx, sy, sz = np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    scale = rng.uniform(*params.scale) * rng.uniform(*params.anisotropy, size=3)
    linear = rz @ ry @ rx @ np.diag(scale)
    translation = rng.uniform(-params.translate_mm, params.translate_mm, 3)
    lo, hi = np.array([-70.0, -105.0, -50.0]), np.array([70.0, 70.0, 85.0])
    centres = rng.uniform(lo, hi, size=(params.elastic_bumps, 3))
    vectors = rng.uniform(-params.elastic_mm, params.elastic_mm, size=(params.elastic_bumps, 3))
    return BrainWarp(
        linear=linear,
        translation=translation,
        centre=np.array(BRAIN_CENTRE_MM),
        bump_centres=centres,
        bump_vectors=vectors,
        sigma=params.elastic_sigma_mm,
    )


def subject_affine(size: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """RAS voxel -> world affine with world 0 at the grid centre."""
    aff = np.diag([*map(float, spacing), 1.0])
    aff[:3, 3] = [-(n - 1) * s / 2.0 for n, s in zip(size, spacing)]
    return aff


@functools.lru_cache(maxsize=2)
def _prefiltered_t1(sigma_mm: float) -> np.ndarray:
    from scipy import ndimage

    atlas = load_atlas()
    vox = np.abs(np.diag(atlas.t1_affine)[:3])
    return np.asarray(ndimage.gaussian_filter(atlas.t1, sigma_mm / vox, mode="constant"), np.float32)


def _sample(volume: np.ndarray, affine: np.ndarray, world: np.ndarray, order: int) -> np.ndarray:
    """(N, 3) world mm -> (N,) values of ``volume`` (0 outside), trilinear (1) or nearest (0)."""
    from scipy import ndimage

    inv = np.linalg.inv(affine)
    vox = world @ inv[:3, :3].T + inv[:3, 3]
    if order == 0:
        ijk = np.rint(vox).astype(np.int64)
        ok = np.all((ijk >= 0) & (ijk < np.array(volume.shape)), axis=1)
        out = np.zeros(len(world), dtype=volume.dtype)
        out[ok] = volume[ijk[ok, 0], ijk[ok, 1], ijk[ok, 2]]
        return out
    return np.asarray(ndimage.map_coordinates(volume, vox.T, order=1, mode="constant", cval=0.0))


@dataclass
class BrainSubject:
    image: np.ndarray
    """(X, Y, Z) int16 MRI-like intensities."""
    label: np.ndarray
    """(X, Y, Z) uint8 merged labels (``MRI_LABELS``)."""
    affine: np.ndarray
    landmarks: dict[str, list[float]]
    """Label name -> centroid mapped into the subject, world mm (only those inside the grid)."""
    warp: BrainWarp
    meta: dict[str, Any] = field(default_factory=dict)


def check_grid(
    size: int | Sequence[int], spacing: float | Sequence[float]
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    sz = (size,) * 3 if isinstance(size, (int, np.integer)) else tuple(size)
    sp = (spacing,) * 3 if isinstance(spacing, (int, float, np.floating, np.integer)) else tuple(spacing)
    if len(sz) != 3 or not all(int(v) == v and v >= 16 for v in sz):
        raise ConfigError(f"size must be one or three whole numbers >= 16 (voxels), got {size!r}")
    if len(sp) != 3 or not all(math.isfinite(float(v)) and 0.5 <= float(v) <= 10.0 for v in sp):
        raise ConfigError(f"spacing must be one or three numbers in [0.5, 10] mm, got {spacing!r}")
    return (int(sz[0]), int(sz[1]), int(sz[2])), (float(sp[0]), float(sp[1]), float(sp[2]))


def make_brain_subject(
    seed: int,
    size: int | Sequence[int] = DEFAULT_SIZE,
    spacing: float | Sequence[float] = DEFAULT_SPACING,
    warp_params: WarpParams = WarpParams(),
    intensity: IntensityParams = IntensityParams(),
    atlas: BrainAtlas | None = None,
) -> BrainSubject:
    """One subject from ``seed`` (deterministic: same seed, size and spacing -> identical arrays)."""
    sz, sp = check_grid(size, spacing)
    atlas = atlas if atlas is not None else load_atlas()
    rng = np.random.default_rng(seed)
    warp = draw_warp(rng, warp_params)
    affine = subject_affine(sz, sp)
    idx = np.indices(sz, dtype=np.float64).reshape(3, -1).T
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    tmpl = warp.to_template(world)

    t1 = _prefiltered_t1(round(0.42 * float(np.mean(sp)), 3))
    x = np.clip(_sample(t1, atlas.t1_affine, tmpl, order=1), 0.0, 1.0)
    label = _sample(atlas.labels, atlas.labels_affine, tmpl, order=0).reshape(sz)

    ip = intensity
    gamma = float(np.exp(rng.uniform(np.log(ip.gamma[0]), np.log(ip.gamma[1]))))
    ramp = rng.uniform(-ip.bias_ramp, ip.bias_ramp, 3)
    b_centres = rng.uniform(world.min(0), world.max(0), size=(ip.bias_bumps, 3))
    b_amp = rng.uniform(-ip.bias_amplitude, ip.bias_amplitude, size=(ip.bias_bumps, 1))
    bias = world @ ramp / 100.0 + _bumps(world, b_centres, b_amp, ip.bias_sigma_mm)[:, 0]
    scale = float(rng.uniform(*ip.scale))
    noise_sd = float(rng.uniform(*ip.noise)) * scale
    signal = scale * np.power(x, gamma) * np.exp(bias)
    re = signal + rng.normal(0.0, noise_sd, signal.shape)
    im = rng.normal(0.0, noise_sd, signal.shape)
    image = np.clip(np.rint(np.sqrt(re**2 + im**2)), 0, np.iinfo(np.int16).max).astype(np.int16).reshape(sz)

    names = [n for n in MRI_LABELS.values() if n in atlas.centroids]
    cents = np.array([atlas.centroids[n] for n in names])
    pts = warp.to_subject(cents)
    vox = (pts - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    inside = np.all((vox >= 0) & (vox <= np.array(sz) - 1), axis=1)
    landmarks = {n: [round(float(v), 4) for v in p] for n, p, ok in zip(names, pts, inside) if ok}
    meta = {
        "gamma": round(gamma, 4),
        "scale": round(scale, 2),
        "noise_sd": round(noise_sd, 3),
        "rotation_scale": [[round(float(v), 6) for v in row] for row in warp.linear],
        "translation_mm": [round(float(v), 4) for v in warp.translation],
    }
    return BrainSubject(image=image, label=label, affine=affine, landmarks=landmarks, warp=warp, meta=meta)


def write_brain_dataset(
    out: str | Path,
    n: int,
    seed: int = 0,
    size: int | Sequence[int] = DEFAULT_SIZE,
    spacing: float | Sequence[float] = DEFAULT_SPACING,
    overwrite: bool = False,
    on_subject: Callable[[int, float, float], None] | None = None,
) -> dict[str, object]:
    """Write ``n`` subjects as the same MSD-style folder as ``anatssl synth`` (imagesTr, labelsTr,
    landmarks, dataset.json); subject ``i`` uses ``subject_seed(seed, i)``, so it does not depend on
    ``n``. Returns the dataset.json content."""
    from anatssl import __version__
    from anatssl.data.synthetic.writer import (
        check_count_and_seed,
        check_output_folder,
        save_nifti,
        subject_seed,
    )

    sz, sp = check_grid(size, spacing)
    check_count_and_seed(n, seed)
    out = check_output_folder(out, overwrite)
    problem = missing_sources()  # the install message before anything is written (even when cached)
    if problem is not None:
        raise DataError(problem)
    atlas = load_atlas()
    for sub in SUBFOLDERS:  # remove only what a previous run wrote, never other files
        for f in (out / sub).glob(f"{PREFIX}*"):
            f.unlink()
        (out / sub).mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(n - 1)))
    training: list[dict[str, object]] = []
    for i in range(n):
        case_id = f"{PREFIX}{i:0{width}d}"
        s_seed = subject_seed(seed, i)
        t0 = time.perf_counter()
        subject = make_brain_subject(s_seed, size=sz, spacing=sp, atlas=atlas)
        t1 = time.perf_counter()
        save_nifti(subject.image, subject.affine, out / "imagesTr" / f"{case_id}.nii.gz", np.int16)
        save_nifti(subject.label, subject.affine, out / "labelsTr" / f"{case_id}.nii.gz", np.uint8)
        (out / "landmarks" / f"{case_id}.json").write_text(json.dumps(subject.landmarks, indent=1))
        t2 = time.perf_counter()
        training.append(
            {
                "image": f"./imagesTr/{case_id}.nii.gz",
                "label": f"./labelsTr/{case_id}.nii.gz",
                "landmarks": f"./landmarks/{case_id}.json",
                "seed": s_seed,
                **subject.meta,
            }
        )
        if on_subject is not None:
            on_subject(i, t1 - t0, t2 - t1)
    dataset: dict[str, object] = {
        "name": "anatssl-mri-brain",
        "description": "The MNI152 T1 template under known random affine + elastic warps and MRI-like "
        "intensity changes, with Harvard-Oxford cortical (split left/right) + JHU white-matter labels and "
        "their centroids as landmarks (anatssl synth --kind mri-brain)",
        "reference": "anatssl src/anatssl/data/synthetic/mri_brain.py, docs/results/real-mri.md",
        "licence": "see the sources: nilearn (MNI152 2009a template), FSL Harvard-Oxford and JHU atlases",
        "release": __version__,
        "tensorImageSize": "3D",
        "modality": {"0": "T1w"},
        "labels": {str(k): v for k, v in MRI_LABELS.items()},
        "landmarks": {name: f"centroid of {name}" for name in MRI_LABELS.values() if name != "background"},
        "numTraining": n,
        "numTest": 0,
        "training": training,
        "test": [],
        "synthetic": {
            "kind": "mri-brain",
            "seed": int(seed),
            "size": list(sz),
            "spacing": [round(v, 6) for v in sp],
            "generator": f"anatssl {__version__}",
            "warp": asdict(WarpParams()),
            "intensity": asdict(IntensityParams()),
            "sources": atlas.sources,
        },
    }
    tmp = out / "dataset.json.part"
    tmp.write_text(json.dumps(dataset, indent=2))
    tmp.replace(out / "dataset.json")
    return dataset
