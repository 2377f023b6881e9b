"""The dataset layouts users download, read as they come: ``read_dataset(path, fmt=None) -> Dataset``.

No conversion script: a download folder goes straight to ``anatssl pretrain`` / ``anatssl finetune``.
Formats (:data:`KNOWN_FORMATS`; docs/layouts.md has the full rules):

- ``nnunet``: nnU-Net v2 raw (Isensee et al. 2021), ``dataset.json`` with ``channel_names``
  (``{"0": "T1", "1": "T2"}``), ``labels`` (name -> int), ``file_ending``; ``imagesTr/{case}_{0000..}``
  one file per channel, ``labelsTr/{case}``, ``imagesTs/`` (unlabelled test cases);
- ``msd``: a Medical Segmentation Decathlon ``dataset.json`` (a ``training`` list; 4D multi-channel
  NIfTI such as Task01 BrainTumour, whose ``modality`` gives the channel names);
- ``btcv``: BTCV / Synapse multi-organ, ``img/imgXXXX.nii.gz`` + ``label/labelXXXX.nii.gz``;
- ``totalsegmentator``: ``sXXXX/ct.nii.gz`` + ``sXXXX/segmentations/<structure>.nii.gz`` (one binary
  mask per structure), merged into one label map (below);
- ``abdomenatlas``: ``<case>/ct.nii.gz`` + ``<case>/segmentations/<structure>.nii.gz``, merged alike;
- ``folder``, ``dicom``, ``csv``, ``file``: a folder of volume files, DICOM series folders, a CSV with an
  ``image`` column, one volume (:mod:`anatssl.data.manifest`, unchanged).

**Detection** (:func:`detect_format`): a ``dataset.json`` with a ``training`` list is ``msd``; one with
``channel_names`` or ``file_ending`` and no ``training`` is ``nnunet``; ``img/`` + ``label/`` folders
are ``btcv``; sub-folders holding ``ct.nii.gz`` and ``segmentations/`` are ``totalsegmentator`` when the
case folders are named ``s<digits>`` (or a ``meta.csv`` lies beside them), else ``abdomenatlas``; then
the plain inputs. Anything else: a :class:`~anatssl.errors.DataError` listing the known formats.

**Merged masks** (TotalSegmentator, AbdomenAtlas): the label table is the sorted union of the mask
names over all cases, ids 1..K in that order, 0 background (:func:`mask_table`); sorted names make the
table independent of file-system order and of which cases were downloaded, as long as every case has
every mask (TotalSegmentator v2 ships all 117 in each case, empty when the structure is absent). Where
masks overlap, the later id in the table wins. Pretraining reads the CT only (no label). Fine-tuning
reads a label map merged once per case into the cache folder next to the data
(``<data>/.anatssl_cache/merged-labels-<table hash>/<case>.nii.gz``, :func:`merged_label_path`;
another writable folder when the data folder is read-only, as for the preprocessed scans),
rebuilt when a mask file changes; the download folder itself is never written to.

**Bad cases** are not fatal here: each :class:`Case` lists its ``problems`` (each naming the case and
the file: a channel file missing, a label or mask missing). Pretraining
(:meth:`~anatssl.data.source.VolumeSource.validate`) skips such a case with a warning (its reader
meets the same missing file); :func:`labelled_cases` drops it with a warning before the split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anatssl.data.io import VOLUME_SUFFIXES, suffix_of
from anatssl.data.jsonfile import read_json
from anatssl.data.manifest import DataItem
from anatssl.data.manifest import discover as discover_plain
from anatssl.errors import DataError

log = logging.getLogger("anatssl")

KNOWN_FORMATS: tuple[str, ...] = (
    "nnunet",
    "msd",
    "btcv",
    "totalsegmentator",
    "abdomenatlas",
    "folder",
    "dicom",
    "csv",
    "file",
)
"""Every format :func:`read_dataset` reads, the names ``--format`` takes."""

DOWNLOAD_FORMATS: tuple[str, ...] = ("nnunet", "btcv", "totalsegmentator", "abdomenatlas")
"""The formats this module reads itself (the others are :mod:`anatssl.data.manifest`'s)."""

MASK_FORMATS: tuple[str, ...] = ("totalsegmentator", "abdomenatlas")
"""Layouts with one binary mask file per structure, merged into one label map."""

FORMAT_HELP = "dataset layout: " + ", ".join(KNOWN_FORMATS) + " (default: detected; docs/layouts.md)"


@dataclass(frozen=True)
class MaskSet:
    """A label map made of one binary mask file per structure: ``masks[i]`` holds structure
    ``names[i]``, whose id in the dataset's table is ``ids[i]`` (the merge writes ids in this order)."""

    folder: Path
    names: tuple[str, ...]
    ids: tuple[int, ...]
    masks: tuple[Path, ...]


LabelSource = Path | MaskSet
"""A label map file, or masks merged at read time."""


@dataclass(frozen=True)
class Case:
    """One case of a dataset: its name, image files (one per channel, or one file), label, landmarks."""

    name: str
    images: tuple[Path, ...]
    """Channel files in channel order; one entry for a 3D/4D file or a DICOM series folder."""
    label: LabelSource | None = None
    landmarks: Path | None = None
    fields: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Other keys of a manifest entry (``class``, ...)."""
    problems: tuple[str, ...] = ()
    """What is wrong with the case's files (each message names the case and the file); empty: none
    seen from the listing (decoding may still find more)."""

    @property
    def image(self) -> Path:
        return self.images[0]


@dataclass
class Dataset:
    """A dataset read from its download folder: what :func:`read_dataset` returns."""

    format: str
    root: Path
    cases: list[Case]
    """The training cases (labelled ones where the layout has labels), in a deterministic order."""
    labels: dict[int, str] | None = None
    """Label value -> structure name (0 background), if the layout has a label table."""
    channel_names: tuple[str, ...] | None = None
    """One name per input channel (nnU-Net ``channel_names``, MSD ``modality``), if the layout says."""
    test_cases: list[Case] = field(default_factory=list)
    """Unlabelled held-out cases the layout ships (nnU-Net / MSD ``imagesTs``); not trained on."""

    @property
    def num_channels(self) -> int | None:
        """Input channels the layout declares (None: not declared; single files say it when read)."""
        return len(self.channel_names) if self.channel_names else None

    @property
    def problems(self) -> list[str]:
        return [p for c in self.cases for p in c.problems]

    def items(self) -> list[DataItem]:
        """The cases as pretraining's :class:`~anatssl.data.manifest.DataItem` list. Mask layouts give
        no label (pretraining reads images only); label files come with the table's allowed values."""
        values = tuple(sorted(self.labels)) if self.labels else None
        out = []
        for c in self.cases:
            label = c.label if isinstance(c.label, Path) else None
            out.append(
                DataItem(
                    image=c.images[0],
                    label=label,
                    landmarks=c.landmarks,
                    fields=dict(c.fields),
                    channels=c.images if len(c.images) > 1 else (),
                    case=c.name if self.format in DOWNLOAD_FORMATS else None,
                    label_values=values if label is not None and self.format in DOWNLOAD_FORMATS else None,
                )
            )
        return out


# -- detection ---------------------------------------------------------------------------------------
def _json_kind(path: Path) -> str | None:
    """``msd`` / ``nnunet`` for a dataset.json, None if it is neither."""
    doc = read_json(path, "dataset")
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("training"), list):
        return "msd"
    if "channel_names" in doc or "file_ending" in doc:
        return "nnunet"
    return None


