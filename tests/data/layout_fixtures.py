"""Tiny fake copies of the dataset layouts users download, written as real NIfTI files (nibabel).

Each builder returns the dataset folder; the volumes are smooth random images with a few box-shaped
structures, so both pretraining (not constant) and fine-tuning (labels present) can run on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (24, 24, 24)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def image(seed: int, shape: tuple[int, ...] = SHAPE, offset: float = 0.0) -> np.ndarray:
    """A CT-like float32 volume (HU-ish values, not constant); ``offset`` tells channels apart."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 50, shape) + offset).astype(np.float32)


def boxes(seed: int, shape: tuple[int, int, int] = SHAPE) -> dict[str, np.ndarray]:
    """Three binary structures (uint8) at seed-dependent places: liver, spleen, aorta."""
    rng = np.random.default_rng(100 + seed)
    out = {}
    for k, name in enumerate(("liver", "spleen", "aorta")):
        m = np.zeros(shape, np.uint8)
        x = int(rng.integers(2, shape[0] - 10))
        m[x : x + 8, 2 + 7 * k : 8 + 7 * k, 4:20] = 1
        out[name] = m
    return out


def label_map(seed: int) -> np.ndarray:
    out = np.zeros(SHAPE, np.uint8)
    for k, m in enumerate(boxes(seed).values(), start=1):
        out[m > 0] = k
    return out


def nnunet(root: Path, n: int = 4, channels: tuple[str, ...] = ("T1", "T2"), n_test: int = 1) -> Path:
    """nnU-Net v2 raw: dataset.json (channel_names, labels name -> int, file_ending), imagesTr/
    {case}_{0000..}.nii.gz, labelsTr/{case}.nii.gz, imagesTs/."""
    doc = {
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": {"background": 0, "liver": 1, "spleen": 2, "aorta": 3},
        "numTraining": n,
        "file_ending": ".nii.gz",
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(doc))
    for i in range(n):
        case = f"case_{i:03d}"
        for c in range(len(channels)):
            save(root / "imagesTr" / f"{case}_{c:04d}.nii.gz", image(10 * i + c, offset=1000.0 * c))
        save(root / "labelsTr" / f"{case}.nii.gz", label_map(i))
    for i in range(n_test):
        for c in range(len(channels)):
            save(root / "imagesTs" / f"test_{i:03d}_{c:04d}.nii.gz", image(900 + c))
    return root


def msd_4d(root: Path, n: int = 3, channels: int = 4) -> Path:
    """MSD Task01 BrainTumour style: one 4D (X, Y, Z, C) NIfTI per case, modality = channel names."""
    names = ("FLAIR", "T1w", "t1gd", "T2w")[:channels]
    training = []
    for i in range(n):
        arr = np.stack([image(10 * i + c, offset=100.0 * c) for c in range(channels)], axis=-1)
        save(root / "imagesTr" / f"BRATS_{i:03d}.nii.gz", arr)
        save(root / "labelsTr" / f"BRATS_{i:03d}.nii.gz", label_map(i))
        training.append(
            {"image": f"./imagesTr/BRATS_{i:03d}.nii.gz", "label": f"./labelsTr/BRATS_{i:03d}.nii.gz"}
        )
    doc = {
        "name": "BRATS",
        "modality": {str(c): nm for c, nm in enumerate(names)},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing", "3": "enhancing"},
        "numTraining": n,
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(doc))
    return root


def btcv(root: Path, n: int = 3) -> Path:
    """BTCV / Synapse: img/img0001.nii.gz + label/label0001.nii.gz."""
    for i in range(1, n + 1):
        save(root / "img" / f"img{i:04d}.nii.gz", image(i))
        save(root / "label" / f"label{i:04d}.nii.gz", label_map(i))
    return root


def mask_layout(root: Path, names: list[str], meta_csv: bool = False) -> Path:
    """TotalSegmentator / AbdomenAtlas: <case>/ct.nii.gz + <case>/segmentations/<structure>.nii.gz."""
    for i, case in enumerate(names):
        save(root / case / "ct.nii.gz", image(i))
        for name, m in boxes(i).items():
            save(root / case / "segmentations" / f"{name}.nii.gz", m)
    if meta_csv:
        (root / "meta.csv").write_text("image_id;age\n" + "".join(f"{c};50\n" for c in names))
    return root


def totalsegmentator(root: Path, n: int = 4) -> Path:
    return mask_layout(root, [f"s{i:04d}" for i in range(n)], meta_csv=True)


def abdomenatlas(root: Path, n: int = 4) -> Path:
    return mask_layout(root, [f"BDMAP_{i:08d}" for i in range(1, n + 1)])
