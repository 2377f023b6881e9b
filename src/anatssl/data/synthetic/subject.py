"""``make_subject``: one synthetic CT-like torso with labels and landmarks, deterministic per seed.

Pipeline (all vectorised numpy, no loop over voxels):

1. draw the subject's anatomy (``anatomy.py``), contrast phase and scan range;
2. map every voxel to the canonical body frame: a global scaling (body size, +-10 %), a small rotation
   (patient alignment, 2-3 degrees), and a smooth random elastic deformation (cubic B-spline
   free-form deformations: control points every 60 mm with 4-8 mm RMS for posture and organ
   position, plus every 25 mm with 1.5-3 mm RMS for organ shape), see ``field.py``;
3. paint labels and noise-free HU (``phantom.py``), optionally lesions;
4. image formation: Gaussian blur (PSF 0.6-1.2 mm sigma, at least half a voxel so that edges are
   anti-aliased), a smooth multiplicative bias about water (+-3 %) and an additive one (+-4 HU),
   Gaussian noise (8-25 HU, the range of clinical dose levels), rounding to integer HU, clip to
   [-1024, 3071];
5. map the canonical landmarks to world mm by inverting the deformation and keep those inside the
   grid whose voxel (or a 1-voxel neighbour) carries their structure's label.

Every random draw comes from ``numpy.random.SeedSequence(seed)`` spawned into independent streams
(anatomy, scan, fields, noise, lesions), so the same seed gives bit-identical arrays and asking for a
lesion changes nothing but the lesion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter
from threadpoolctl import threadpool_limits

from anatssl.data.synthetic.anatomy import sample_anatomy
from anatssl.data.synthetic.field import SmoothField
from anatssl.data.synthetic.hu import CONTRAST_PHASES, sample_hu
from anatssl.data.synthetic.labels import LABEL_IDS, LABELS, LANDMARK_STRUCTURES
from anatssl.data.synthetic.phantom import Canvas, paint_lesions, paint_phantom
from anatssl.data.synthetic.shapes import rotation
from anatssl.data.volume import Volume
from anatssl.errors import ConfigError

REGIONS: tuple[str, ...] = ("chest", "abdomen", "both", "random")
REGION_CENTRE_Z: dict[str, float] = {"chest": 275.0, "abdomen": -20.0, "both": 110.0}
"""Canonical z (mm) of the scan centre: chest = lung apices to upper abdomen, abdomen = domes of the
diaphragm to the pubis, both = heart to the aortic bifurcation (at the default 384 mm range)."""
DEFAULT_FOV_MM: float = 384.0
"""Field of view per axis when ``spacing`` is not given: 384 mm covers an adult torso in-plane
(clinical abdominal CT uses 350-420 mm) and the chest or the abdomen along z."""
DEFAULT_SIZE: int = 96
MIN_SIZE: int = 16


@dataclass
class SyntheticSubject:
    """One phantom. ``image_hu``: (X, Y, Z) float32 HU (integer-valued); ``label``: (X, Y, Z) uint8
    organ labels (see ``label_names``); ``affine``: (4, 4) voxel -> world mm, RAS, diagonal;
    ``landmarks``: name -> [x, y, z] world mm; ``meta``: seed, region, contrast, lesions, ..."""

    image_hu: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    landmarks: dict[str, list[float]]
    label_names: dict[int, str] = field(default_factory=lambda: dict(LABELS))
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.diag(self.affine)[:3])  # type: ignore[return-value]

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """(..., 3) world mm -> (..., 3) fractional voxel indices."""
        inv = np.linalg.inv(self.affine)
        return np.asarray(xyz, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]

    def to_volume(self) -> Volume:
        """As the shared :class:`~anatssl.data.volume.Volume` contract: image (1, X, Y, Z) float32 HU
        (not normalised), label (1, X, Y, Z) int64."""
        return Volume(
            image=self.image_hu[None].astype(np.float32),
            affine=self.affine.copy(),
            path=f"<synthetic seed={self.meta.get('seed')}>",
            label=self.label[None].astype(np.int64),
            landmarks={k: list(v) for k, v in self.landmarks.items()},
            meta={"modality": "CT", **self.meta},
        )


def _triple(value: int | float | Sequence[int | float], name: str, kind: type) -> tuple:
    vals = [value] * 3 if isinstance(value, (int, float, np.integer, np.floating)) else list(value)
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise ConfigError(f"{name} must be one value or three (X Y Z), got {list(vals)}")
    try:
        out = tuple(kind(v) for v in vals)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name} must be numbers, got {list(vals)}") from e
    if kind is int and any(float(v) != int(v) for v in vals):
        raise ConfigError(f"{name} must be whole numbers of voxels, got {list(vals)}")
    return out


def check_grid(
    size: int | Sequence[int], spacing: float | Sequence[float] | None
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Validate ``size`` (>= 16 voxels per axis) and ``spacing`` (> 0 mm; None: 384 mm / size)."""
    sz = _triple(size, "size", int)
    if any(s <= 0 for s in sz):
        raise ConfigError(f"size {list(sz)} must be positive numbers of voxels")
    if any(s < MIN_SIZE for s in sz):
        raise ConfigError(
            f"size {list(sz)} is too small: every axis needs at least {MIN_SIZE} voxels "
            f"(a torso at {MIN_SIZE} voxels is already {DEFAULT_FOV_MM / MIN_SIZE:.0f} mm per voxel)"
        )
    if spacing is None:
        sp = tuple(DEFAULT_FOV_MM / s for s in sz)
    else:
        sp = _triple(spacing, "spacing", float)
        if any(not np.isfinite(s) or s <= 0 for s in sp):
            raise ConfigError(f"spacing {list(sp)} must be positive millimetres")
    return sz, sp


