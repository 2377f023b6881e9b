"""Read one scan from disk into a :class:`~anatssl.data.volume.Volume`, or say precisely why not.

One reader interface for every format (MONAI's, so the geometry matches a MONAI pipeline bit for bit):

- ``.nii`` / ``.nii.gz``: ``monai.data.NibabelReader``;
- a DICOM series folder (or one ``.dcm`` file): ``monai.data.PydicomReader`` (the ``dicom`` extra:
  ``pip install anatssl[dicom]``); slices sorted by InstanceNumber, geometry from
  ImagePositionPatient / ImageOrientationPatient / PixelSpacing, HU from RescaleSlope/Intercept;
- ``.nrrd`` / ``.mha`` / ``.mhd``: ``monai.data.ITKReader`` when ``itk`` is installed.

The array then goes through ``EnsureChannelFirst`` and ``Orientation("RAS")``, so every volume is
float32 ``(C, X, Y, Z)`` whose voxel axes 0, 1, 2 increase towards the patient's Right, Anterior and
Superior (nibabel's RAS+ world, MONAI's convention): ``Volume.affine`` maps voxel indices to RAS world
millimetres with a (near) positive-diagonal rotation part, and a world point keeps its coordinates
whatever the file's storage order was (tested with an LPS-stored NIfTI and a DICOM series, whose LPS
patient coordinates the reader converts to RAS).

Every failure is a :class:`~anatssl.errors.DataError` whose message names the file and what to do:
missing or empty file, corrupt / truncated file, unsupported format, a 2D image, an unexpected number
of channels, NaN/Inf voxels (``nan_policy="fill"`` replaces them by the minimum and warns), a constant
image (nothing to learn from), a DICOM folder holding several series; and, before decoding, a header
claiming more than ``max_voxels`` voxels or a non-finite / rank-deficient affine (:mod:`anatssl.data.header`).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from anatssl.data.header import DEFAULT_MAX_VOXELS, check_affine, check_header
from anatssl.data.jsonfile import read_json
from anatssl.data.volume import Volume
from anatssl.errors import DataError

log = logging.getLogger("anatssl")

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".mha", ".mhd")
DICOM_SUFFIXES = (".dcm", ".dicom")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
"""File suffixes that hold a whole volume (a DICOM series is a folder instead)."""

_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
"""Axis labels given explicitly to ``Orientation`` (its default is deprecated in MONAI 1.5+)."""


def suffix_of(path: str | Path) -> str:
    """Lower-case suffix, with ``.nii.gz`` as one suffix."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm`` file, or a file carrying the DICOM preamble magic ``DICM`` at byte 128."""
    if suffix_of(path) in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def has_dicom_files(folder: Path) -> bool:
    """Whether ``folder`` directly holds at least one DICOM file (stops at the first one found)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return False
    return any(p.is_file() and not p.name.startswith(".") and is_dicom_file(p) for p in entries)


def _require_pydicom(path: Path) -> None:
    if importlib.util.find_spec("pydicom") is None:
        raise DataError(f"{path} is DICOM, which needs pydicom: pip install anatssl[dicom]")


def _make_reader(path: Path) -> Any:
    """The MONAI reader for ``path`` (a file or a DICOM series folder), imported lazily (MONAI is slow to
    import and the CLI's ``--help`` should not pay for it)."""
    if path.is_dir():
        if not has_dicom_files(path):
            raise DataError(
                f"{path} is a folder without DICOM files; a scan is a NIfTI file (.nii.gz), a DICOM series "
                "folder (.dcm slices), or an .nrrd/.mha file"
            )
        _require_pydicom(path)
        from monai.data import PydicomReader

        # None (documented by MONAI, typed as str): keep every file pydicom recognises as DICOM
        return PydicomReader(fname_regex=None)  # type: ignore[arg-type]
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        from monai.data import NibabelReader

        return NibabelReader(squeeze_non_spatial_dims=True)
    if suffix in DICOM_SUFFIXES or is_dicom_file(path):
        _require_pydicom(path)
        from monai.data import PydicomReader

        return PydicomReader()
    if suffix in ITK_SUFFIXES:
        if importlib.util.find_spec("itk") is None:
            raise DataError(
                f"{path}: reading {suffix} files needs ITK (pip install itk); or convert the scan to NIfTI "
                "(.nii.gz), e.g. with SimpleITK or 3D Slicer"
            )
        from monai.data import ITKReader

        return ITKReader()
    raise DataError(
        f"{path}: unsupported file type {suffix or '(no suffix)'}; anatssl reads .nii/.nii.gz, DICOM series "
        "folders (.dcm), and .nrrd/.mha/.mhd (with itk installed)"
    )


SLICE_GAP_TOLERANCE = 0.1
"""Relative deviation of a DICOM slice step from the median step that counts as a gap (10%: scanners
write positions to ~0.01 mm; a missing slice is a 100% deviation)."""


def _check_dicom_series(path: Path, raw: Any) -> None:
    """A DICOM folder must hold one series whose slices are evenly spaced in InstanceNumber order.

    Stacking two series interleaves unrelated slices; a missing or duplicated slice shifts every voxel
    after it, because the reader spreads the first-to-last distance evenly over the slices.
    """
    slices = raw if isinstance(raw, list) else [raw]
    uids = {str(getattr(s, "SeriesInstanceUID", "")) for s in slices} - {""}
    if len(uids) > 1:
        raise DataError(
            f"{path} holds {len(uids)} DICOM series (SeriesInstanceUID {sorted(uids)[:3]}...); "
            "put each series in its own folder"
        )
    slices = sorted((s for s in slices if hasattr(s, "InstanceNumber")), key=lambda s: int(s.InstanceNumber))
    if len(slices) < 3 or not all(hasattr(s, "ImagePositionPatient") for s in slices):
        return
    if not hasattr(slices[0], "ImageOrientationPatient"):
        return
    iop = np.asarray(slices[0].ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    pos = np.array([float(np.dot(normal, np.asarray(s.ImagePositionPatient, np.float64))) for s in slices])
    steps = np.diff(pos)
    med = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - med)))
    if abs(med) < 1e-6:
        raise DataError(
            f"{path}: most DICOM slices share one position along the slice normal; the folder holds "
            "duplicates or a multi-echo / multi-phase acquisition. Keep one volume's slices per folder"
        )
    if abs(steps[worst] - med) > SLICE_GAP_TOLERANCE * abs(med):
        raise DataError(
            f"{path}: DICOM slices are not evenly spaced: {steps[worst]:.3g} mm between InstanceNumber "
            f"{slices[worst].InstanceNumber} and {slices[worst + 1].InstanceNumber} where {med:.3g} mm is "
            "typical. A slice is missing or duplicated, or the folder mixes acquisitions; re-export it"
        )


