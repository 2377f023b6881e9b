"""``write_dataset``: write N synthetic subjects as an MSD-style dataset folder.

Layout (what ``anatssl synth`` writes)::

    DIR/dataset.json               name, modality {"0": "CT"}, labels, numTraining, training[...]
    DIR/imagesTr/synth_000.nii.gz  int16 HU, RAS, affine diag(spacing) + origin
    DIR/labelsTr/synth_000.nii.gz  uint8 organ labels, same grid and affine
    DIR/landmarks/synth_000.json   {name: [x, y, z]} world mm

Subject ``i`` is built from seed ``subject_seed(seed, i)``, so ``n=8`` and ``n=4`` share their first 4
subjects, and its lesion flag (with ``lesions=p``) comes from a separate stream of ``(seed, i)``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from anatssl import __version__
from anatssl.data.synthetic.labels import LABELS, LANDMARK_STRUCTURES
from anatssl.data.synthetic.subject import REGIONS, SyntheticSubject, check_grid, make_subject
from anatssl.errors import ConfigError, DataError

SUBFOLDERS: tuple[str, ...] = ("imagesTr", "labelsTr", "landmarks")
PREFIX = "synth_"


def subject_seed(seed: int, index: int) -> int:
    """Seed of subject ``index`` of a dataset drawn with ``seed`` (independent of the dataset size)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def lesion_flag(seed: int, index: int, p: float) -> bool:
    """Whether subject ``index`` gets lesions when a fraction ``p`` should (own stream of (seed, index))."""
    return bool(np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 1])).random() < p)


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path, dtype: type) -> None:
    """Write ``array`` (X, Y, Z) with ``affine`` as NIfTI-1 (qform and sform = scanner, units mm)."""
    img = nib.Nifti1Image(np.asarray(array).astype(dtype), affine)
    img.header.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    tmp = path.with_name(path.name + ".part.nii.gz")
    nib.save(img, tmp)
    tmp.replace(path)


def write_subject(subject: SyntheticSubject, out: Path, case_id: str) -> dict[str, object]:
    """Write one subject's image, label and landmarks; returns its ``training`` entry."""
    save_nifti(subject.image_hu, subject.affine, out / "imagesTr" / f"{case_id}.nii.gz", np.int16)
    save_nifti(subject.label, subject.affine, out / "labelsTr" / f"{case_id}.nii.gz", np.uint8)
    (out / "landmarks" / f"{case_id}.json").write_text(json.dumps(subject.landmarks, indent=1))
    return {
        "image": f"./imagesTr/{case_id}.nii.gz",
        "label": f"./labelsTr/{case_id}.nii.gz",
        "landmarks": f"./landmarks/{case_id}.json",
    }


def check_request(
    n: int,
    seed: int,
    size: int | Sequence[int],
    spacing: float | Sequence[float] | None,
    region: str,
    lesions: float | None,
    out: str | Path,
    overwrite: bool,
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Validate every argument of :func:`write_dataset` without writing anything; returns the grid
    (size, spacing). Bad values raise ConfigError, an occupied ``out`` (without ``overwrite``)
    DataError."""
    check_count_and_seed(n, seed)
    grid = check_grid(size, spacing)
    if region not in REGIONS:
        raise ConfigError(f"region {region!r} is not one of {', '.join(REGIONS)}")
    if lesions is not None and not (0.0 <= float(lesions) <= 1.0):
        raise ConfigError(f"lesions must be a fraction in [0, 1], got {lesions!r}")
    check_output_folder(out, overwrite)
    return grid


def check_count_and_seed(n: int, seed: int) -> None:
    """``n`` a positive number of subjects and ``seed`` a non-negative integer (ConfigError otherwise)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"n must be a positive number of subjects, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")


