"""Labelled datasets for fine-tuning: an MSD-style ``dataset.json`` read into cases + a fixed split.

``dataset.json`` (Medical Segmentation Decathlon / nnU-Net layout, as ``anatssl synth`` writes it)::

    {"labels": {"0": "background", "1": "liver", ...},          # or {"background": 0, ...}
     "training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz", "class": 1}, ...]}

Paths are relative to the file. The layouts users download (nnU-Net v2 raw, BTCV, TotalSegmentator,
AbdomenAtlas: :mod:`anatssl.data.layouts`, docs/layouts.md) are read as they come: detected, or named
by ``fmt`` (``--format``). Their cases with a problem (a channel, label or mask file missing or bad) are
dropped with a warning naming the case and the file; TotalSegmentator / AbdomenAtlas masks are merged
once per case into a label map in the data's cache folder.

The held-out test set is fixed by ``split.split_seed`` and ``split.n_test`` (not the training seed), so
every method and every seed of a benchmark is scored on the same volumes; validation volumes
(``split.n_val``) come next in the same shuffle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anatssl.data.header import DEFAULT_MAX_VOXELS, check_header, check_label_grid, read_header
from anatssl.data.jsonfile import read_json
from anatssl.data.layouts import parse_label_map
from anatssl.downstream.config import SplitConfig
from anatssl.errors import DataError

log = logging.getLogger("anatssl")


@dataclass
class LabelledCase:
    name: str
    image: Path
    label: Path | None = None
    landmarks: Path | None = None
    """A landmarks JSON (``{name: [x, y, z]}`` world mm), if the entry names one."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Other fields of the ``dataset.json`` entry (e.g. ``class`` for classification)."""
    channels: tuple[Path, ...] = ()
    """A multi-file case's channel files in channel order (``image`` is the first); empty: one file."""

    @property
    def files(self) -> tuple[Path, ...]:
        """The image files, in channel order."""
        return self.channels if self.channels else (self.image,)


def case_channels(case: LabelledCase) -> int:
    """Input channels of a case: its channel files, or a 4D NIfTI's 4th axis (from the header)."""
    if case.channels:
        return len(case.channels)
    header = read_header(case.image)
    if header is not None and len(header.shape) >= 4:
        return int(np.prod(header.shape[3:]))
    return 1


def check_channels(cases: list[LabelledCase], in_channels: int, data: str | Path) -> None:
    """Every case must have ``model.in_channels`` channels; else a DataError saying what to set."""
    counts: dict[int, str] = {}
    for c in cases:
        counts.setdefault(case_channels(c), c.name)
    if set(counts) != {in_channels}:
        listing = ", ".join(f"{n} (e.g. {name})" for n, name in sorted(counts.items()))
        hint = f"set model.in_channels={max(counts)}" if len(counts) == 1 else "give every case one count"
        raise DataError(
            f"{data}: the images have {listing} channel(s) but model.in_channels is {in_channels}; {hint}"
        )


def _manifest_path(data: str | Path) -> Path:
    data = Path(data)
    path = data / "dataset.json" if data.is_dir() else data
    if not path.is_file():
        raise DataError(
            f"{data}: no dataset.json found; fine-tuning needs a labelled MSD-style dataset.json "
            "(make one with `anatssl synth --out DIR`, or write training: [{image, label}, ...])"
        )
    return path