def _mask_cases(path: Path) -> list[Path]:
    """Sub-folders of ``path`` holding ``ct.nii.gz`` (or ``.nii``) and a ``segmentations/`` folder."""
    out: list[Path] = []
    try:
        subs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return out
    for d in subs:
        if (d / "segmentations").is_dir() and _ct_file(d) is not None:
            out.append(d)
    return out


def _ct_file(case_dir: Path) -> Path | None:
    for name in ("ct.nii.gz", "ct.nii"):
        if (case_dir / name).is_file():
            return case_dir / name
    return None


_TOTALSEG_CASE = re.compile(r"^s\d+$")


def _detect_dir(path: Path) -> str | None:
    if (path / "dataset.json").is_file():
        return _json_kind(path / "dataset.json")
    if (path / "img").is_dir() and (path / "label").is_dir():
        return "btcv"
    cases = _mask_cases(path)
    if cases:
        named = all(_TOTALSEG_CASE.match(c.name) for c in cases)
        return "totalsegmentator" if named or (path / "meta.csv").is_file() else "abdomenatlas"
    return None


def discover(path: str | Path, fmt: str | None = None) -> list[DataItem]:
    """Pretraining's scans of a dataset in any layout of :data:`KNOWN_FORMATS` (``fmt`` None: detected)
    -> :class:`~anatssl.data.manifest.DataItem` list. The plain inputs (MSD json, folder, DICOM, CSV,
    volume file) give exactly :func:`anatssl.data.manifest.discover`'s items, as before.

    Raises:
        DataError: as :func:`read_dataset` and :func:`anatssl.data.manifest.discover`.
    """
    path = Path(os.path.expanduser(str(path)))
    if fmt is None and not is_download_layout(path):
        return discover_plain(path)
    ds = read_dataset(path, fmt)
    for problem in ds.problems:  # a missing file is met again (and the case skipped) when it is read
        log.warning("%s", problem)
    return ds.items()