def check_output_folder(out: str | Path, overwrite: bool) -> Path:
    """``out`` is a folder a generated dataset may be written to: not a file, and empty unless
    ``overwrite`` (DataError before anything is written)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"output {out} is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(
            f"output folder {out} exists and is not empty; pass --overwrite (overwrite=True) to replace "
            "the synthetic dataset in it, or choose another folder (nothing was written)"
        )
    return out


def _prepare_out(out: Path) -> None:
    if out.is_dir() and any(out.iterdir()):
        # Remove only what a previous `anatssl synth` wrote, never other files in the folder.
        for sub in SUBFOLDERS:
            for f in (out / sub).glob(f"{PREFIX}*"):
                if f.is_file():
                    f.unlink()
        if (out / "dataset.json").is_file():
            (out / "dataset.json").unlink()
    for sub in SUBFOLDERS:
        (out / sub).mkdir(parents=True, exist_ok=True)


def write_dataset(
    out: str | Path,
    n: int,
    seed: int = 0,
    size: int | Sequence[int] = 96,
    spacing: float | Sequence[float] | None = None,
    region: str = "both",
    lesions: float | None = None,
    overwrite: bool = False,
    on_subject: Callable[[int, float, float], None] | None = None,
) -> dict[str, object]:
    """Write ``n`` subjects to ``out`` and return the ``dataset.json`` content.

    ``lesions``: fraction of subjects that get liver/kidney lesions (entries then carry ``lesion``
    0/1, and ``dataset.json`` a ``classes`` note); None leaves the field out. ``on_subject(i, t_make,
    t_write)`` is called after each subject (the CLI's progress bar). Bad arguments raise ConfigError,
    an occupied ``out`` (without ``overwrite``) DataError, before anything is written.
    """
    sz, sp = check_request(n, seed, size, spacing, region, lesions, out, overwrite)
    out = Path(out)
    _prepare_out(out)

    width = max(3, len(str(n - 1)))
    training: list[dict[str, object]] = []
    landmark_names: set[str] = set()
    for i in range(n):
        case_id = f"{PREFIX}{i:0{width}d}"
        s_seed = subject_seed(seed, i)
        want_lesion = lesions is not None and lesion_flag(seed, i, float(lesions))
        t0 = time.perf_counter()
        subject = make_subject(s_seed, size=sz, spacing=sp, region=region, lesion=want_lesion)
        t1 = time.perf_counter()
        entry = write_subject(subject, out, case_id)
        t2 = time.perf_counter()
        if lesions is not None:
            entry["lesion"] = int(subject.meta["lesion"])  # type: ignore[call-overload]
        entry.update({"seed": s_seed, "region": subject.meta["region"], "contrast": subject.meta["contrast"]})
        training.append(entry)
        landmark_names.update(subject.landmarks)
        if on_subject is not None:
            on_subject(i, t1 - t0, t2 - t1)

    dataset: dict[str, object] = {
        "name": "anatssl-synthetic",
        "description": "Procedural CT-like torso phantoms with organ labels and landmarks (anatssl synth)",
        "reference": "anatssl docs/data.md, section 'Synthetic anatomy'",
        "licence": "CC0-1.0",
        "release": __version__,
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in LABELS.items()},
        "landmarks": {k: LANDMARK_STRUCTURES[k] for k in LANDMARK_STRUCTURES if k in landmark_names},
        "numTraining": n,
        "numTest": 0,
        "training": training,
        "test": [],
        "synthetic": {
            "seed": int(seed),
            "size": list(sz),
            "spacing": [round(v, 6) for v in sp],
            "region": region,
            "lesions": None if lesions is None else float(lesions),
            "generator": f"anatssl {__version__}",
        },
    }
    if lesions is not None:
        dataset["classes"] = {"lesion": {"0": "no lesion", "1": "lesion(s) in the liver or a kidney"}}
    tmp = out / "dataset.json.part"
    tmp.write_text(json.dumps(dataset, indent=2))
    tmp.replace(out / "dataset.json")
    return dataset