def make_subject(
    seed: int,
    size: int | Sequence[int] = DEFAULT_SIZE,
    spacing: float | Sequence[float] | None = None,
    region: str = "both",
    lesion: bool = False,
) -> SyntheticSubject:
    """Build subject ``seed`` on a ``size`` grid (int or (X, Y, Z)) with ``spacing`` mm (default:
    384 mm field of view per axis), scan range ``region`` (chest, abdomen, both, or random: drawn from
    the seed) and, if ``lesion``, 1-3 lesions in the liver or kidneys (``meta['lesion']`` is 1 only if
    one could be placed inside the field of view)."""
    sz, sp = check_grid(size, spacing)
    if region not in REGIONS:
        raise ConfigError(f"region {region!r} is not one of {', '.join(REGIONS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    # The field products are small matrix multiplications: a second BLAS thread only adds contention
    # (6x slower on a busy 2-core machine), and data workers run in parallel processes anyway.
    with threadpool_limits(limits=1, user_api="blas"):
        return _make_subject(int(seed), sz, sp, region, lesion)


def _make_subject(
    seed: int, sz: tuple[int, int, int], sp: tuple[float, float, float], region: str, lesion: bool
) -> SyntheticSubject:
    streams = np.random.SeedSequence(int(seed)).spawn(5)
    r_anat, r_scan, r_field, r_noise, r_lesion = (np.random.default_rng(s) for s in streams)

    anat = sample_anatomy(r_anat)
    region_pick = REGIONS[int(r_scan.integers(3))]
    region_used = region_pick if region == "random" else region
    contrast = CONTRAST_PHASES[int(r_scan.integers(len(CONTRAST_PHASES)))]
    H = sample_hu(r_scan, contrast)
    body = r_scan.uniform(0.9, 1.1)
    scale = np.array(
        [body * r_scan.uniform(0.96, 1.04), body * r_scan.uniform(0.94, 1.06), r_scan.uniform(0.92, 1.08)]
    )
    R = rotation(*np.deg2rad(r_scan.normal(0.0, [2.0, 2.0, 3.0])))
    shift = np.array([*r_scan.normal(0.0, 8.0, 2), 0.0])
    z_centre = (REGION_CENTRE_Z[region_used] + r_scan.normal(0.0, 15.0)) * scale[2]

    # Grid and affine (RAS, diagonal): voxel (i, j, k) -> origin + (i, j, k) * spacing.
    spv = np.array(sp)
    centre = np.array([0.0, 0.0, z_centre])
    origin = centre - (np.array(sz) - 1) / 2.0 * spv
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spv)
    affine[:3, 3] = origin
    ax0, ax1, ax2 = ((origin[a] + np.arange(sz[a]) * spv[a]).astype(np.float64) for a in range(3))
    axes = (ax0, ax1, ax2)
    lo, hi = origin, origin + (np.array(sz) - 1) * spv

    # World -> canonical: q = lin (p - shift) + disp(p).
    lin = np.diag(1.0 / scale) @ R.T
    fields = []
    for wavelength, (lo_amp, hi_amp) in ((120.0, (4.0, 8.0)), (50.0, (1.5, 3.0))):
        f = SmoothField.random(r_field, lo, hi, wavelength_mm=wavelength, components=3)
        f.coeffs *= np.float32(r_field.uniform(lo_amp, hi_amp))
        fields.append(f)
    disp = fields[0].on_grid(axes) + fields[1].on_grid(axes)  # (3, X, Y, Z)
    dmax = float(np.sqrt((disp**2).sum(axis=0)).max()) + 1.0
    px, py, pz = (np.asarray(ax - shift[a], dtype=np.float32) for a, ax in enumerate(axes))
    px, py, pz = px[:, None, None], py[None, :, None], pz[None, None, :]
    L32 = lin.astype(np.float32)
    cx, cy, cz = (L32[a, 0] * px + L32[a, 1] * py + L32[a, 2] * pz + disp[a] for a in range(3))

    tex = {
        "coarse": SmoothField.random(r_field, lo, hi, wavelength_mm=80.0).on_grid(axes)[0],
        "bowel": SmoothField.random(r_field, lo, hi, wavelength_mm=45.0).on_grid(axes)[0],
        "fine": _fine_noise(r_field, sz, spv, sigma_mm=3.5),
    }
    # A second fine texture: the first one shifted by ~ 10 correlation lengths (nearly independent).
    tex["fine2"] = np.roll(tex["fine"], tuple(max(1, int(round(35.0 / s))) for s in spv), axis=(0, 1, 2))
    canvas = Canvas(cx, cy, cz, affine, lin, shift, fields, dmax, tex)
    paint_phantom(canvas, anat, H)
    lesions: list[dict[str, object]] = []
    if lesion:
        lesions = paint_lesions(canvas, anat, H, r_lesion, count=int(r_lesion.integers(1, 4)))

    image = _image_formation(canvas.hu, r_noise, lo, hi, axes, spv)
    landmarks = _landmarks(canvas, anat.landmarks(), sz)
    meta: dict[str, object] = {
        "seed": int(seed),
        "region": region_used,
        "contrast": contrast,
        "body_scale": [round(float(v), 4) for v in scale],
        "fat_mm": round(anat.fat_mm, 2),
        "lesion": int(bool(lesions)),
        "lesions": lesions,
        "landmark_labels": {k: LABEL_IDS[LANDMARK_STRUCTURES[k]] for k in landmarks},
    }
    return SyntheticSubject(image, canvas.label, affine, landmarks, dict(LABELS), meta)