def parse_label_map(raw: Any, where: str) -> dict[int, str]:
    """``{"0": "background", ...}`` or ``{"background": 0, ...}`` -> {0: "background", ...}."""
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{where}: 'labels' must be a non-empty mapping of label value <-> structure name")
    out: dict[int, str] = {}
    for k, v in raw.items():
        if str(k).lstrip("-").isdigit():
            out[int(k)] = str(v)
        elif isinstance(v, int) or (isinstance(v, str) and v.isdigit()):
            out[int(v)] = str(k)
        else:
            raise DataError(f"{where}: labels entry {k!r}: {v!r} maps neither value->name nor name->value")
    if 0 not in out:
        out[0] = "background"
    return dict(sorted(out.items()))


def is_download_layout(path: Path) -> bool:
    """Whether ``path`` is one of :data:`DOWNLOAD_FORMATS` (cheap: a listing and maybe one JSON read)."""
    path = Path(path)
    try:
        if path.is_dir():
            return _detect_dir(path) in DOWNLOAD_FORMATS
        if path.is_file() and path.name.lower().endswith(".json"):
            return _json_kind(path) == "nnunet"
    except DataError:
        return False
    return False


def _unknown(path: Path, why: str) -> DataError:
    return DataError(
        f"{path}: {why}; the known layouts are {', '.join(KNOWN_FORMATS)} (docs/layouts.md). "
        "Name one with --format, or point --data at the folder that holds dataset.json / imagesTr / "
        "img + label / the case folders"
    )


def detect_format(path: str | Path) -> str:
    """The layout of ``path``: one of :data:`KNOWN_FORMATS` (rules in the module docstring).

    Raises:
        DataError: the path does not exist, or matches no known layout (the message lists them).
    """
    path = Path(os.path.expanduser(str(path)))
    if not path.exists():
        raise DataError(f"data path {path} does not exist; pass a dataset folder, a dataset.json or a CSV")
    if path.is_dir():
        kind = _detect_dir(path)
        if kind is not None:
            return kind
        if (path / "dataset.json").is_file():
            raise _unknown(
                path / "dataset.json",
                "this dataset.json has neither a 'training' list (MSD) nor 'channel_names' / "
                "'file_ending' (nnU-Net v2)",
            )
        from anatssl.data.io import has_dicom_files

        try:
            entries = list(path.iterdir())
        except OSError as e:
            raise DataError(f"cannot list {path}: {e}") from e
        if any(p.is_file() and suffix_of(p) in VOLUME_SUFFIXES for p in entries):
            return "folder"
        if has_dicom_files(path) or any(
            has_dicom_files(Path(d)) for d, _, _ in os.walk(path) if not Path(d).name.startswith(".")
        ):
            return "dicom"
        raise _unknown(path, "no scans found in a layout anatssl knows")
    suffix = suffix_of(path)
    if suffix == ".json":
        kind = _json_kind(path)
        if kind is None:
            raise _unknown(
                path, "this JSON has neither a 'training' list (MSD) nor 'channel_names' (nnU-Net)"
            )
        return kind
    if suffix == ".csv":
        return "csv"
    return "file"