def _case_name(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".npy"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def read_labelled_dataset(
    data: str | Path,
    need_labels: bool = True,
    fmt: str | None = None,
    cache_dir: str | Path | None = None,
    max_voxels: int | None = None,
) -> tuple[list[LabelledCase], dict[int, str]]:
    """-> (cases in file order, label map). ``need_labels``: every case must have a label file.

    ``fmt``: a layout of :data:`anatssl.data.layouts.KNOWN_FORMATS` (None: detected); ``cache_dir``:
    where merged mask label maps go (None: the data's cache folder, as for pretraining)."""
    from anatssl.data import layouts

    if fmt is not None and fmt not in ("msd", *layouts.DOWNLOAD_FORMATS):
        raise DataError(
            f"--format {fmt} has no labels; fine-tuning reads msd, {', '.join(layouts.DOWNLOAD_FORMATS)}"
        )
    if fmt in layouts.DOWNLOAD_FORMATS or (fmt is None and layouts.is_download_layout(Path(data))):
        return _from_layout(layouts.read_dataset(data, fmt), need_labels, cache_dir, max_voxels)
    path = _manifest_path(data)
    doc = read_json(path, "dataset")
    if not isinstance(doc, dict):
        raise DataError(f"dataset {path} must be a JSON object with a 'training' list")
    entries = doc.get("training")
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: 'training' must be a non-empty list of {{image, label}} entries")
    label_map = parse_label_map(doc.get("labels"), str(path)) if need_labels else {}
    cases = []
    for i, raw in enumerate(entries):
        entry = {"image": raw} if isinstance(raw, str) else raw
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(f"{path}: training[{i}] has no 'image'")
        image = (path.parent / entry["image"]).resolve()
        if not image.is_file():
            raise DataError(f"{path}: training[{i}] image {image} does not exist")
        label = None
        if entry.get("label"):
            label = (path.parent / entry["label"]).resolve()
            if not label.is_file():
                raise DataError(f"{path}: training[{i}] label {label} does not exist")
        elif need_labels:
            raise DataError(
                f"{path}: training[{i}] ({image.name}) has no 'label'; segmentation fine-tuning needs a label"
                " map for every training volume (remove unlabelled entries or give their label files)"
            )
        landmarks = (
            (path.parent / entry["landmarks"]).resolve() if isinstance(entry.get("landmarks"), str) else None
        )
        extra = {k: v for k, v in entry.items() if k not in ("image", "label", "landmarks")}
        cases.append(
            LabelledCase(name=_case_name(image), image=image, label=label, landmarks=landmarks, extra=extra)
        )
    return cases, label_map


def _from_layout(
    ds: Any, need_labels: bool, cache_dir: str | Path | None, max_voxels: int | None
) -> tuple[list[LabelledCase], dict[int, str]]:
    """A downloaded layout's cases (:class:`anatssl.data.layouts.Dataset`) -> labelled cases; the cases
    with a problem are dropped with a warning; masks are merged into label map files."""
    from anatssl.data.layouts import MaskSet, write_merged_label
    from anatssl.data.source import choose_cache_dir

    if ds.labels is None and need_labels:
        raise DataError(f"{ds.root}: this {ds.format} dataset has no label table; fine-tuning needs labels")
    cases: list[LabelledCase] = []
    dropped: list[str] = []
    merged_into: Path | None = None
    for c in ds.cases:
        problem = c.problems[0] if c.problems else None
        label = c.label if isinstance(c.label, Path) else None
        if problem is None and isinstance(c.label, MaskSet):
            if merged_into is None:
                merged_into = Path(cache_dir) if cache_dir is not None else choose_cache_dir(ds.root, None)
            try:
                label = write_merged_label(ds, c, merged_into, max_voxels)
            except DataError as e:
                problem = str(e)
        if problem is None and label is None and need_labels:
            problem = f"case {c.name}: no label file"
        if problem is not None:
            log.warning("skipping case %s: %s", c.name, problem)
            dropped.append(problem)
            continue
        cases.append(
            LabelledCase(
                name=c.name,
                image=c.images[0],
                label=label,
                landmarks=c.landmarks,
                extra=dict(c.fields),
                channels=c.images if len(c.images) > 1 else (),
            )
        )
    if merged_into is not None and cases:
        log.info(
            "%s: %d cases' masks merged into label maps under %s (label ids: sorted structure names, 1..%d)",
            ds.root,
            len(cases),
            merged_into,
            len(ds.labels or {}) - 1,
        )
    if dropped:
        log.warning(
            "%d of %d cases skipped (listed above); fine-tuning on the other %d",
            len(dropped),
            len(ds.cases),
            len(cases),
        )
    if not cases:
        raise DataError(
            f"{ds.root}: none of the {len(ds.cases)} cases can be used:\n  " + "\n  ".join(dropped[:5])
        )
    return cases, dict(ds.labels or {})


def check_case_files(
    cases: list[LabelledCase], max_voxels: int = DEFAULT_MAX_VOXELS, labels: bool = True
) -> None:
    """From the headers, before any volume is decoded: each image's (and label's) voxel count and affine,
    and each label on its image's grid (shape and affine within 0.01 mm): :mod:`anatssl.data.header`.
    ``labels=False``: images only (classification does not read the label maps).

    Fine-tuning refuses such a dataset rather than skipping the case: the fixed split would change."""
    for c in cases:
        for f in c.files:
            if c.label is None or not labels:
                check_header(f, "image", max_voxels)
            else:  # every channel file on the label's grid, hence on one grid
                check_label_grid(f, c.label, max_voxels)


def check_label_values(
    cases: list[LabelledCase], label_map: dict[int, str], max_voxels: int = DEFAULT_MAX_VOXELS
) -> None:
    """Every label file holds only values of the label map (else DataError naming file and values);
    :func:`check_case_files` first."""
    import nibabel as nib

    check_case_files(cases, max_voxels)
    allowed = set(label_map)
    for c in cases:
        if c.label is None:
            continue
        try:
            arr = np.asanyarray(nib.load(str(c.label)).dataobj)  # type: ignore[attr-defined]
        except Exception as e:
            raise DataError(f"label file {c.label} could not be read: {e}") from e
        values = np.unique(arr)
        if not np.all(np.equal(np.mod(values, 1), 0)):
            raise DataError(f"label file {c.label} holds non-integer values; a label map must be integer")
        bad = sorted(int(v) for v in values if int(v) not in allowed)
        if bad:
            raise DataError(
                f"label file {c.label} holds values {bad} that dataset.json's 'labels' does not name "
                f"(it names {sorted(allowed)}); fix the label map or the label file"
            )


@dataclass
class Split:
    """The fixed split of a labelled dataset: training (the first ``labeled`` of the pool), validation,
    test. The three never share a case."""

    train: list[LabelledCase]
    val: list[LabelledCase]
    test: list[LabelledCase]


def take_labeled(pool: list[Any], split: SplitConfig, total: int, held: str) -> list[Any]:
    """The ``--labeled`` rule shared by both splits: training takes the first ``split.labeled`` of the
    ordered pool (all of it when ``None``), so a larger ``labeled`` contains a smaller one.

    ``total``: labelled volumes before the split; ``held``: what was held out, for the error.
    """
    if split.labeled is None:
        return pool
    if split.labeled > len(pool):
        raise DataError(
            f"--labeled {split.labeled} is larger than the labelled training pool: {total} labelled "
            f"volumes minus {held} = {len(pool)}; use --labeled <= {len(pool)}"
        )
    return pool[: split.labeled]


def split_dataset(cases: list[LabelledCase], split: SplitConfig) -> Split:
    """Shuffle once with ``split_seed``: the first ``n_test`` are the test set, the next ``n_val`` the
    validation set, the rest the pool; training takes the first ``labeled`` of the pool.

    Segmentation's split (and the dense probe's, the benchmark's): one plain shuffle, since every
    volume holds every structure. Classification uses ``classification.stratified_split`` instead, on
    purpose: it must hold each class in the test set (AUC is undefined otherwise) and orders the pool
    by cycling through the classes; both take ``--labeled`` through :func:`take_labeled`.

    The test set depends on ``split_seed`` and ``n_test`` only (not on ``n_val`` or ``labeled``), and a
    larger ``labeled`` contains a smaller one.
    """
    n_val = split.n_val
    if split.n_test + n_val >= len(cases):
        raise DataError(
            f"split.n_test = {split.n_test} and split.n_val = {n_val} leave no training volume out of "
            f"{len(cases)} labelled cases; lower split.n_test / split.n_val or add data"
        )
    order = np.random.default_rng(split.split_seed).permutation(len(cases))
    test = [cases[i] for i in order[: split.n_test]]
    val = [cases[i] for i in order[split.n_test : split.n_test + n_val]]
    pool = [cases[i] for i in order[split.n_test + n_val :]]
    held = f"{split.n_test} held out for testing" + (f" and {n_val} for validation" if n_val else "")
    return Split(train=take_labeled(pool, split, len(cases), held), val=val, test=test)


def split_cases(
    cases: list[LabelledCase], split: SplitConfig
) -> tuple[list[LabelledCase], list[LabelledCase]]:
    """Fixed split -> (training cases, held-out test cases); see :func:`split_dataset`."""
    s = split_dataset(cases, split)
    return s.train, s.test
