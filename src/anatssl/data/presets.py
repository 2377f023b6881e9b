"""Intensity and geometry presets applied once per scan, before caching (``DataConfig``).

``preprocess(volume, data_cfg)`` runs, in this order:

1. **resampling** to ``data_cfg.spacing`` mm (MONAI ``Spacing``: bilinear for images, nearest for labels),
   only when a spacing is set; the affine follows, so world coordinates are unchanged;
2. **intensity** to [0, 1]:
   - ``ct``: clip to ``hu_window`` and scale linearly, so with the default (-1000, 1000) HU window
     -1000 -> 0, 0 -> 0.5, 1000 -> 1. (-1000, 1000) keeps air, lung, soft tissue and most bone apart
     in one linear map; SwinUNETR's pretraining (Tang et al. 2022) clips to (-1000, 1000) too;
   - ``mri``: per-volume, per-channel percentiles ``mri_percentiles`` (default 0.5, 99.5) map to 0 and 1,
     then clip; MRI intensities have no absolute scale, and percentiles ignore the few hot voxels (flow
     artefacts, fat) that a min-max scaling would let squash everything else;
3. **foreground crop** (``foreground_crop``) to the bounding box of the body, plus ``CROP_MARGIN`` voxels,
   shifting the affine's origin so that every voxel keeps its world position.

The body is "voxels above the window floor" (CT) or "above the low percentile" (MRI) made robust:
``> FOREGROUND_LEVEL`` after scaling, i.e. -900 HU for the default window, since air is -1000 HU plus
noise of tens of HU and a strict ``> floor`` keeps noisy air everywhere; and a slab along an axis only
counts when at least ``SLAB_MIN_FRACTION`` of its voxels are foreground, so that isolated hot noise
voxels in the air do not stretch the box to the whole field of view.

``preset_key(data_cfg)`` hashes every setting above (and ``PRESET_VERSION``) into the cache key.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from typing import Any

import numpy as np

from anatssl.config.schema import DataConfig
from anatssl.data.volume import Volume
from anatssl.errors import ConfigError, DataError

PRESET_VERSION = 1
"""Bump when the code of this file changes its output: every cached array is then rebuilt."""
FOREGROUND_LEVEL = 0.05
"""Scaled intensity above which a voxel is body (CT: floor + 5% of the window = -900 HU by default)."""
SLAB_MIN_FRACTION = 1e-3
"""A slab (one index along one axis) belongs to the box if >= 0.1% of its voxels (at least 1) are body."""
CROP_MARGIN = 4
"""Voxels kept around the body box: the skin line and a little air, so crops see the body's edge."""
MODALITIES = ("ct", "mri")
CT_ONLY_KEYS = ("hu_window",)
"""``data.*`` settings in HU, read for CT only."""
MRI_ONLY_KEYS = ("mri_percentiles", "mri_gamma", "mri_bias_field", "mri_contrast")
"""``data.*`` settings read for MRI only (scaling, and the views' MRI intensity augmentation)."""


def check_data_config(cfg: DataConfig) -> None:
    """Reject settings that cannot work, naming the ``data.*`` key."""
    if cfg.modality not in MODALITIES:
        raise ConfigError(f"data.modality must be one of {MODALITIES}, got {cfg.modality!r}")
    lo, hi = cfg.hu_window
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(f"data.hu_window must be (low, high) with low < high, got {tuple(cfg.hu_window)}")
    plo, phi = cfg.mri_percentiles
    if not 0.0 <= plo < phi <= 100.0:
        raise ConfigError(
            f"data.mri_percentiles must satisfy 0 <= low < high <= 100, got {tuple(cfg.mri_percentiles)}"
        )
    if cfg.spacing is not None and (
        len(cfg.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in cfg.spacing)
    ):
        raise ConfigError(f"data.spacing must be 3 positive numbers (mm) or null, got {cfg.spacing}")
    for key in ("mri_gamma", "mri_contrast"):
        lo, hi = getattr(cfg, key)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise ConfigError(
                f"data.{key} must be (low, high) with 0 < low <= high, got {tuple(getattr(cfg, key))}"
            )
    if not (math.isfinite(cfg.mri_bias_field) and cfg.mri_bias_field >= 0):
        raise ConfigError(f"data.mri_bias_field must be >= 0 (0 = off), got {cfg.mri_bias_field}")


