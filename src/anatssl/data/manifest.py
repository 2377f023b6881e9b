"""Which scans make up a dataset: ``discover(path) -> list[DataItem]``.

Accepted inputs (DESIGN.md, "Datasets"):

- an MSD-style ``dataset.json`` (Medical Segmentation Decathlon, Antonelli et al. 2022), or a folder that
  holds one: ``{"training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz",
  "landmarks": "a.json", ...}, ...]}``; relative paths are resolved against the json's folder, any
  other keys of an entry are kept in ``DataItem.fields``; plain strings are accepted as image paths;
- a folder of volume files (``*.nii``, ``*.nii.gz``, ``*.nrrd``, ``*.mha``, ``*.mhd``; top level only,
  so ``labelsTr/`` next to the images is not mistaken for images);
- a folder of DICOM series: every folder below it (any depth) that directly holds DICOM files is one
  scan; the path may also be a single series folder;
- a CSV with an ``image`` column (optional ``label`` and ``landmarks``; other columns go to ``fields``),
  relative paths resolved against the CSV's folder;
- a single volume file.

Only the manifest is checked here (cheap); decoding each scan is :meth:`VolumeSource.validate`'s job.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anatssl.data.io import VOLUME_SUFFIXES, has_dicom_files, is_dicom_file, suffix_of
from anatssl.data.jsonfile import read_json
from anatssl.errors import DataError

_PATH_KEYS = ("image", "label", "landmarks")


@dataclass(frozen=True)
class DataItem:
    """One scan: its image (file or DICOM folder), optional label map and landmarks JSON, extra fields.

    A multi-channel case whose channels are separate files (nnU-Net's ``{case}_0000.nii.gz``,
    ``{case}_0001.nii.gz``, ...: :mod:`anatssl.data.layouts`) lists them in ``channels``, in channel
    order, and ``image`` is the first of them (for names and messages); the reader stacks them into
    ``(C, X, Y, Z)``. A single file (3D, or 4D with its channels inside, MSD's BrainTumour) leaves
    ``channels`` empty.
    """

    image: Path
    label: Path | None = None
    landmarks: Path | None = None
    fields: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    channels: tuple[Path, ...] = ()
    """The channel files of a multi-file case, ``image`` first; empty for a single file."""
    case: str | None = None
    """The case's name in its layout (``BRATS_001``, ``s0001``); None: the file name is the name."""
    label_values: tuple[int, ...] | None = None
    """The values the layout's label table allows; a label holding others is a bad scan. None: any."""

    def __post_init__(self) -> None:
        if self.channels and Path(self.channels[0]) != Path(self.image):
            raise ValueError(f"DataItem: image {self.image} must be the first of channels {self.channels}")

    @property
    def name(self) -> str:
        """A short name for messages: the case name, else the file name (or series folder name)."""
        return self.case if self.case is not None else self.image.name

    @property
    def files(self) -> tuple[Path, ...]:
        """The image files to read, in channel order (one entry for a single file or DICOM folder)."""
        return self.channels if self.channels else (self.image,)


def _resolve(value: Any, base: Path, where: str, key: str) -> Path | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: '{key}' must be a path string, got {type(value).__name__} {value!r}")
    p = Path(os.path.expanduser(value.strip()))
    return p if p.is_absolute() else (base / p)


def _item(entry: dict[str, Any], base: Path, where: str, manifest: Path) -> DataItem:
    image = _resolve(entry.get("image"), base, where, "image")
    if image is None:
        raise DataError(f"{where} has no 'image' path; every entry needs one")
    paths = {
        "image": image,
        "label": _resolve(entry.get("label"), base, where, "label"),
        "landmarks": _resolve(entry.get("landmarks"), base, where, "landmarks"),
    }
    for key, p in paths.items():
        if p is not None and not p.exists():
            raise DataError(
                f"{where}: {key} {p} does not exist (paths are relative to {manifest.parent}); "
                "fix the entry or remove it"
            )
    fields = {k: v for k, v in entry.items() if k not in _PATH_KEYS}
    return DataItem(image=image, label=paths["label"], landmarks=paths["landmarks"], fields=fields)


def _from_json(path: Path) -> list[DataItem]:
    data = read_json(path, "manifest")
    if not isinstance(data, dict) or not isinstance(data.get("training"), list):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DataError(
            f"manifest {path} has no 'training' list (found {keys}); expected MSD style "
            '{"training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}, ...]}'
        )
    items = []
    for i, entry in enumerate(data["training"]):
        where = f"manifest {path}, training entry {i}"
        if isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, dict):
            raise DataError(f"{where} is a {type(entry).__name__}; expected {{'image': path, 'label': path}}")
        items.append(_item(entry, path.parent, where, path))
    if not items:
        raise DataError(f"manifest {path} has an empty 'training' list; add the scans to pretrain on")
    return items


