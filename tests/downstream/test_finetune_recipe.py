"""Fine-tuning recipe: validation split, validation Dice and model selection, precision, empty classes."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from anatssl.downstream.config import load_finetune_config
from anatssl.downstream.labelled import read_labelled_dataset, split_dataset
from anatssl.downstream.metrics import (
    empty_structure_counts,
    image_diagonal_mm,
    mean_over_cases,
    segmentation_metrics,
)
from anatssl.downstream.segmentation import (
    build_segmentation_net,
    finetune_segmentation,
    load_cases,
    predict_case,
)
from anatssl.engine.device import autocast
from anatssl.engine.precision import cpu_has_bf16, resolve_amp
from anatssl.errors import ConfigError, DataError

FAST = [
    "model.backbone=conv",
    "model.feature_size=4",
    "train.batch_size=1",
    "segmentation.roi_size=[32,32,32]",
    "segmentation.samples_per_volume=1",
    "segmentation.sw_batch_size=4",
    "segmentation.overlay_cases=0",
    "segmentation.save_predictions=false",
    "train.progress=false",
    "optim.warmup_steps=0",
    "train.device=cpu",
    "train.amp=none",
]


@pytest.fixture
def six_cases(tmp_path: Path) -> Path:
    from downstream_fixtures import write_labelled_dataset

    return write_labelled_dataset(tmp_path / "data", n=6, size=32)


def test_validation_split_never_overlaps_test_or_training(six_cases: Path) -> None:
    cases, _ = read_labelled_dataset(six_cases)
    no_val = load_finetune_config("segmentation", "tiny", overrides=[*FAST, "split.n_test=2"])
    ref_test = [c.name for c in split_dataset(cases, no_val.split).test]
    for n_val, labeled in ((1, None), (2, 1), (3, 1), (2, 2)):
        ov = [*FAST, "split.n_test=2", f"split.n_val={n_val}"]
        if labeled is not None:
            ov.append(f"split.labeled={labeled}")
        s = split_dataset(cases, load_finetune_config("segmentation", "tiny", overrides=ov).split)
        tr, va, te = ({c.name for c in x} for x in (s.train, s.val, s.test))
        assert len(va) == n_val and len(te) == 2
        assert not (va & te) and not (va & tr) and not (tr & te)
        assert [c.name for c in s.test] == ref_test  # the test set does not depend on n_val
        assert len(tr) == (labeled if labeled is not None else 6 - 2 - n_val)


def test_split_refuses_no_training_volume(six_cases: Path) -> None:
    cases, _ = read_labelled_dataset(six_cases)
    cfg = load_finetune_config("segmentation", "tiny", overrides=[*FAST, "split.n_test=3", "split.n_val=3"])
    with pytest.raises(DataError, match=r"split.n_test = 3 and split.n_val = 3 leave no training volume"):
        split_dataset(cases, cfg.split)
    cfg = load_finetune_config(
        "segmentation", "tiny", overrides=[*FAST, "split.n_test=2", "split.n_val=2", "split.labeled=3"]
    )
    with pytest.raises(DataError, match=r"minus 2 held out for testing and 2 for validation = 2"):
        split_dataset(cases, cfg.split)


def test_select_best_needs_validation() -> None:
    with pytest.raises(ConfigError, match=r"train.select=best needs validation volumes.*split.n_val = 0"):
        load_finetune_config("segmentation", "tiny", overrides=[*FAST, "train.select=best"])
    with pytest.raises(ConfigError, match=r"train.amp = 'fp8'; valid values: .*auto.*none.*bf16.*fp16"):
        load_finetune_config("segmentation", "tiny", overrides=[*FAST, "train.amp=fp8"])


def test_amp_resolution_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == ("bf16" if cpu_has_bf16() else "none")
    assert resolve_amp("bf16", cpu) == "bf16" and resolve_amp("none", cpu) == "none"
    with pytest.raises(ConfigError, match="train.amp=fp16 needs CUDA"):
        resolve_amp("fp16", cpu)


def test_empty_structures_get_defined_values_and_no_warnings() -> None:
    """Present in both: MONAI's HD95; only in one: Dice 0, HD95 = image diagonal; in neither: NaN."""
    shape = (20, 20, 20)
    p = torch.zeros(shape, dtype=torch.long)
    t = torch.zeros(shape, dtype=torch.long)
    p[2:8, 2:8, 2:8] = 1
    t[2:8, 2:8, 2:8] = 1  # a: perfect
    p[10:12, 10:12, 10:12] = 2  # b: predicted, absent from the truth
    t[15:18, 15:18, 15:18] = 3  # c: in the truth, missed
    names = {0: "background", 1: "a", 2: "b", 3: "c", 4: "d"}  # d: absent from both
    spacing = (2.0, 2.0, 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that escapes fails the test
        m = segmentation_metrics(p, t, names, spacing)
    diag = math.sqrt(40**2 + 40**2 + 60**2)
    assert image_diagonal_mm(shape, spacing) == pytest.approx(diag)
    assert m["dice"]["a"] == pytest.approx(1.0) and m["hd95"]["a"] == pytest.approx(0.0)
    assert m["dice"]["b"] == 0.0 and m["hd95"]["b"] == pytest.approx(diag)
    assert m["dice"]["c"] == 0.0 and m["hd95"]["c"] == pytest.approx(diag)
    assert math.isnan(m["dice"]["d"]) and math.isnan(m["hd95"]["d"])
    assert m["missed"] == ["c"] and m["spurious"] == ["b"]
    means = mean_over_cases([m])
    assert means["dice"]["mean"] == pytest.approx(1 / 3)  # d is not scored
    assert means["hd95"]["mean"] == pytest.approx(2 * diag / 3)
    counts = empty_structure_counts([m, m])
    assert (counts["absent"], counts["missed"], counts["spurious"]) == (2, 2, 2)
    assert counts["warnings_suppressed"] == 2 * m["warnings"]
    assert "diagonal" in counts["hd95_empty_value"]


def _loss_after_steps(amp: str, steps: int = 2) -> list[float]:
    """Losses of ``steps`` AdamW steps of the segmentation net on a fixed input (same seed)."""
    from monai.losses import DiceCELoss

    cfg = load_finetune_config("segmentation", "tiny", overrides=FAST)
    net = build_segmentation_net(cfg, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 32, 32, 32, generator=g)
    y = (x > 0.5).long() + (x > 0.8).long()
    loss_f = DiceCELoss(to_onehot_y=True, softmax=True)
    out = []
    for _ in range(steps):
        with autocast(torch.device("cpu"), amp):
            logits = net(x)
        assert logits.dtype == (torch.bfloat16 if amp == "bf16" else torch.float32)
        loss = loss_f(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(float(loss.detach()))
    return out


def test_bf16_step_matches_fp32_step() -> None:
    """Same seed, same input: bf16 autocast losses within 1 % (relative) of fp32 over two steps."""
    torch.set_num_threads(1)
    fp32, bf16 = _loss_after_steps("none"), _loss_after_steps("bf16")
    for a, b in zip(fp32, bf16):
        assert abs(a - b) <= 0.01 * abs(a), (fp32, bf16)
    assert fp32[0] != bf16[0]  # autocast did run in bf16


@pytest.mark.slow
def test_validation_logged_and_best_weights_selected(six_cases: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    ov = [
        *FAST,
        "train.max_steps=6",
        "optim.lr=3e-2",
        "split.n_test=2",
        "split.n_val=1",
        "train.val_every=2",
        "train.select=best",
        "segmentation.crop=classes",
        "train.channels_last=true",
    ]
    cfg = load_finetune_config("segmentation", "tiny", overrides=ov)
    out = tmp_path / "ft"
    m = finetune_segmentation(cfg, six_cases, "scratch", out)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    val_rows = [r for r in rows if "val_dice" in r]
    assert [r["step"] for r in val_rows] == [2, 4, 6]  # val_every 2, 1-based as pretraining
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["precision"] == "fp32" and saved["amp_setting"] == "none"
    assert saved["val_cases"] and not set(saved["val_cases"]) & set(saved["test_cases"])
    assert not set(saved["val_cases"]) & set(saved["train_cases"])
    curve = {r["step"]: r["val_dice"] for r in saved["val_curve"]}
    assert curve == {r["step"]: r["val_dice"] for r in val_rows}
    sel = saved["selection"]
    best = max(curve, key=lambda s: (curve[s], -s))
    assert sel["rule"] == "best" and sel["step"] == best and sel["val_dice"] == pytest.approx(curve[best])
    assert m["steps"] == 6
    # the saved weights are the best step's: re-scoring the validation case reproduces its score
    net = build_segmentation_net(cfg, 3)
    net.load_state_dict(torch.load(out / "model.pt", weights_only=True)["state_dict"])
    net.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    cases, label_map = read_labelled_dataset(six_cases)
    val = [c for c in cases if c.name in saved["val_cases"]]
    names = dict(enumerate(label_map[v] for v in sorted(label_map)))
    items = load_cases(cfg, val, sorted(label_map))
    per = [
        segmentation_metrics(
            predict_case(net, cfg, it, torch.device("cpu")), it["label"][0], names, hd95=False
        )
        for it in items
    ]
    assert mean_over_cases(per)["dice"]["mean"] == pytest.approx(curve[best], abs=1e-6)


def test_class_ratios_must_match_the_label_map(six_cases: Path, tmp_path: Path) -> None:
    ov = [*FAST, "train.max_steps=1", "split.n_test=2", "segmentation.crop=classes"]
    cfg = load_finetune_config("segmentation", "tiny", overrides=[*ov, "segmentation.class_ratios=[1,1]"])
    with pytest.raises(ConfigError, match=r"class_ratios has 2 values but the label map has 3 classes"):
        finetune_segmentation(cfg, six_cases, "scratch", tmp_path / "ft")


def test_inverse_sqrt_class_weights_by_hand(six_cases: Path) -> None:
    import numpy as np

    from anatssl.downstream.segmentation import inverse_sqrt_class_weights, label_frequencies

    w = inverse_sqrt_class_weights(np.array([0.64, 0.16, 0.0, 0.0001]))  # sqrt ratios 1, 2, -, 80 -> cap 20
    assert w.tolist() == pytest.approx([3 / 23, 6 / 23, 0.0, 60 / 23])
    cases, label_map = read_labelled_dataset(six_cases)
    f = label_frequencies(cases[:2], sorted(label_map))
    assert f.sum() == pytest.approx(1.0) and f[0] > f[1] > f[2] > 0  # background > liver > kidney


def test_cpu_preset_is_the_documented_recipe() -> None:
    cfg = load_finetune_config("segmentation", "cpu")
    assert (cfg.model.backbone, cfg.model.feature_size) == ("conv", 12)
    assert cfg.segmentation.crop == "classes" and cfg.segmentation.class_weights == "inverse_sqrt"
    assert tuple(cfg.segmentation.roi_size) == (32, 32, 32) and not cfg.segmentation.augment
    assert (cfg.split.n_test, cfg.split.n_val, cfg.train.val_every, cfg.train.select) == (4, 2, 100, "best")
    assert cfg.train.amp == "auto" and cfg.train.max_steps == 800
