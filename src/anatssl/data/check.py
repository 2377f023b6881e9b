"""``check_dataset(path, data_cfg) -> DatasetCheck``: a dataset's fingerprint and integrity check.

What ``anatssl data check`` prints (nnU-Net's dataset fingerprint and integrity check, for anatssl):
every case read as a run would read it, and what would go wrong. Per case, in this order:

1. **headers** (cheap, :mod:`anatssl.data.header`): voxel count and affine of every channel file and
   the label; the channel files on one grid; the label on the image's grid (shape and affine on the
   RAS grid both are reoriented to, within :data:`~anatssl.data.header.GRID_TOLERANCE_MM`); the
   channel count of a 4D file against the dataset's channel names;
2. **decoding**, once per file (:func:`~anatssl.data.io.read_volume`, the run's reader, with its
   errors): spatial shape, spacing, storage orientation; per-channel intensity statistics (min,
   0.5 / 50 / 99.5 percentiles, max, mean, std; inside the label's foreground too, as nnU-Net's
   fingerprint); the label values present against the label table (TotalSegmentator / AbdomenAtlas
   masks merged by :func:`anatssl.data.layouts.merge_masks`); landmarks readable;
3. **the preprocessing a run would apply** (:mod:`anatssl.data.presets`, the resolved ``data.*``):
   intensity scaling and the body box found on the native grid; the shape after resampling to
   ``data.spacing`` and cropping, estimated from the native grid (exact without resampling, within a
   voxel of what :func:`~anatssl.data.presets.preprocess` makes with it, tested; no resampling paid
   for), compared with
   the method's crop (a smaller scan is zero-padded: a warning, not an error);
4. **a modality guess** from the intensity distribution (:func:`guess_modality`).

An *error* is what would fail a run or make it drop the case: an unreadable file, channel files or
label on another grid, label values outside the table, a channel-count mismatch (with the dataset's
channel names or ``model.in_channels``), no body found by the preset. Everything else is a *warning*.

The cases, label table and channel names come from :func:`anatssl.data.layouts.read_dataset` (every
layout anatssl reads: nnU-Net v2 raw, MSD, BTCV, TotalSegmentator, AbdomenAtlas, a folder of scans,
DICOM series, a CSV): :func:`read_cases`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from anatssl.config.schema import DataConfig
from anatssl.data import layouts
from anatssl.data.header import Header, check_header, check_label_grid
from anatssl.data.io import check_same_grid, read_landmarks, read_volume
from anatssl.data.presets import (
    CROP_MARGIN,
    FOREGROUND_LEVEL,
    check_data_config,
    foreground_box,
    scale_intensity,
)
from anatssl.errors import DataError

AIR_HU = -900.0
"""At or below this a CT voxel is air (air is -1000 HU plus noise; scanners pad outside the field of
view with -1024 or -3024): the share of such voxels is the CT signature :func:`guess_modality` reads."""
CT_AIR_SHARE = 0.02
"""A scan with at least 2 % of its voxels at or below :data:`AIR_HU` (and a minimum below it) is CT: the
air around the body and in the lungs; a positive-valued MRI has none."""
CT_AIR_SHARE_HIGH = 0.10
"""From 10 % of air voxels on, the CT guess is *high* confidence (a body-sized field of view in air)."""
MRI_NEGATIVE_SHARE = 0.01
"""An MRI magnitude image is (nearly) non-negative: at most 1 % negative voxels (interpolation ringing)."""
MRI_DARK_SHARE = 0.10
"""An MRI with at least 10 % of its voxels below 5 % of its 99.5th percentile (the dark background
around the head or body) is a *high* confidence guess."""
SAMPLE_PER_SCAN = 5_000
"""Voxels sampled per scan and channel (fixed seed) for the intensity percentiles pooled over scans:
20 kB a scan kept until the end (25 MB for TotalSegmentator's 1228 cases); with 100 scans the pooled
0.5 / 99.5 percentiles rest on 2 500 voxels each side."""
ANISOTROPY_WARNING = 3.0
"""Largest / smallest spacing above which nnU-Net treats a dataset as anisotropic; said as a warning."""
PERCENTILES = (0.5, 50.0, 99.5)


# -- the dataset as a list of cases -----------------------------------------------------------------
@dataclass
class CaseFiles:
    """One case on disk: its channel files (one 4D file or one file per channel), label, landmarks."""

    name: str
    images: list[Path]
    label: Path | None = None
    landmarks: Path | None = None
    masks: Any = None
    """A :class:`anatssl.data.layouts.Case` whose label is one binary mask per structure
    (TotalSegmentator, AbdomenAtlas), merged at check time by ``layouts.merge_masks``; else None."""
    problems: list[str] = field(default_factory=list)
    """What the layout reader found wrong from the listing (a missing channel or label file)."""


@dataclass
class DatasetFiles:
    """What a layout reader found: the cases, the label table (value -> name; empty if none), channels."""

    root: Path
    format: str
    cases: list[CaseFiles]
    label_table: dict[int, str] = field(default_factory=dict)
    channel_names: list[str] = field(default_factory=list)


def read_cases(path: str | Path, fmt: str | None = None) -> DatasetFiles:
    """The cases of a dataset in any layout :func:`anatssl.data.layouts.read_dataset` reads (``fmt``
    None: detected), with multi-file channels, merged structure masks, and the per-case problems the
    listing shows (a missing channel, label or mask file).

    Raises:
        DataError: no such path, an unknown layout (the message lists the known ones), a malformed
            manifest, no case at all.
    """
    ds = layouts.read_dataset(Path(path).expanduser(), fmt)
    cases = []
    for c in ds.cases:
        label = c.label if isinstance(c.label, Path) else None
        cases.append(
            CaseFiles(
                name=str(c.name),
                images=[Path(p) for p in c.images],
                label=label,
                landmarks=c.landmarks,
                masks=c if isinstance(c.label, layouts.MaskSet) else None,
                problems=[str(p) for p in c.problems],
            )
        )
    table = {int(k): str(v) for k, v in (ds.labels or {}).items()}
    names = [str(n) for n in (ds.channel_names or ())]
    return DatasetFiles(Path(ds.root), str(ds.format), cases, table, names)


# -- one case ----------------------------------------------------------------------------------------
@dataclass
class CheckSettings:
    """What every case is checked against (picklable: it travels to worker processes)."""

    data: DataConfig
    label_table: dict[int, str]
    channel_names: list[str]
    in_channels: int
    min_shape: tuple[int, ...] | None = None


@dataclass
class CaseCheck:
    """The check of one case. ``errors`` would fail a run (or drop the case); ``warnings`` would not."""

    name: str
    images: list[str]
    label: str | None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    readable: bool = False
    shape: list[int] | None = None
    """Spatial shape (X, Y, Z) after reorientation to RAS."""
    spacing: list[float] | None = None
    axcodes: str | None = None
    """Storage orientation of the (first) image file, e.g. ``LPS``."""
    channels: int | None = None
    intensity: list[dict[str, float]] = field(default_factory=list)
    """Per channel: min, p0.5, p50, p99.5, max, mean, std, air_share, negative_share (+ fg_* in the label)."""
    modality: dict[str, Any] | None = None
    label_values: list[int] | None = None
    landmarks: int | None = None
    preprocessed_shape: list[int] | None = None
    """Estimated (X, Y, Z) after resampling and the body crop: what the method's crop is cut from."""
    sample: list[np.ndarray] = field(default_factory=list, repr=False)
    """Per channel, up to :data:`SAMPLE_PER_SCAN` voxels for the pooled percentiles (not written out)."""

    @property
    def status(self) -> str:
        return "error" if self.errors else "warning" if self.warnings else "ok"

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sample"}
        d["status"] = self.status
        return d


def guess_modality(stats: dict[str, float]) -> dict[str, Any]:
    """One channel's intensity statistics -> ``{"modality": ct|mri|unknown, "confidence": high|medium|
    low, "evidence": "..."}``.

    CT is in Hounsfield units: air (-1000) around the body and in the lungs, fat at -100, bone up to
    +2000; so a share of at least :data:`CT_AIR_SHARE` of voxels at or below :data:`AIR_HU` says CT.
    MRI magnitude images are non-negative with an arbitrary scale and a dark (Rician noise) background.
    An image already scaled to [0, 1] or z-scored says neither (``unknown``)."""
    lo, hi = stats["min"], stats["max"]
    air, neg = stats["air_share"], stats["negative_share"]
    p995 = stats["p99.5"]
    if lo <= AIR_HU and air >= CT_AIR_SHARE:
        conf = "high" if air >= CT_AIR_SHARE_HIGH else "medium"
        return {
            "modality": "ct",
            "confidence": conf,
            "evidence": f"{100 * air:.0f}% of voxels at or below {AIR_HU:g} HU (air), min {lo:g}",
        }
    if neg >= 0.1 and lo < -100:
        return {
            "modality": "ct",
            "confidence": "low",
            "evidence": f"{100 * neg:.0f}% negative voxels down to {lo:g} (fat in HU?) but little air",
        }
    if neg <= MRI_NEGATIVE_SHARE and hi > 1.5 and p995 > 1.5:
        dark = stats.get("dark_share", 0.0)
        conf = "high" if dark >= MRI_DARK_SHARE and hi > 50 else "medium"
        return {
            "modality": "mri",
            "confidence": conf,
            "evidence": f"non-negative ({100 * neg:.1f}% below 0), range {lo:g}..{hi:g} in arbitrary units, "
            f"{100 * dark:.0f}% dark background",
        }
    return {
        "modality": "unknown",
        "confidence": "low",
        "evidence": f"range {lo:g}..{hi:g}, {100 * neg:.0f}% negative: already normalised?",
    }


def _channel_stats(x: np.ndarray, fg: np.ndarray | None, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    flat = x.reshape(-1)
    q = np.percentile(flat, PERCENTILES)
    p995 = float(q[2])
    stats = {
        "min": float(flat.min()),
        "p0.5": float(q[0]),
        "p50": float(q[1]),
        "p99.5": p995,
        "max": float(flat.max()),
        "mean": float(flat.mean()),
        "std": float(flat.std()),
        "air_share": float(np.mean(flat <= AIR_HU)),
        "negative_share": float(np.mean(flat < 0)),
        "dark_share": float(np.mean(flat < 0.05 * p995)) if p995 > 0 else 0.0,
    }
    if fg is not None and fg.any():
        f = x[fg]
        fq = np.percentile(f, PERCENTILES)
        stats.update({"fg_p0.5": float(fq[0]), "fg_p50": float(fq[1]), "fg_p99.5": float(fq[2])})
        stats["fg_mean"] = float(f.mean())
    n = min(SAMPLE_PER_SCAN, flat.size)
    sample = flat[rng.choice(flat.size, n, replace=False)] if flat.size > n else flat.copy()
    return stats, sample.astype(np.float32)


def _file_channels(h: Header | None) -> int | None:
    """Channels a NIfTI header says its file holds: the 4th dimension (None for other formats)."""
    if h is None:
        return None
    return int(h.shape[3]) if len(h.shape) >= 4 else 1


def _grid_text(shape: tuple[int, ...], affine: np.ndarray) -> str:
    sp = np.round(np.linalg.norm(affine[:3, :3], axis=0), 3).tolist()
    return f"shape {tuple(shape)}, spacing {sp} mm"


def _merged_masks(case: CaseFiles, max_voxels: int) -> np.ndarray:
    """The structure masks of a TotalSegmentator / AbdomenAtlas case merged (``layouts.merge_masks``,
    which checks each mask's grid and values) and reoriented to RAS like the image: (X, Y, Z)."""
    import nibabel.orientations as nio

    merged, affine = layouts.merge_masks(case.masks, max_voxels)
    to_ras = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt("RAS"))
    return np.ascontiguousarray(nio.apply_orientation(merged, to_ras))


def estimate_preprocessed_shape(
    shape: Sequence[int],
    spacing: Sequence[float],
    body: tuple[np.ndarray, np.ndarray] | None,
    target: Sequence[float] | None,
) -> list[int]:
    """(X, Y, Z) after resampling to ``target`` mm and the body crop, from the native grid: the body
    box (without margin) scaled by native / target spacing, plus :data:`CROP_MARGIN` voxels each side
    on the new grid, at most the resampled scan. ``body`` None: no crop. Exact without resampling,
    within a voxel of :func:`~anatssl.data.presets.preprocess` with it (the box is found before, not
    after, interpolation)."""
    ratio = np.ones(3) if target is None else np.asarray(spacing, np.float64) / np.asarray(target, np.float64)
    full = np.maximum(1, np.round(np.asarray(shape, np.float64) * ratio))
    if body is None:
        return [int(v) for v in full]
    start, stop = body
    extent = np.round((stop - start).astype(np.float64) * ratio)
    before = np.minimum(CROP_MARGIN, np.round(start * ratio))  # the margin, where the scan has room
    after = np.minimum(CROP_MARGIN, np.round((np.asarray(shape) - stop) * ratio))
    return [int(v) for v in np.minimum(full, np.maximum(1, extent + before + after))]


def check_case(case: CaseFiles, settings: CheckSettings, seed: int = 0) -> CaseCheck:
    """Headers, then one decode of each file, then the preset's intensity scaling and body box."""
    cfg = settings.data
    out = CaseCheck(case.name, [str(p) for p in case.images], str(case.label) if case.label else None)
    expected = len(settings.channel_names) or None
    if case.problems:  # a missing channel or label file: the run skips the case
        out.errors.extend(case.problems)
        return out
    # 1. headers: voxel counts, affines, channel counts, grids
    headers: list[Header | None] = []
    for p in case.images:
        try:
            headers.append(check_header(p, "image", cfg.max_voxels))
        except DataError as e:
            out.errors.append(str(e))
            return out
    per_file = [_file_channels(h) for h in headers]
    if expected is not None and len(case.images) > 1 and len(case.images) != expected:
        out.errors.append(
            f"{case.name}: {len(case.images)} channel files but the dataset names {expected} channels "
            f"{settings.channel_names}"
        )
    if expected is not None and len(case.images) == 1 and per_file[0] is not None and per_file[0] != expected:
        out.errors.append(
            f"{case.images[0]} holds {per_file[0]} channel(s) but the dataset names {expected} "
            f"({settings.channel_names}); fix the file or the dataset's channel names"
        )
    first = headers[0]
    for p, h in zip(case.images[1:], headers[1:]):
        if first is None or h is None or len(first.shape) < 3 or len(h.shape) < 3:
            continue
        (s0, a0), (s1, a1) = first.ras_grid(), h.ras_grid()
        if s0 != s1 or float(np.abs(a0 - a1).max()) > 1e-2:
            out.errors.append(
                f"channel file {p} is on another grid ({_grid_text(s1, a1)}) than {case.images[0]} "
                f"({_grid_text(s0, a0)}); resample the channels of {case.name} onto one grid"
            )
    if out.errors:
        return out  # a header, a channel count or a channel grid that would fail reading the case
    label_ok = case.label is not None
    if case.label is not None:
        try:
            check_label_grid(case.images[0], case.label, cfg.max_voxels)
        except DataError as e:
            out.errors.append(str(e))
            label_ok = False
    # 2. decode each file once
    arrays, vol0 = [], None
    for i, p in enumerate(case.images):
        want = per_file[i] or (expected if expected and len(case.images) == 1 else 1)
        try:
            vol = read_volume(p, "image", channels=want, max_voxels=cfg.max_voxels)
        except DataError as e:
            out.errors.append(str(e))
            return out
        if vol0 is None:
            vol0 = vol
        else:
            try:
                check_same_grid(vol0, vol)  # other formats than NIfTI: no header compared above
            except DataError as e:
                out.errors.append(f"channel files of {case.name} on different grids: {e}")
                return out
        arrays.append(vol.image)
    assert vol0 is not None
    image = np.concatenate(arrays, axis=0) if len(arrays) > 1 else arrays[0]
    out.readable = True
    out.shape = [int(s) for s in image.shape[1:]]
    out.spacing = [round(float(s), 5) for s in vol0.spacing]
    out.axcodes = str(vol0.meta.get("source_axcodes", ""))
    out.channels = int(image.shape[0])
    if expected is None and out.channels != settings.in_channels:
        out.errors.append(
            f"{case.name} has {out.channels} channel(s) but the run reads model.in_channels = "
            f"{settings.in_channels}; set model.in_channels={out.channels}"
        )
    fg = None
    labels = None
    if case.label is not None and label_ok:
        try:
            lab = read_volume(case.label, "label", max_voxels=cfg.max_voxels)
            check_same_grid(vol0, lab)
            labels = lab.image[0]
        except DataError as e:
            out.errors.append(str(e))
    elif case.masks is not None:
        try:
            labels = _merged_masks(case, cfg.max_voxels)
        except DataError as e:
            out.errors.append(str(e))
    if labels is not None:
        if labels.shape != image.shape[1:]:
            out.errors.append(
                f"{case.name}: label map {labels.shape} is not on the image grid {image.shape[1:]}"
            )
        else:
            values = [int(v) for v in np.unique(labels)]
            out.label_values = values
            fg = labels > 0
            where = case.label if case.label is not None else f"{case.name}'s merged masks"
            if settings.label_table:
                bad = [v for v in values if v not in settings.label_table]
                if bad:
                    out.errors.append(
                        f"label {where} holds values {bad} that the label table does not name (it names "
                        f"{sorted(settings.label_table)}); fix the label file or the table"
                    )
            if values == [0]:
                out.warnings.append(f"label {where} is all background (0)")
    if case.landmarks is not None:
        try:
            out.landmarks = len(read_landmarks(case.landmarks))
        except DataError as e:
            out.errors.append(str(e))
    rng = np.random.default_rng(seed)
    for c in range(image.shape[0]):
        stats, sample = _channel_stats(image[c], fg, rng)
        out.intensity.append(stats)
        out.sample.append(sample)
    out.modality = guess_modality(out.intensity[0])
    # 3. the preset's intensity scaling and body box, on the native grid
    try:
        scaled = scale_intensity(image, cfg, str(case.images[0]))
    except DataError as e:
        out.errors.append(str(e))
        return out
    box = foreground_box(scaled, margin=0) if cfg.foreground_crop else None
    if cfg.foreground_crop and box is None:
        level = (
            f"{cfg.hu_window[0] + FOREGROUND_LEVEL * (cfg.hu_window[1] - cfg.hu_window[0]):g} HU"
            if cfg.modality == "ct"
            else f"{FOREGROUND_LEVEL:g} after percentile scaling"
        )
        out.errors.append(
            f"{case.images[0]}: no body found (no voxel above {level}); the run would drop it. Is "
            f"data.modality={cfg.modality!r} right for this scan? (data.foreground_crop=false keeps the "
            "whole field of view)"
        )
        return out
    out.preprocessed_shape = estimate_preprocessed_shape(out.shape, out.spacing, box, cfg.spacing)
    if settings.min_shape and any(a < b for a, b in zip(out.preprocessed_shape, settings.min_shape)):
        out.warnings.append(
            f"{case.name}: {tuple(out.preprocessed_shape)} after preprocessing is smaller than the crop "
            f"{tuple(settings.min_shape)}; the run zero-pads it"
        )
    return out


# -- the dataset ----------------------------------------------------------------------------------
@dataclass
class DatasetCheck:
    """The whole check, as ``anatssl data check`` prints it and writes it as JSON (:meth:`to_json`)."""

    path: str
    format: str
    cases: list[CaseCheck]
    label_table: dict[int, str]
    channel_names: list[str]
    settings: dict[str, Any]
    """The preprocessing a run would apply: the resolved ``data.*`` and the method's crop."""
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    modality: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    """Distributions over the readable cases: shape, spacing, preprocessed shape, intensity per channel."""

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "ok": self.ok,
            "counts": {
                "cases": len(self.cases),
                "readable": sum(c.readable for c in self.cases),
                "with_errors": sum(bool(c.errors) for c in self.cases),
                "with_warnings": sum(bool(c.warnings) and not c.errors for c in self.cases),
            },
            "errors": self.errors,
            "warnings": self.warnings,
            "modality": self.modality,
            "settings": self.settings,
            "label_table": {str(k): v for k, v in self.label_table.items()},
            "channel_names": self.channel_names,
            "summary": self.summary,
            "cases": [c.to_json() for c in self.cases],
        }


