"""Correspondence evaluation: feature-grid affines by hand, a volume matched against its own copy."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from downstream_fixtures import write_labelled_dataset

from anatssl.config.schema import DataConfig, ModelConfig
from anatssl.downstream.correspondence import evaluate_correspondence, level_affine
from anatssl.downstream.labelled import read_labelled_dataset
from anatssl.models.backbones import build_backbone


def test_level_affine_centres_cells() -> None:
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    aff[:3, 3] = [10.0, 0.0, -5.0]
    a4 = level_affine(aff, 4)
    # cell 0 covers voxels 0..3, centre voxel 1.5 -> world 10 + 2 * 1.5 = 13
    assert np.allclose(a4 @ [0, 0, 0, 1], [13.0, 3.0, -5.0 + 4.5, 1.0])
    assert np.allclose(a4 @ [1, 0, 0, 1], [21.0, 3.0, -0.5, 1.0])


def test_self_copy_matches_within_a_fine_cell(tmp_path: Path) -> None:
    torch.manual_seed(0)
    root = write_labelled_dataset(tmp_path / "d", n=1, size=40)
    img = nib.load(str(root / "imagesTr" / "case_000.nii.gz"))
    noise = np.random.default_rng(0).normal(0, 400, img.shape).astype(np.float32)  # distinctive texture
    nib.save(nib.Nifti1Image(noise, img.affine), str(root / "imagesTr" / "case_000.nii.gz"))
    doc = json.loads((root / "dataset.json").read_text())
    a4 = level_affine(img.affine, 4)  # landmarks at stride-4 cell centres: an exact match has error 0
    lm = {"a": (a4 @ [2, 3, 4, 1])[:3].tolist(), "b": (a4 @ [6, 5, 2, 1])[:3].tolist()}
    (root / "lm.json").write_text(json.dumps(lm))
    e = dict(doc["training"][0], landmarks="./lm.json")
    doc["training"] = [e, dict(e)]
    (root / "dataset.json").write_text(json.dumps(doc))
    cases, _ = read_labelled_dataset(root)
    cases[1].name = "copy"
    bb = build_backbone(ModelConfig(backbone="conv", feature_size=12))
    out = evaluate_correspondence(bb, cases, DataConfig())
    assert out["available"] and out["n_queries"] == 4 and set(out["per_landmark"]) == {"a", "b"}
    assert out["mean_error_mm"] < 1e-6


def test_without_landmarks_reports_unavailable(tmp_path: Path) -> None:
    cases, _ = read_labelled_dataset(write_labelled_dataset(tmp_path / "d", n=2, size=40))
    out = evaluate_correspondence(
        build_backbone(ModelConfig(backbone="conv", feature_size=4)), cases, DataConfig()
    )
    assert out == {"available": False, "reason": "fewer than two held-out volumes carry landmarks"}