def modality_warnings(cfg: DataConfig) -> list[str]:
    """Settings of the other modality that this config changes from their defaults and that are not read.

    ``data.hu_window`` is in HU, which an MRI does not have: with ``modality=mri`` it is ignored (a CT
    preset's window, such as alice_tiny's abdominal one, is harmless but not applied). The ``mri_*``
    settings are ignored for CT. The pretraining and fine-tuning config checks log these lines once.
    """
    default = DataConfig()
    ignored = CT_ONLY_KEYS if cfg.modality == "mri" else MRI_ONLY_KEYS
    keys = [k for k in ignored if _values(getattr(cfg, k)) != _values(getattr(default, k))]
    other, unit = ("ct", "CT (HU) setting") if cfg.modality == "mri" else ("mri", "MRI setting")
    return [
        f"data.{k}={_show(getattr(cfg, k))} is a {unit} and is ignored with data.modality={cfg.modality} "
        f"(it applies to data.modality={other} only)"
        for k in keys
    ]


def _values(value: object) -> tuple[float, ...]:
    return tuple(float(v) for v in value) if isinstance(value, tuple | list) else (float(value),)  # type: ignore[arg-type]


def _show(value: object) -> str:
    return json.dumps(list(value)) if isinstance(value, tuple | list) else str(value)


def preset_key(cfg: DataConfig) -> str:
    """16 hex digits identifying everything that changes ``preprocess``'s output for this config."""
    return hashlib.sha1(json.dumps(preset_spec(cfg), sort_keys=True).encode()).hexdigest()[:16]


def preset_spec(cfg: DataConfig) -> dict[str, object]:
    """The settings :func:`preset_key` hashes, as a dict (so that a cache can say which one differs)."""
    check_data_config(cfg)
    spec: dict[str, object] = {
        "version": PRESET_VERSION,
        "modality": cfg.modality,
        "spacing": None if cfg.spacing is None else [float(s) for s in cfg.spacing],
        "foreground_crop": bool(cfg.foreground_crop),
    }
    if cfg.modality == "ct":
        spec["hu_window"] = [float(v) for v in cfg.hu_window]
    else:
        spec["mri_percentiles"] = [float(v) for v in cfg.mri_percentiles]
    if cfg.foreground_crop:
        spec["crop"] = [FOREGROUND_LEVEL, SLAB_MIN_FRACTION, CROP_MARGIN]
    return spec


def scale_intensity(image: np.ndarray, cfg: DataConfig, path: str = "<memory>") -> np.ndarray:
    """(C, X, Y, Z) raw (HU for CT) -> (C, X, Y, Z) float32 in [0, 1] (see the module docstring)."""
    image = np.asarray(image, dtype=np.float32)
    if cfg.modality == "ct":
        lo, hi = (float(v) for v in cfg.hu_window)
        return ((np.clip(image, lo, hi) - lo) / (hi - lo)).astype(np.float32)
    out = np.empty_like(image)
    for c in range(image.shape[0]):
        plo, phi = np.percentile(image[c], cfg.mri_percentiles)
        if not phi > plo:
            raise DataError(
                f"{path}: channel {c} has the same intensity at the {cfg.mri_percentiles[0]} and "
                f"{cfg.mri_percentiles[1]} percentiles ({plo:g}); it is (almost) constant, "
                "nothing to learn from"
            )
        out[c] = (np.clip(image[c], plo, phi) - plo) / (phi - plo)
    return out