def _from_csv(path: Path) -> list[DataItem]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: Excel writes a BOM
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = [c.strip() for c in (reader.fieldnames or [])]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read CSV manifest {path}: {e}") from e
    if "image" not in columns:
        raise DataError(
            f"CSV manifest {path} has no 'image' column (columns: {columns}); add a header row "
            "with 'image' (and optionally 'label', 'landmarks')"
        )
    items = []
    for i, row in enumerate(rows):
        entry = {(k or "").strip(): v for k, v in row.items() if k is not None}
        items.append(_item(entry, path.parent, f"CSV manifest {path}, row {i + 2}", path))  # row 1 = header
    if not items:
        raise DataError(f"CSV manifest {path} lists no scans; add one row per scan under the header")
    return items


def _dicom_series_dirs(root: Path) -> list[Path]:
    """Every folder under ``root`` (itself included, hidden folders skipped) that directly holds DICOM."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if has_dicom_files(Path(dirpath)):
            found.append(Path(dirpath))
    return found


def _from_folder(path: Path) -> list[DataItem]:
    if (path / "dataset.json").is_file():
        return _from_json(path / "dataset.json")
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and suffix_of(p) in VOLUME_SUFFIXES
    )
    items = [DataItem(image=p) for p in files]
    items += [DataItem(image=d) for d in _dicom_series_dirs(path)]
    if not items:
        raise DataError(
            f"no scans found in {path}; expected *.nii.gz / *.nii / *.nrrd / *.mha files, a dataset.json "
            "(MSD style), or DICOM series folders (one folder of .dcm slices per scan); or pass a CSV with "
            "an 'image' column"
        )
    return items


def discover(path: str | Path) -> list[DataItem]:
    """The scans a dataset path names, in a deterministic order (see the module docstring for formats).

    The downloaded layouts (nnU-Net v2 raw, BTCV, TotalSegmentator, AbdomenAtlas) are read by
    :func:`anatssl.data.layouts.discover`, which detects the layout and comes back here for the inputs
    above; call that one to accept every layout.

    Raises:
        DataError: missing path; a manifest entry that points nowhere (entry index, path, manifest);
            an empty folder; a CSV without an ``image`` column; malformed JSON.
    """
    path = Path(os.path.expanduser(str(path)))
    if not path.exists():
        raise DataError(f"data path {path} does not exist; pass a folder of scans, a dataset.json or a CSV")
    if path.is_dir():
        return _from_folder(path)
    suffix = suffix_of(path)
    if suffix == ".json":
        return _from_json(path)
    if suffix == ".csv":
        return _from_csv(path)
    if suffix in VOLUME_SUFFIXES or is_dicom_file(path):
        return [DataItem(image=path)]
    raise DataError(
        f"data path {path} is neither a folder, a dataset.json, a CSV nor a volume file (.nii.gz, .nii, "
        ".nrrd, .mha, .dcm)"
    )