def _spread(values: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    """Per axis min / median / max over cases."""
    a = np.asarray(values, dtype=np.float64)
    return {
        "min": [round(float(v), 4) for v in a.min(axis=0)],
        "median": [round(float(v), 4) for v in np.median(a, axis=0)],
        "max": [round(float(v), 4) for v in a.max(axis=0)],
    }


def _modality_vote(cases: list[CaseCheck]) -> dict[str, Any]:
    guesses = [c.modality for c in cases if c.modality]
    if not guesses:
        return {"modality": "unknown", "confidence": "low", "evidence": "no readable scan"}
    votes = Counter(g["modality"] for g in guesses)
    top, n = votes.most_common(1)[0]
    confs = Counter(g["confidence"] for g in guesses if g["modality"] == top)
    if n == len(guesses) and confs["high"] * 2 > n:
        conf = "high"
    elif n * 4 >= 3 * len(guesses) and confs["low"] * 2 < n:
        conf = "medium"
    else:
        conf = "low"
    example = next(g["evidence"] for g in guesses if g["modality"] == top)
    return {
        "modality": top,
        "confidence": conf,
        "votes": dict(votes),
        "evidence": f"{n} of {len(guesses)} readable scans look {top.upper()} (e.g. {example})",
    }


def _pooled(cases: list[CaseCheck], channels: int) -> list[dict[str, float]]:
    out = []
    for c in range(channels):
        samples = [k.sample[c] for k in cases if len(k.sample) > c]
        if not samples:
            continue
        pooled = np.concatenate(samples)
        q = np.percentile(pooled, PERCENTILES)
        out.append(
            {
                "min": min(k.intensity[c]["min"] for k in cases if len(k.intensity) > c),
                "p0.5": float(q[0]),
                "p50": float(q[1]),
                "p99.5": float(q[2]),
                "max": max(k.intensity[c]["max"] for k in cases if len(k.intensity) > c),
            }
        )
    return out


def preprocessing_settings(cfg: DataConfig, min_shape: Sequence[int] | None) -> dict[str, Any]:
    """The ``data.*`` settings a run applies, in the words of :mod:`anatssl.data.presets`."""
    check_data_config(cfg)
    d: dict[str, Any] = {"modality": cfg.modality}
    if cfg.modality == "ct":
        d["hu_window"] = [float(v) for v in cfg.hu_window]
    else:
        d["mri_percentiles"] = [float(v) for v in cfg.mri_percentiles]
    d["spacing"] = None if cfg.spacing is None else [float(s) for s in cfg.spacing]
    d["foreground_crop"] = bool(cfg.foreground_crop)
    d["max_voxels"] = int(cfg.max_voxels)
    d["crop"] = None if not min_shape else [int(s) for s in min_shape]
    return d


def _check_one(args: tuple[CaseFiles, CheckSettings, int]) -> CaseCheck:
    case, settings, seed = args
    try:
        return check_case(case, settings, seed)
    except MemoryError:
        out = CaseCheck(case.name, [str(p) for p in case.images], str(case.label) if case.label else None)
        out.errors.append(f"{case.images[0]}: out of memory while reading it (data.max_voxels too high?)")
        return out


def check_dataset(
    path: str | Path,
    data_cfg: DataConfig,
    *,
    fmt: str | None = None,
    in_channels: int = 1,
    min_shape: Sequence[int] | None = None,
    workers: int = 0,
    on_case: Callable[[], None] | None = None,
    files: DatasetFiles | None = None,
) -> DatasetCheck:
    """Check every case of ``path`` (any layout :func:`read_cases` reads) against the run's settings.

    Args:
        data_cfg: the resolved ``data`` section of the run (modality, window, spacing, crop).
        fmt: the dataset layout (None: detected).
        in_channels: ``model.in_channels`` of the run.
        min_shape: the method's crop (``SSLMethod.min_volume_shape``): smaller scans are zero-padded.
        workers: processes that read scans (0: this process).
        on_case: called after each case (a progress bar).
        files: the cases, when already read with :func:`read_cases`.

    Raises:
        DataError: only when there is no dataset to check (missing path, unreadable manifest).
    """
    files = files if files is not None else read_cases(path, fmt)
    check_data_config(data_cfg)
    settings = CheckSettings(
        data_cfg,
        files.label_table,
        files.channel_names,
        in_channels,
        tuple(int(s) for s in min_shape) if min_shape else None,
    )
    jobs = [(c, settings, i) for i, c in enumerate(files.cases)]
    tick = on_case or (lambda: None)
    results: list[CaseCheck] = []
    if workers > 0 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp.get_context(method)) as pool:
            for r in pool.map(_check_one, jobs):
                results.append(r)
                tick()
    else:
        for job in jobs:
            results.append(_check_one(job))
            tick()
    report = DatasetCheck(
        path=str(path),
        format=files.format,
        cases=results,
        label_table=files.label_table,
        channel_names=files.channel_names,
        settings=preprocessing_settings(data_cfg, min_shape),
    )
    report.settings["in_channels"] = in_channels
    _summarise(report, files)
    return report