def foreground_box(image: np.ndarray, margin: int = CROP_MARGIN) -> tuple[np.ndarray, np.ndarray] | None:
    """(C, X, Y, Z) scaled image -> (start, stop) voxel indices (3,) of the body box, or None if no body."""
    mask = (image > FOREGROUND_LEVEL).any(axis=0)
    shape = np.array(mask.shape)
    start, stop = np.zeros(3, np.int64), shape.copy()
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        counts = mask.sum(axis=others)
        need = max(1, math.ceil(SLAB_MIN_FRACTION * mask.size / shape[axis]))
        idx = np.flatnonzero(counts >= need)
        if idx.size == 0:
            return None
        start[axis] = max(0, idx[0] - margin)
        stop[axis] = min(shape[axis], idx[-1] + 1 + margin)
    return start, stop


def crop(volume: Volume, start: np.ndarray, stop: np.ndarray) -> Volume:
    """Cut voxels ``start:stop`` (per axis) and move the affine's origin to the new first voxel."""
    sl = (slice(None),) + tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
    affine = volume.affine.copy()
    affine[:3, 3] = volume.affine[:3, :3] @ np.asarray(start, np.float64) + volume.affine[:3, 3]
    label = None if volume.label is None else np.ascontiguousarray(volume.label[sl])
    return replace(volume, image=np.ascontiguousarray(volume.image[sl]), affine=affine, label=label)


def resample(volume: Volume, spacing: tuple[float, float, float]) -> Volume:
    """Resample image (bilinear) and label (nearest) to ``spacing`` mm with MONAI ``Spacing``."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    def run(array: np.ndarray, mode: str) -> Any:  # a MetaTensor (typed as Tensor by MONAI)
        t = MetaTensor(
            torch.as_tensor(np.asarray(array, dtype=np.float32)), affine=torch.as_tensor(volume.affine)
        )
        return Spacing(pixdim=tuple(float(s) for s in spacing), mode=mode, padding_mode="border")(t)

    image = run(volume.image, "bilinear")
    label = None
    if volume.label is not None:
        lab = run(volume.label, "nearest")
        if tuple(lab.shape[1:]) != tuple(image.shape[1:]):  # same input grid and spacing: cannot differ
            raise AssertionError(f"label resampled to {tuple(lab.shape)} but image to {tuple(image.shape)}")
        label = np.rint(lab.numpy()).astype(volume.label.dtype)
    return replace(
        volume,
        image=np.ascontiguousarray(image.numpy(), dtype=np.float32),
        affine=np.asarray(image.affine, dtype=np.float64),
        label=label,
    )


def preprocess(volume: Volume, cfg: DataConfig) -> Volume:
    """Raw RAS volume -> resampled, [0, 1]-scaled, body-cropped volume; world coordinates preserved.

    Args:
        volume: from :func:`anatssl.data.io.read_volume`, image (C, X, Y, Z) in scanner units (HU for CT),
            optional label (1, X, Y, Z) on the same grid.
        cfg: the ``data`` section of the run's config.

    Returns:
        a new Volume (the input is not modified) with ``meta`` += ``preset_key``, ``crop_start`` (voxel
        index, on the resampled grid, of the first kept voxel), ``preprocessed_shape``.

    Raises:
        DataError: no body voxel at all (wrong modality for this scan?), or an MRI that is constant.
    """
    check_data_config(cfg)
    out = resample(volume, cfg.spacing) if cfg.spacing is not None else volume
    out = replace(out, image=scale_intensity(out.image, cfg, volume.path))
    start = np.zeros(3, np.int64)
    if cfg.foreground_crop:
        box = foreground_box(out.image)
        if box is None:
            level = (
                f"{cfg.hu_window[0] + FOREGROUND_LEVEL * (cfg.hu_window[1] - cfg.hu_window[0]):g} HU"
                if cfg.modality == "ct"
                else f"{FOREGROUND_LEVEL:g} after percentile scaling"
            )
            raise DataError(
                f"{volume.path}: no body found (no voxel above {level}); is data.modality={cfg.modality!r} "
                "right for this scan? Set data.foreground_crop=false to keep the whole field of view"
            )
        start, stop = box
        out = crop(out, start, stop)
    meta = {
        **out.meta,
        "preset_key": preset_key(cfg),
        "crop_start": [int(s) for s in start],
        "preprocessed_shape": list(out.spatial_shape),
    }
    return replace(out, meta=meta)
