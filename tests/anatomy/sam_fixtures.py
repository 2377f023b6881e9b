"""Helpers for SAM tests: a real NIfTI phantom and a real (randomly initialised) SAM run directory."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from anatssl.config import pretrain_config_to_dict, save_yaml
from anatssl.engine.checkpoint import FORMAT, VERSION, atomic_torch_save
from anatssl.methods import build_method
from anatssl.runs import load_pretrain_config


def write_phantom(
    path: Path,
    seed: int = 0,
    shape: tuple[int, int, int] = (40, 36, 44),
    spacing: tuple[float, float, float] = (4.0, 4.0, 4.0),
    shift: float = 0.0,
) -> Path:
    """A blobby CT-like phantom (HU) in air, saved as NIfTI (RAS affine)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.7) ** 2 < 1
    hu = np.where(body, 40.0 + 300 * np.sin(4 * x + shift) * np.cos(3 * y + 2 * z), -1000.0)
    hu += rng.normal(0, 5, shape)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-shape[0] * spacing[0] / 2, -shape[1] * spacing[1] / 2, -shape[2] * spacing[2] / 2]
    nib.save(nib.Nifti1Image(hu.astype(np.float32), affine), str(path))
    return path


def make_sam_run(root: Path, seed: int = 0, method: str = "sam", **over: str) -> Path:
    """A run directory laid out as the engine writes it: config.yaml + checkpoints/last.pt."""
    overrides = ["sam.width=4", "sam.embed_dim=16", "sam.crop_size=[32,32,32]"] if method == "sam" else []
    overrides += [f"{k}={v}" for k, v in over.items()]
    cfg = load_pretrain_config(method, "tiny", None, overrides)
    torch.manual_seed(seed)
    m = build_method(cfg)
    root.mkdir(parents=True, exist_ok=True)
    save_yaml(pretrain_config_to_dict(cfg), root / "config.yaml")
    atomic_torch_save(
        {
            "format": FORMAT,
            "version": VERSION,
            "step": 0,
            "method": method,
            "config": pretrain_config_to_dict(cfg),
            "model": m.state_dict(),
        },
        root / "checkpoints" / "last.pt",
    )
    return root