def _fine_noise(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: np.ndarray, sigma_mm: float
) -> np.ndarray:
    """(X, Y, Z) Gaussian-filtered white noise (correlation length ``sigma_mm``), unit variance."""
    n = rng.standard_normal(shape, dtype=np.float32)
    sig = np.maximum(sigma_mm / spacing, 0.5)
    out = gaussian_filter(n, sig, truncate=2.5)
    return out / np.float32(max(float(out.std()), 1e-6))


def _image_formation(
    hu: np.ndarray,
    rng: np.random.Generator,
    lo: np.ndarray,
    hi: np.ndarray,
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    spacing: np.ndarray,
) -> np.ndarray:
    """Blur, bias and noise on the noise-free HU map -> (X, Y, Z) float32 integer-valued HU."""
    psf_mm = rng.uniform(0.6, 1.2)
    img = gaussian_filter(hu, np.maximum(psf_mm / spacing, 0.5), truncate=2.5)
    bias = SmoothField.random(rng, lo, hi, wavelength_mm=300.0, components=2).on_grid(axes)
    # Gain about water (HU 0 fixed: +-3 % per sigma, +-25 HU on cortical bone) and an offset (+-4 HU).
    img = img * (1.0 + 0.03 * np.clip(bias[0], -2.0, 2.0)) + 4.0 * np.clip(bias[1], -2.0, 2.0)
    sigma = rng.uniform(8.0, 25.0)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(np.rint(img), -1024, 3071).astype(np.float32)


def _landmarks(
    c: Canvas, canonical: dict[str, np.ndarray], shape: tuple[int, int, int]
) -> dict[str, list[float]]:
    """Map canonical landmarks to world mm; keep those in the grid whose structure is at their voxel or a
    1-voxel neighbour."""
    names = list(canonical)
    world = c.to_world(np.stack([canonical[n] for n in names]))
    inv = np.linalg.inv(c.affine)
    vox = world @ inv[:3, :3].T + inv[:3, 3]
    out: dict[str, list[float]] = {}
    for name, w, v in zip(names, world, vox):
        ijk = np.rint(v).astype(int)
        if np.any(ijk < 0) or np.any(ijk >= np.array(shape)):
            continue
        lo = np.maximum(ijk - 1, 0)
        hi = np.minimum(ijk + 2, shape)
        nb = c.label[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        if np.any(nb == LABEL_IDS[LANDMARK_STRUCTURES[name]]):
            out[name] = [round(float(t), 3) for t in w]
    return out