# -- reading -----------------------------------------------------------------------------------------
def read_dataset(path: str | Path, fmt: str | None = None) -> Dataset:
    """Read a dataset as it was downloaded -> :class:`Dataset` (format, cases, label table, channels).

    Args:
        path: the dataset folder (or its ``dataset.json``, a CSV, a volume file).
        fmt: one of :data:`KNOWN_FORMATS`; None: :func:`detect_format`.

    Per-case problems (a missing channel, label or mask file) do not raise: they are listed in each
    :attr:`Case.problems` (and :attr:`Dataset.problems`) for the caller to skip or report.

    Raises:
        DataError: unknown format or layout, a malformed ``dataset.json``, no case at all.
    """
    path = Path(os.path.expanduser(str(path)))
    if fmt is None:
        fmt = detect_format(path)
    elif fmt not in KNOWN_FORMATS:
        raise DataError(f"unknown dataset format {fmt!r}; the known ones are {', '.join(KNOWN_FORMATS)}")
    if not path.exists():
        raise DataError(f"data path {path} does not exist; pass a dataset folder, a dataset.json or a CSV")
    readers = {
        "nnunet": _read_nnunet,
        "btcv": _read_btcv,
        "totalsegmentator": lambda p: _read_masks(p, "totalsegmentator"),
        "abdomenatlas": lambda p: _read_masks(p, "abdomenatlas"),
    }
    if fmt in readers:
        return readers[fmt](path)
    return _read_plain(path, fmt)


