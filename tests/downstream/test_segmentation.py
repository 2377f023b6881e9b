"""Segmentation fine-tuning: model layout == MONAI SwinUNETR, end-to-end on a tiny NIfTI set, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.nets import SwinUNETR

from anatssl.config.schema import ModelConfig
from anatssl.downstream.config import load_finetune_config
from anatssl.downstream.segmentation import SegmentationNet, finetune_segmentation
from anatssl.errors import DataError
from anatssl.models.backbones import build_backbone

FAST = [
    "model.backbone=conv",
    "model.feature_size=4",
    "train.max_steps=2",
    "train.batch_size=1",
    "segmentation.roi_size=[64,64,64]",
    "segmentation.samples_per_volume=1",
    "segmentation.sw_batch_size=1",
    "split.n_test=2",
    "train.progress=false",
    "optim.warmup_steps=0",
    "train.device=cpu",
]


def test_swin_segmentation_net_keys_are_swinunetr() -> None:
    net = SegmentationNet(build_backbone(ModelConfig(backbone="swin", feature_size=12)), num_classes=3)
    ref = SwinUNETR(in_channels=1, out_channels=3, feature_size=12)
    assert set(net.state_dict()) == set(ref.state_dict())
    ref.load_state_dict(net.state_dict(), strict=True)


@pytest.mark.slow
def test_swin_segmentation_net_equals_swinunetr_outputs() -> None:
    torch.manual_seed(0)
    net = SegmentationNet(build_backbone(ModelConfig(backbone="swin", feature_size=12)), num_classes=3)
    ref = SwinUNETR(in_channels=1, out_channels=3, feature_size=12)
    ref.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(1, 1, 64, 64, 64)
    net.eval()
    ref.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x), atol=1e-5)


@pytest.mark.slow
def test_finetune_scratch_end_to_end(labelled_dataset: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = load_finetune_config("segmentation", "tiny", overrides=FAST)
    out = tmp_path / "ft"
    m = finetune_segmentation(cfg, labelled_dataset, "scratch", out)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["init"] == {"kind": "scratch"}
    assert saved["labeled"] == 3 and len(saved["test_cases"]) == 2
    assert set(saved["dice"]) == {"liver", "kidney", "mean"}
    assert set(saved["per_case"]) == set(saved["test_cases"])
    for case in saved["per_case"].values():
        assert set(case["dice"]) == {"liver", "kidney"} and set(case["hd95"]) == {"liver", "kidney"}
        for v in case["dice"].values():
            assert v is None or 0.0 <= v <= 1.0
    assert m["steps"] == 2
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2]  # 1-based; log_every 10: only the last step
    for name in saved["test_cases"]:
        pred = nib.load(str(out / "predictions" / f"{name}.nii.gz"))
        src = nib.load(str(labelled_dataset / "imagesTr" / f"{name}.nii.gz"))
        assert pred.shape == src.shape
        assert np.allclose(pred.affine, src.affine)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}
    assert len(list((out / "report").glob("overlay_*.png"))) == 2
    assert (out / "model.pt").is_file()


def test_labeled_subsets_are_nested_and_test_split_fixed(labelled_dataset: Path, tmp_path: Path) -> None:
    from anatssl.downstream.labelled import read_labelled_dataset, split_cases

    cases, _ = read_labelled_dataset(labelled_dataset)
    cfg1 = load_finetune_config("segmentation", "tiny", overrides=[*FAST, "split.labeled=1", "seed=5"])
    cfg3 = load_finetune_config("segmentation", "tiny", overrides=[*FAST, "split.labeled=3"])
    tr1, te1 = split_cases(cases, cfg1.split)
    tr3, te3 = split_cases(cases, cfg3.split)
    assert [c.name for c in te1] == [c.name for c in te3]
    assert [c.name for c in tr1] == [c.name for c in tr3][:1]
    assert not {c.name for c in tr3} & {c.name for c in te3}


def test_labeled_larger_than_pool(labelled_dataset: Path, tmp_path: Path) -> None:
    cfg = load_finetune_config("segmentation", "tiny", overrides=[*FAST, "split.labeled=4"])
    with pytest.raises(DataError, match=r"--labeled 4 is larger than the labelled training pool.*= 3"):
        finetune_segmentation(cfg, labelled_dataset, "scratch", tmp_path / "ft")


def test_missing_labels(labelled_dataset: Path, tmp_path: Path) -> None:
    doc = json.loads((labelled_dataset / "dataset.json").read_text())
    del doc["training"][1]["label"]
    (labelled_dataset / "dataset.json").write_text(json.dumps(doc))
    cfg = load_finetune_config("segmentation", "tiny", overrides=FAST)
    with pytest.raises(DataError, match=r"training\[1\] \(case_001.nii.gz\) has no 'label'"):
        finetune_segmentation(cfg, labelled_dataset, "scratch", tmp_path / "ft")


def test_label_values_outside_label_map(labelled_dataset: Path, tmp_path: Path) -> None:
    path = labelled_dataset / "labelsTr" / "case_002.nii.gz"
    img = nib.load(str(path))
    arr = np.asarray(img.dataobj).copy()
    arr[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(arr, img.affine), str(path))
    cfg = load_finetune_config("segmentation", "tiny", overrides=FAST)
    with pytest.raises(DataError, match=r"case_002.nii.gz holds values \[7\]"):
        finetune_segmentation(cfg, labelled_dataset, "scratch", tmp_path / "ft")