def _decode(path: Path, kind: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """File -> (array (C, X, Y, Z) RAS, affine (4, 4) RAS, meta); any reader failure -> DataError."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import EnsureChannelFirst, Orientation

    reader = _make_reader(path)
    try:
        raw = reader.read(str(path))
        if path.is_dir():
            _check_dicom_series(path, raw)
        array, meta = reader.get_data(raw)
        array = np.asarray(array)
    except (DataError, MemoryError):
        raise
    except Exception as e:  # nibabel / pydicom / zlib raise anything from OSError to EOFError to struct.error
        raise DataError(
            f"cannot read {kind} {path}: {type(e).__name__}: {e}. The file is corrupt, truncated or not "
            "what its name says; re-export or re-download it (or remove it from the dataset)"
        ) from e
    spatial = tuple(int(s) for s in np.atleast_1d(meta.get("spatial_shape", array.shape)))
    if len(spatial) < 3 or min(spatial) <= 1:
        raise DataError(
            f"{path} is a 2D image (spatial shape {spatial}); anatssl pretrains 3D encoders and needs "
            "volumes with at least 2 voxels along each of 3 axes. Remove it or supply the whole series"
        )
    affine = np.asarray(meta.pop("affine"), dtype=np.float64)  # voxel -> RAS world mm (readers convert LPS)
    check_affine(affine, path, kind)  # a singular one would fail inside Orientation with MONAI's words
    tensor: Any = MetaTensor(torch.as_tensor(array), affine=torch.as_tensor(affine), meta=meta)
    tensor = EnsureChannelFirst()(tensor)
    if tensor.ndim != 4:
        raise DataError(
            f"{path} has shape {tuple(array.shape)}, which is not a 3D volume with an optional channel axis; "
            "anatssl expects (X, Y, Z) or (X, Y, Z, C) images"
        )
    tensor = Orientation(axcodes="RAS", labels=_RAS_LABELS)(tensor)
    out_affine = np.asarray(tensor.affine, dtype=np.float64)
    info = {
        "source_shape": spatial,
        "source_spacing": tuple(float(s) for s in np.linalg.norm(out_affine[:3, :3], axis=0)),
        "source_axcodes": _axcodes(affine),
    }
    return np.asarray(tensor.numpy()), out_affine, info


def _axcodes(affine: np.ndarray) -> str:
    import nibabel as nib

    return "".join(str(c) for c in nib.aff2axcodes(affine))


def _check_finite(array: np.ndarray, path: Path, nan_policy: str) -> np.ndarray:
    finite = np.isfinite(array)
    if finite.all():
        return array
    bad = int(array.size - np.count_nonzero(finite))
    if nan_policy != "fill":
        raise DataError(
            f"{path} has {bad} NaN/Inf voxels; fix the file, or pass nan_policy='fill' to replace them by "
            "the image minimum"
        )
    if not finite.any():
        raise DataError(f"{path}: every voxel is NaN/Inf; the file holds no image")
    fill = float(array[finite].min())
    log.warning("%s: replaced %d NaN/Inf voxels by the image minimum %g", path, bad, fill)
    return np.where(finite, array, np.float32(fill)).astype(np.float32)


def _to_label(array: np.ndarray, path: Path) -> np.ndarray:
    """Float label array -> the smallest signed integer dtype that holds it (int16 unless it overflows)."""
    if not np.isfinite(array).all():
        raise DataError(f"label {path} has NaN/Inf voxels; a label map holds integer organ indices")
    rounded = np.rint(array)
    if not np.allclose(array, rounded, atol=1e-3):
        raise DataError(
            f"label {path} has non-integer values (e.g. {float(array[np.abs(array - rounded) > 1e-3][0])}); "
            "a label map holds integer organ indices. Is it an image listed as a label?"
        )
    lo, hi = float(rounded.min()), float(rounded.max())
    dtype = np.int16 if -(2**15) <= lo and hi < 2**15 else np.int32
    return rounded.astype(dtype)


def read_volume(
    path: str | Path,
    kind: Literal["image", "label"] = "image",
    channels: int = 1,
    nan_policy: Literal["error", "fill"] = "error",
    allow_constant: bool = False,
    max_voxels: int = DEFAULT_MAX_VOXELS,
) -> Volume:
    """Decode one scan into RAS orientation.

    Args:
        path: a ``.nii``/``.nii.gz`` file, a DICOM series folder or ``.dcm`` file, or ``.nrrd``/``.mha``.
        kind: ``image`` -> ``Volume.image`` float32 ``(C, X, Y, Z)``; ``label`` -> ``Volume.image`` holds
            the integer label map ``(1, X, Y, Z)`` (int16, int32 if the values need it).
        channels: expected channel count C (a 4D file ``(X, Y, Z, C)`` must match it). 1 by default: CT and
            single-sequence MRI.
        nan_policy: ``error`` (default: a NaN usually means a broken conversion, better seen than hidden)
            or ``fill`` (replace NaN/Inf by the finite minimum, with a warning).
        allow_constant: an image whose voxels are all equal is an error for pretraining (there is nothing
            to learn from it); set True to accept it. Labels may always be constant (all background).
        max_voxels: a NIfTI file whose header claims more voxels is refused before anything is
            allocated (``data.max_voxels``; :mod:`anatssl.data.header`).

    Returns:
        ``Volume`` with ``affine`` voxel -> RAS world mm and ``meta`` = ``source_shape``,
        ``source_spacing``, ``source_axcodes`` (storage orientation of the file, e.g. ``LPS``), ``kind``.

    Raises:
        DataError: naming ``path`` and what to do, for every bad input listed in the module docstring.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    if nan_policy not in ("error", "fill"):
        raise ValueError(f"nan_policy must be 'error' or 'fill', got {nan_policy!r}")
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"{kind} {path} does not exist; check the path (relative paths in a manifest are "
            "resolved against the manifest's folder)"
        )
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{kind} {path} is an empty file (0 bytes); re-export or re-download it")
    check_header(path, kind, max_voxels)  # voxel count and affine, before any allocation
    array, affine, info = _decode(path, kind)
    array = array.astype(np.float32, copy=False)
    if kind == "label":
        if array.shape[0] != 1:
            raise DataError(f"label {path} has {array.shape[0]} channels; a label map has one")
        data = _to_label(array, path)
    else:
        if array.shape[0] != channels:
            raise DataError(
                f"{path} has {array.shape[0]} channels (a 4D image, spatial shape {array.shape[1:]}) but "
                f"{channels} expected; split multi-sequence / time-series files into one volume each, or set "
                "the model's in_channels to match"
            )
        data = _check_finite(array, path, nan_policy)
        if not allow_constant and float(data.max()) == float(data.min()):
            raise DataError(
                f"{path} is constant (every voxel = {float(data.min()):g}): there is nothing to learn from "
                "it. Remove it from the pretraining data"
            )
    data = np.ascontiguousarray(data)
    return Volume(image=data, affine=affine, path=str(path), meta={**info, "kind": kind})