def _read_plain(path: Path, fmt: str) -> Dataset:
    """msd / folder / dicom / csv / file: :func:`~anatssl.data.manifest.discover_plain`'s items."""
    if fmt == "msd" and path.is_dir() and not (path / "dataset.json").is_file():
        raise DataError(f"--format msd: {path} has no dataset.json")
    items = discover_plain(path)
    labels = None
    channel_names = None
    if fmt == "msd":
        json_path = path / "dataset.json" if path.is_dir() else path
        doc = read_json(json_path, "dataset")
        if isinstance(doc, dict):
            if doc.get("labels"):
                labels = parse_label_map(doc["labels"], str(json_path))
            channel_names = _channel_names(doc.get("modality"), json_path, "modality")
    cases = [
        Case(
            name=_stem(it.image),
            images=it.files,
            label=it.label,
            landmarks=it.landmarks,
            fields=dict(it.fields),
        )
        for it in items
    ]
    root = path if path.is_dir() else path.parent
    return Dataset(format=fmt, root=root, cases=cases, labels=labels, channel_names=channel_names)


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _channel_names(raw: Any, where: Path, key: str) -> tuple[str, ...] | None:
    """``{"0": "T1", "1": "T2"}`` -> ("T1", "T2"); keys must be 0..C-1."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise DataError(f'{where}: \'{key}\' must be a mapping like {{"0": "T1", "1": "T2"}}, got {raw!r}')
    try:
        idx = sorted(int(k) for k in raw)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: '{key}' keys must be channel indices 0, 1, ...; got {sorted(raw)}") from e
    if idx != list(range(len(idx))):
        raise DataError(f"{where}: '{key}' keys must be 0..{len(idx) - 1} without gaps; got {idx}")
    return tuple(str(raw[str(i)] if str(i) in raw else raw[i]) for i in idx)


def _nnunet_labels(raw: Any, where: Path) -> dict[int, str]:
    """nnU-Net v2 ``labels`` (name -> int; region lists are not supported) -> {value: name}."""
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{where}: 'labels' must be a mapping of structure name -> integer value")
    out: dict[int, str] = {}
    for name, value in raw.items():
        if isinstance(value, list | tuple):
            raise DataError(
                f"{where}: label {name!r} is the region {value}; region-based nnU-Net labels are not "
                "supported, give each structure one integer value"
            )
        if isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            # v1 style {"0": "background"}: value -> name
            if str(name).isdigit():
                out[int(name)] = str(value)
                continue
            raise DataError(f"{where}: label {name!r} has value {value!r}; expected an integer")
        out[value] = str(name)
    out.setdefault(0, "background")
    return dict(sorted(out.items()))


def _read_nnunet(path: Path) -> Dataset:
    json_path = path / "dataset.json" if path.is_dir() else path
    root = json_path.parent
    doc = read_json(json_path, "dataset")
    if not isinstance(doc, dict):
        raise DataError(f"{json_path}: an nnU-Net dataset.json is a JSON object")
    names = _channel_names(doc.get("channel_names", doc.get("modality")), json_path, "channel_names")
    if names is None:
        raise DataError(
            f'{json_path}: no \'channel_names\' (e.g. {{"0": "CT"}}); nnU-Net v2 needs one entry per '
            "input channel"
        )
    ending = doc.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise DataError(f"{json_path}: 'file_ending' must be a suffix like '.nii.gz', got {ending!r}")
    labels = _nnunet_labels(doc["labels"], json_path) if "labels" in doc else None
    cases = _nnunet_cases(root / "imagesTr", root / "labelsTr", names, ending, labels is not None)
    if not cases:
        raise DataError(
            f"{root}: imagesTr/ holds no files named {{case}}_0000{ending}; an nnU-Net v2 raw dataset "
            "has imagesTr/{case}_{channel:04d}" + ending
        )
    n = doc.get("numTraining")
    if isinstance(n, int) and n != len(cases):
        log.warning(
            "%s: numTraining is %d but imagesTr/ holds %d cases; using the files", json_path, n, len(cases)
        )
    test = _nnunet_cases(root / "imagesTs", root / "labelsTs", names, ending, False)
    return Dataset("nnunet", root, cases, labels=labels, channel_names=names, test_cases=test)


_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def _nnunet_cases(
    images: Path, labels: Path, names: tuple[str, ...], ending: str, labelled: bool
) -> list[Case]:
    if not images.is_dir():
        return []
    found: dict[str, set[int]] = {}
    for p in sorted(images.iterdir()):
        if not p.is_file() or p.name.startswith(".") or not p.name.endswith(ending):
            continue
        m = _CHANNEL_FILE.match(p.name[: -len(ending)])
        if m is None:
            log.warning("%s: not named {case}_{channel:04d}%s; ignored", p, ending)
            continue
        found.setdefault(m["case"], set()).add(int(m["ch"]))
    cases = []
    for name in sorted(found):
        files = tuple(images / f"{name}_{c:04d}{ending}" for c in range(len(names)))
        problems = [
            f"case {name}: channel {c} ({names[c]}) file {f} is missing"
            for c, f in enumerate(files)
            if c not in found[name]
        ]
        extra = sorted(c for c in found[name] if c >= len(names))
        if extra:
            problems.append(
                f"case {name}: {images}/{name}_{extra[0]:04d}{ending} is channel {extra[0]}, but "
                f"dataset.json's channel_names lists {len(names)} channel(s) {list(names)}"
            )
        label: Path | None = labels / f"{name}{ending}"
        if label is not None and not label.is_file():
            if labelled:
                problems.append(f"case {name}: label file {label} is missing")
            label = None
        cases.append(Case(name=name, images=files, label=label, problems=tuple(problems)))
    return cases


_BTCV_IMAGE = re.compile(r"^img(?P<id>\w+?)\.nii(\.gz)?$")


def _read_btcv(path: Path) -> Dataset:
    img, lab = path / "img", path / "label"
    cases = []
    for p in sorted(img.iterdir()) if img.is_dir() else []:
        m = _BTCV_IMAGE.match(p.name)
        if m is None or not p.is_file():
            continue
        case_id = m["id"]
        label = next(
            (
                lab / f"label{case_id}{e}"
                for e in (".nii.gz", ".nii")
                if (lab / f"label{case_id}{e}").is_file()
            ),
            None,
        )
        problems = (
            ()
            if label is not None
            else (f"case img{case_id}: label file {lab}/label{case_id}.nii.gz is missing",)
        )
        cases.append(Case(name=f"img{case_id}", images=(p,), label=label, problems=problems))
    if not cases:
        raise DataError(f"{path}: img/ holds no imgXXXX.nii.gz files; a BTCV folder has img/ and label/")
    return Dataset("btcv", path, cases, labels=dict(BTCV_LABELS))


BTCV_LABELS: dict[int, str] = {
    0: "background",
    1: "spleen",
    2: "right_kidney",
    3: "left_kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior_vena_cava",
    10: "portal_and_splenic_vein",
    11: "pancreas",
    12: "right_adrenal_gland",
    13: "left_adrenal_gland",
}
"""BTCV's 13 organs (Landman et al. 2015, the Synapse challenge's label ids; the ``labels`` of MONAI's
and Swin-UNETR's BTCV dataset.json)."""


