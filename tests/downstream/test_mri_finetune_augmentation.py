"""Fine-tuning's training transforms with ``data.modality=mri``: pretraining's MRI intensity augmentation
(gamma, bias field, gain) as MONAI dict transforms; CT's training transforms unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai import transforms as T

from anatssl.downstream.segmentation import mri_augmentation, train_transforms
from anatssl.runs.resolve import load_finetune_config

CT_TRANSFORMS = [
    "SpatialPadd", "RandCropByPosNegLabeld", "RandFlipd", "RandFlipd", "RandFlipd", "RandRotate90d",
    "RandShiftIntensityd", "SelectItemsd",
]  # fmt: skip
MRI_ADDED = ["RandAdjustContrastd", "RandBiasFieldd", "RandScaleIntensityd"]


def _names(overrides: list[str]) -> list[str]:
    cfg = load_finetune_config("segmentation", "tiny", None, overrides)
    return [type(t).__name__ for t in train_transforms(cfg, 4)]


def test_ct_training_transforms_are_unchanged() -> None:
    """The list as it was before MRI augmentation existed (pinned), and the shift's settings."""
    cfg = load_finetune_config("segmentation", "tiny", None, [])
    tf = train_transforms(cfg, 4)
    assert [type(t).__name__ for t in tf] == CT_TRANSFORMS
    shift = tf[6]
    assert isinstance(shift, T.RandShiftIntensityd)
    assert shift.prob == 0.5 and shift.shifter.offsets == (-0.1, 0.1)
    # changing the MRI settings does nothing to a CT run
    assert _names(["data.mri_gamma=[0.5,2.0]", "data.mri_bias_field=0.2"]) == CT_TRANSFORMS


def test_mri_training_transforms_include_the_mri_augmentation() -> None:
    cfg = load_finetune_config("segmentation", "tiny", None, ["data.modality=mri"])
    tf = train_transforms(cfg, 4)
    assert [type(t).__name__ for t in tf] == [*CT_TRANSFORMS[:-1], *MRI_ADDED, "SelectItemsd"]
    gamma, field, gain = tf[7:10]
    assert isinstance(gamma, T.RandAdjustContrastd) and gamma.adjuster.gamma == (0.7, 1.4)
    assert isinstance(field, T.RandBiasFieldd)
    assert field.rand_bias_field.coeff_range == (-0.05, 0.05) and field.rand_bias_field.degree == 3
    assert isinstance(gain, T.RandScaleIntensityd)
    np.testing.assert_allclose(gain.scaler.factors, (-0.1, 0.1), atol=1e-12)  # gain 0.9 .. 1.1
    assert gamma.prob == field.prob == gain.prob == 0.5
    # the settings are read; "off" values leave a transform out; augment=false leaves them all out
    over = [
        "data.modality=mri",
        "data.mri_gamma=[0.5,2.0]",
        "data.mri_bias_field=0",
        "data.mri_contrast=[1,1]",
    ]
    cfg = load_finetune_config("segmentation", "tiny", None, over)
    (only,) = [t for t in train_transforms(cfg, 4) if type(t).__name__ in MRI_ADDED]
    assert isinstance(only, T.RandAdjustContrastd) and only.adjuster.gamma == (0.5, 2.0)
    assert _names(["data.modality=mri", "segmentation.augment=false"]) == [
        "SpatialPadd",
        "RandCropByPosNegLabeld",
        "SelectItemsd",
    ]


def test_mri_augmentation_changes_tissue_and_keeps_background_zero() -> None:
    """On a 2-channel percentile-scaled crop: background 0 stays 0 (every step is multiplicative or fixes
    the minimum), tissue changes in most draws, values stay finite, the bias field is shared by the
    channels (their ratio keeps its sign pattern)."""
    cfg = load_finetune_config("segmentation", "tiny", None, ["data.modality=mri"])
    aug = T.Compose(mri_augmentation(cfg.data))
    aug.set_random_state(seed=0)
    x = np.zeros((2, 16, 16, 16), np.float32)
    x[:, 4:12, 4:12, 4:12] = np.linspace(0.2, 1.0, 8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    changed = 0
    for _ in range(40):
        y = np.asarray(aug({"image": torch.from_numpy(x.copy())})["image"])
        assert y.shape == x.shape and np.isfinite(y).all()
        assert np.all(y[x == 0] == 0)
        changed += int(np.abs(y - x).max() > 1e-3)
    assert changed >= 28  # 1 - 0.5^3 = 7/8 of the draws (35 of 40) apply at least one transform


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_training_transforms_run_on_a_case(modality: str) -> None:
    """The whole training pipeline on one (image, label) dict: crops of roi_size, label kept integral."""
    cfg = load_finetune_config(
        "segmentation", "tiny", None, [f"data.modality={modality}", "segmentation.roi_size=[32,32,32]"]
    )
    pipe = T.Compose(train_transforms(cfg, 2))
    pipe.set_random_state(seed=0)
    lab = torch.zeros((1, 40, 40, 40), dtype=torch.long)
    lab[:, 10:30, 10:30, 10:30] = 1
    img = torch.rand((1, 40, 40, 40), generator=torch.Generator().manual_seed(0))
    out = pipe({"image": img, "label": lab})
    crops = out if isinstance(out, list) else [out]
    for c in crops:
        assert tuple(c["image"].shape) == (1, 32, 32, 32) and set(torch.unique(c["label"]).tolist()) <= {0, 1}