def check_same_grid(image: Volume, label: Volume, atol_mm: float = 1e-2) -> None:
    """A label must share its image's voxel grid (shape and affine) after RAS reorientation.

    ``atol_mm`` = 0.01 mm tolerates the float rounding between NIfTI sform and qform copies, not a real
    misregistration (which would shift the labels by at least a fraction of a voxel).
    """
    if image.spatial_shape != label.spatial_shape:
        raise DataError(
            f"label {label.path} has spatial shape {label.spatial_shape} but its image {image.path} has "
            f"{image.spatial_shape}; resample the label onto the image grid"
        )
    err = float(np.abs(image.affine - label.affine).max())
    if err > atol_mm:
        raise DataError(
            f"label {label.path} and image {image.path} have different voxel->world affines (max difference "
            f"{err:.3g} mm); resample the label onto the image grid or fix its header"
        )


def _in_case(case: str | None, e: DataError) -> DataError:
    """``e`` with ``case <name>: `` in front (once), so a message names the case as well as the file."""
    msg = str(e)
    if case is None or msg.startswith(f"case {case}:"):
        return e
    return DataError(f"case {case}: {msg}")


def read_scan(
    files: Sequence[str | Path],
    label: str | Path | None = None,
    *,
    channels: int = 1,
    nan_policy: Literal["error", "fill"] = "error",
    max_voxels: int = DEFAULT_MAX_VOXELS,
    case: str | None = None,
    label_values: Sequence[int] | None = None,
) -> Volume:
    """One case: its image file(s) stacked as channels ``(C, X, Y, Z)``, and its label on that grid.

    Args:
        files: one file (3D, or 4D with ``channels`` channels inside; a DICOM folder), or one file per
            channel (nnU-Net's ``{case}_0000``, ``{case}_0001``, ...), stacked in this order. Each
            channel file must be 3D and on the first one's grid (shape, and affine within 0.01 mm).
        label: the label map file, checked to lie on the image grid.
        channels: expected C (``model.in_channels``); a different number of channel files, or a 4D
            file with another channel count, is an error saying what to set.
        case: the case name, put in front of every message (the file is named there already).
        label_values: the values the layout's label table allows; others in the label are an error.

    Raises:
        DataError: naming the case and the file: a missing / unreadable channel file, channel files on
            different grids, a channel count that disagrees, label problems (:func:`read_volume`,
            :func:`check_same_grid`, values outside ``label_values``).
    """
    paths = [Path(f) for f in files]
    if not paths:
        raise ValueError("read_scan: no image file given")
    try:
        if len(paths) == 1:
            vol = read_volume(paths[0], "image", channels, nan_policy, max_voxels=max_voxels)
        else:
            if len(paths) != channels:
                raise DataError(
                    f"{len(paths)} channel files ({', '.join(p.name for p in paths)}) but model.in_channels "
                    f"is {channels}; set model.in_channels={len(paths)} to train on every channel"
                )
            parts = [read_volume(p, "image", 1, nan_policy, max_voxels=max_voxels) for p in paths]
            first = parts[0]
            for k, part in enumerate(parts[1:], start=1):
                if part.spatial_shape != first.spatial_shape:
                    raise DataError(
                        f"channel {k} file {paths[k]} has spatial shape {part.spatial_shape} but channel 0 "
                        f"file {paths[0]} has {first.spatial_shape}; resample every channel onto one grid"
                    )
                err = float(np.abs(part.affine - first.affine).max())
                if err > 1e-2:
                    raise DataError(
                        f"channel {k} file {paths[k]} is not on the grid of channel 0 file {paths[0]} (their "
                        f"voxel->world affines differ by up to {err:.3g} mm); register and resample the "
                        "channels onto one grid (nnU-Net requires it too)"
                    )
            image = np.concatenate([p.image for p in parts], axis=0)
            vol = Volume(image=image, affine=first.affine, path=str(paths[0]), meta=dict(first.meta))
            vol.meta["channel_files"] = [str(p) for p in paths]
        if label is not None:
            lab = read_volume(label, "label", max_voxels=max_voxels)
            check_same_grid(vol, lab)
            if label_values is not None:
                present = np.unique(lab.image)
                bad = sorted(int(v) for v in present if int(v) not in set(label_values))
                if bad:
                    raise DataError(
                        f"label {label} holds values {bad[:10]} outside the dataset's label table "
                        f"{sorted(int(v) for v in label_values)}; fix the label file or dataset.json's labels"
                    )
            vol.label = lab.image
    except DataError as e:
        named = _in_case(case, e)
        if named is e:
            raise
        raise named from e
    return vol