def _mask_name(p: Path) -> str | None:
    for ext in (".nii.gz", ".nii"):
        if p.name.endswith(ext) and not p.name.startswith("."):
            return p.name[: -len(ext)]
    return None


def mask_table(names: set[str] | list[str]) -> dict[int, str]:
    """The merged label table: 0 background, then the sorted structure names as ids 1..K."""
    return {0: "background", **{i: n for i, n in enumerate(sorted(set(names)), start=1)}}


def _read_masks(path: Path, fmt: str) -> Dataset:
    dirs = _mask_cases(path)
    if not dirs:
        raise DataError(
            f"{path}: no case folders holding ct.nii.gz and segmentations/; a {fmt} folder has "
            "<case>/ct.nii.gz and <case>/segmentations/<structure>.nii.gz"
        )
    per_case: dict[Path, dict[str, Path]] = {}
    for d in dirs:
        masks = {}
        for p in sorted((d / "segmentations").iterdir()):
            name = _mask_name(p)
            if name is not None and p.is_file():
                masks[name] = p
        per_case[d] = masks
    table = mask_table({n for m in per_case.values() for n in m})
    if len(table) == 1:
        raise DataError(f"{path}: the segmentations/ folders hold no <structure>.nii.gz masks")
    by_name = {n: i for i, n in table.items() if i > 0}
    cases = []
    for d in dirs:
        ct = _ct_file(d)
        assert ct is not None
        masks = per_case[d]
        names = tuple(n for n in sorted(by_name))
        missing = [n for n in names if n not in masks]
        problems = tuple(
            f"case {d.name}: mask {d / 'segmentations' / (n + '.nii.gz')} is missing (other cases have "
            f"'{n}'; every case needs every structure's mask)"
            for n in missing
        )
        label = MaskSet(
            folder=d / "segmentations",
            names=names,
            ids=tuple(by_name[n] for n in names),
            masks=tuple(masks.get(n, d / "segmentations" / f"{n}.nii.gz") for n in names),
        )
        cases.append(Case(name=d.name, images=(ct,), label=label, problems=problems))
    return Dataset(fmt, path, cases, labels=table)


