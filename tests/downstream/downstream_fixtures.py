"""Helpers for downstream tests: a tiny labelled NIfTI dataset, a fabricated pretraining run."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np


def write_labelled_dataset(
    root: Path, n: int = 5, size: int = 40, seed: int = 0, lesion: bool = False
) -> Path:
    """``root/dataset.json`` + imagesTr/labelsTr: labels 1 ("liver") and 2 ("kidney") as spheres."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    g = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).astype(np.float32)
    entries = []
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    for i in range(n):
        img = np.full((size,) * 3, -1000.0, np.float32)
        lab = np.zeros((size,) * 3, np.int16)
        body = np.linalg.norm(g - size / 2, axis=-1) < size * 0.45
        img[body] = 40.0
        c1 = size * np.array([0.35, 0.5, 0.5]) + rng.uniform(-2, 2, 3)
        c2 = size * np.array([0.68, 0.45, 0.5]) + rng.uniform(-2, 2, 3)
        s1 = np.linalg.norm(g - c1, axis=-1) < size * rng.uniform(0.14, 0.18)
        s2 = np.linalg.norm(g - c2, axis=-1) < size * rng.uniform(0.08, 0.11)
        img[s1], lab[s1] = 120.0, 1
        img[s2], lab[s2] = 250.0, 2
        cls = int(i % 2) if lesion else 0
        if cls:
            les = np.linalg.norm(g - c1, axis=-1) < size * 0.06
            img[les] = -50.0
        img += rng.normal(0, 15, img.shape).astype(np.float32)
        nib.save(nib.Nifti1Image(img, affine), str(root / "imagesTr" / f"case_{i:03d}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, affine), str(root / "labelsTr" / f"case_{i:03d}.nii.gz"))
        entries.append(
            {
                "image": f"./imagesTr/case_{i:03d}.nii.gz",
                "label": f"./labelsTr/case_{i:03d}.nii.gz",
                "lesion": cls,
            }
        )
    doc = {"name": "tiny", "labels": {"0": "background", "1": "liver", "2": "kidney"}, "training": entries}
    (root / "dataset.json").write_text(json.dumps(doc))
    return root


def fabricate_run(run: Path, method: str = "swinssl", overrides: tuple[str, ...] = (), seed: int = 0) -> Path:
    """A pretraining run directory in the engine's layout, from a freshly built (untrained) method."""
    import torch

    from anatssl.config import pretrain_config_to_dict, save_yaml
    from anatssl.engine.checkpoint import FORMAT, VERSION
    from anatssl.methods import build_method
    from anatssl.runs import load_pretrain_config

    cfg = load_pretrain_config(method, "tiny", overrides=list(overrides))
    torch.manual_seed(seed)
    m = build_method(cfg)
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_yaml(pretrain_config_to_dict(cfg), run / "config.yaml")
    torch.save(
        {
            "format": FORMAT,
            "version": VERSION,
            "model": m.state_dict(),
            "step": 3,
            "config": pretrain_config_to_dict(cfg),
        },
        run / "checkpoints" / "last.pt",
    )
    return run