_WORLD_KEYS = ("world", "world_mm", "xyz", "mm")
"""Keys under which a landmark record may hold its world position (voxel indices beside it are ignored)."""


def _world_of(value: Any) -> Any:
    if isinstance(value, dict):
        for key in _WORLD_KEYS:
            if key in value:
                return value[key]
    return value


def read_landmarks(path: str | Path) -> dict[str, list[float]]:
    """A landmarks JSON -> ``{name: [x, y, z]}`` in RAS world millimetres.

    Accepted (optionally under a top-level ``"landmarks"`` key, leaving room for other keys):
    ``{"name": [x, y, z]}``, ``{"name": {"world": [x, y, z], "voxel": [i, j, k]}}`` or a list of
    ``{"name": ..., "world": [x, y, z]}`` (``world_mm``, ``xyz`` or ``mm`` also name the position).
    Only world coordinates (mm, RAS, the NIfTI convention) are used: unlike voxel indices of the file,
    they survive reorientation, resampling and cropping unchanged.
    """
    path = Path(path)
    data = read_json(path, "landmarks")
    if isinstance(data, dict) and isinstance(data.get("landmarks"), dict | list):
        data = data["landmarks"]
    if isinstance(data, list) and all(isinstance(r, dict) and "name" in r for r in data):
        data = {r["name"]: r for r in data}
    if not isinstance(data, dict):
        raise DataError(f'landmarks {path} must be a JSON object {{"name": [x, y, z], ...}} (world mm, RAS)')
    out = {}
    for name, value in data.items():
        xyz = _world_of(value)
        ok = isinstance(xyz, list) and len(xyz) == 3 and all(isinstance(v, int | float) for v in xyz)
        if not ok or not np.isfinite(np.asarray(xyz, dtype=np.float64)).all():
            raise DataError(
                f"landmarks {path}: {name!r} is {value!r}; expected [x, y, z] world mm (3 finite numbers)"
            )
        out[str(name)] = [float(v) for v in xyz]
    return out