def _summarise(report: DatasetCheck, files: DatasetFiles) -> None:
    cases = report.cases
    readable = [c for c in cases if c.readable]
    for c in cases:
        report.errors.extend(c.errors)
    n_channels = len(files.channel_names)
    if n_channels and n_channels != report.settings["in_channels"]:
        report.errors.append(
            f"the dataset has {n_channels} channels {files.channel_names} but the run reads "
            f"model.in_channels = {report.settings['in_channels']}; set model.in_channels={n_channels}"
        )
    small = [c.name for c in cases if any("smaller than the crop" in w for w in c.warnings)]
    for c in cases:
        report.warnings.extend(w for w in c.warnings if "smaller than the crop" not in w)
    if small:
        listing = ", ".join(small[:5]) + (f" and {len(small) - 5} more" if len(small) > 5 else "")
        report.warnings.append(
            f"{len(small)} scan(s) smaller than the crop {tuple(report.settings['crop'])} after "
            f"preprocessing will be zero-padded: {listing}"
        )
    report.modality = _modality_vote(readable)
    guess, conf = report.modality["modality"], report.modality["confidence"]
    modality = report.settings["modality"]
    if guess in ("ct", "mri") and guess != modality and conf != "low":
        report.warnings.append(
            f"the scans look like {guess.upper()} ({conf} confidence) but the run's data.modality is "
            f"{modality!r}; pass data.modality={guess} (or --modality {guess}) if they are"
        )
    if files.label_table:
        present = sorted({v for c in readable for v in (c.label_values or [])})
        unused = [v for v in files.label_table if v not in present and v != 0]
        if unused and any(c.label_values is not None for c in readable):
            names = ", ".join(f"{v} {files.label_table[v]}" for v in unused[:8])
            report.warnings.append(f"label table values present in no label file: {names}")
    summary: dict[str, Any] = {
        "label_values_present": sorted({v for c in readable for v in (c.label_values or [])})
    }
    if readable:
        summary["shape"] = _spread([c.shape or [] for c in readable])
        summary["spacing"] = _spread([c.spacing or [] for c in readable])
        prep = [c.preprocessed_shape for c in readable if c.preprocessed_shape]
        summary["preprocessed_shape"] = _spread(prep) if prep else None
        summary["intensity"] = _pooled(readable, max(c.channels or 0 for c in readable))
        med = np.asarray(summary["spacing"]["median"])
        if med.min() > 0 and med.max() / med.min() > ANISOTROPY_WARNING:
            report.warnings.append(
                f"anisotropic spacing (median {med.tolist()} mm, ratio {med.max() / med.min():.1f}); "
                "consider data.spacing"
            )
        chans = Counter(c.channels for c in readable)
        if len(chans) > 1:
            report.errors.append(f"cases differ in channel count: {dict(chans)}")
    report.summary = summary
    if not cases:
        report.errors.append(f"{report.path}: no cases found")


def default_report_path(data: str | Path) -> Path:
    """``<data folder>/.anatssl_check.json`` (the folder of a manifest or scan file given as data)."""
    p = Path(data).expanduser()
    return (p if p.is_dir() else p.parent) / ".anatssl_check.json"


def fmt_number(v: float) -> str:
    """Intensity for a table cell: integers as such, others with 3 significant digits."""
    if not math.isfinite(v):
        return str(v)
    return f"{v:.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.3g}"