# -- merged label maps (mask layouts) -----------------------------------------------------------------
def merge_masks(case: Case, max_voxels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A mask case -> (label map (X, Y, Z) int16 on the CT's stored grid, the CT's affine).

    Every mask must exist, lie on the CT's grid (shape, and affine within 0.01 mm) and hold only 0 and
    1; later ids in the table win where masks overlap.

    Raises:
        DataError: naming the case and the file: a missing mask, one on another grid, non-binary values.
    """
    import nibabel as nib

    from anatssl.data.header import DEFAULT_MAX_VOXELS, GRID_TOLERANCE_MM, check_header

    if not isinstance(case.label, MaskSet):
        raise ValueError(f"case {case.name} has no mask set to merge")
    ms = case.label
    ct = check_header(case.image, "image", max_voxels or DEFAULT_MAX_VOXELS)
    if ct is None:
        raise DataError(f"case {case.name}: {case.image} is not a NIfTI file")
    shape = tuple(ct.shape[:3])
    out = np.zeros(shape, dtype=np.int16)
    for name, sid, p in zip(ms.names, ms.ids, ms.masks):
        if not p.is_file():
            raise DataError(f"case {case.name}: mask {p} ('{name}') is missing; re-download the case")
        try:
            img = nib.load(str(p))
            mshape = tuple(int(s) for s in img.shape)  # type: ignore[attr-defined]
            affine = np.asarray(img.affine, dtype=np.float64)  # type: ignore[attr-defined]
        except Exception as e:
            raise DataError(f"case {case.name}: cannot read mask {p}: {type(e).__name__}: {e}") from e
        if mshape[:3] != shape or len(mshape) > 3 and int(np.prod(mshape[3:])) != 1:
            raise DataError(
                f"case {case.name}: mask {p} has shape {mshape} but its CT {case.image} has "
                f"{tuple(ct.shape)}; a mask must lie on its CT's voxel grid"
            )
        err = float(np.abs(affine - ct.affine).max())
        if err > GRID_TOLERANCE_MM:
            raise DataError(
                f"case {case.name}: mask {p} and its CT {case.image} have different voxel->world affines "
                f"(max difference {err:.3g} mm); a mask must lie on its CT's voxel grid"
            )
        arr = np.asanyarray(img.dataobj).reshape(shape)  # type: ignore[attr-defined]
        values = np.unique(arr)
        if not np.isin(values, (0, 1)).all():
            bad = [v.item() for v in values if v not in (0, 1)][:5]
            raise DataError(
                f"case {case.name}: mask {p} holds values {bad}; a structure mask holds 0 and 1 only"
            )
        out[arr > 0] = sid
    return out, ct.affine


def _stats(paths: list[Path]) -> list[list[int]]:
    return [[p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def table_key(labels: dict[int, str]) -> str:
    return hashlib.sha1(json.dumps(sorted(labels.items())).encode()).hexdigest()[:12]


def merged_label_path(dataset: Dataset, case: Case, cache_dir: str | Path) -> Path:
    """Where :func:`write_merged_label` puts ``case``'s merged label map: under ``cache_dir`` (the
    data's cache folder, :func:`anatssl.data.source.choose_cache_dir`), one folder per label table."""
    return Path(cache_dir) / f"merged-labels-{table_key(dataset.labels or {})}" / f"{case.name}.nii.gz"


def write_merged_label(
    dataset: Dataset, case: Case, cache_dir: str | Path, max_voxels: int | None = None
) -> Path:
    """``case``'s masks merged into one label map file (written once, rebuilt when a mask or the CT
    changes: their (size, mtime) are recorded beside it) -> its path.

    Raises:
        DataError: from :func:`merge_masks`, naming the case and the file.
    """
    import gzip

    import nibabel as nib

    from anatssl.data.cache import _atomic_write

    if not isinstance(case.label, MaskSet):
        raise ValueError(f"case {case.name} has no mask set to merge")
    out = merged_label_path(dataset, case, cache_dir)
    record = out.with_name(out.name[: -len(".nii.gz")] + ".json")
    sources = [case.image, *case.label.masks]
    try:
        stats = _stats(sources)
    except OSError:
        stats = None  # a missing file: merge_masks names it
    if stats is not None and out.is_file():
        try:
            if json.loads(record.read_text()).get("sources") == stats:
                return out
        except (OSError, ValueError):
            pass
    label, affine = merge_masks(case, max_voxels)
    out.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(label, affine)
    data = gzip.compress(img.to_bytes(), compresslevel=1)
    _atomic_write(out, lambda f: f.write(data))
    _atomic_write(record, lambda f: f.write(json.dumps({"sources": stats}).encode()))
    log.debug("case %s: merged %d masks into %s", case.name, len(case.label.masks), out)
    return out
