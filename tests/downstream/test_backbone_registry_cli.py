"""Every registered backbone x every downstream path, end to end through ``anatssl`` (issue 19).

Parametrized over ``BACKBONES`` itself, so a backbone registered later joins every test here. Each test
is one tiny run of the real CLI entry point (``anatssl.cli.main.main``) on the session's synthetic
NIfTI dataset (6 phantoms of 64 x 64 x 72 voxels, ``conftest.synthetic_dataset``), 1 training step,
feature size 12 where the backbone accepts it, asserting the exit status and the files the command
says it writes. Segmentation fine-tuning (training on MetaTensor batches from MONAI's transforms, and
sliding-window inference over two window positions) is in the default suite; the rest is ``slow``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from anatssl.cli.main import main
from anatssl.config.loader import from_dict
from anatssl.config.schema import ModelConfig
from anatssl.downstream.segmentation import SegmentationNet
from anatssl.errors import AnatsslError
from anatssl.models.backbones import BACKBONES, build_backbone

NAMES = BACKBONES.names()
SMALL_FEATURES = 12
SMALL_VARIANT = {"resenc": "tiny"}
"""Backbones sized by a named variant (``model.variant``) rather than ``feature_size``: their CPU one."""


@cache
def small_model(name: str) -> ModelConfig:
    """The backbone at feature size 12 (or its small variant) if it builds so, else at its default size."""
    try:
        cfg = ModelConfig(backbone=name, feature_size=SMALL_FEATURES, variant=SMALL_VARIANT.get(name, ""))
        build_backbone(cfg)
    except (AnatsslError, ValueError):
        cfg = ModelConfig(backbone=name, variant=SMALL_VARIANT.get(name, ""))
    return cfg


def model_overrides(name: str) -> list[str]:
    cfg = small_model(name)
    variant = [f"model.variant={cfg.variant}"] if cfg.variant else []
    return [f"model.backbone={cfg.backbone}", f"model.feature_size={cfg.feature_size}", *variant]


def tiny_finetune(name: str) -> list[str]:
    return [
        *model_overrides(name),
        "train.max_steps=1",
        "train.batch_size=1",
        "train.progress=false",
        "train.device=cpu",
        "optim.warmup_steps=0",
        "segmentation.samples_per_volume=1",
        "segmentation.sw_batch_size=1",
        "segmentation.overlay_cases=1",
    ]


def _cli(*argv: str) -> None:
    code = main([str(a) for a in argv])
    assert code == 0, f"anatssl {' '.join(map(str, argv))} exited with {code}"


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


_SEG_RUNS: dict[str, Path] = {}
_PRETRAINED: dict[str, Path] = {}


def segmentation_run(name: str, data: Path, root: Path) -> Path:
    """``anatssl finetune --task segmentation --init scratch`` for this backbone, once per session."""
    if name not in _SEG_RUNS:
        out = root / f"seg_{name}"
        _cli(
            "finetune", "--task", "segmentation", "--data", data, "--init", "scratch", "--out", out,
            "--labeled", "1", *tiny_finetune(name), "split.n_test=1",
        )  # fmt: skip
        _SEG_RUNS[name] = out
    return _SEG_RUNS[name]


def pretrained_run(name: str, data: Path, root: Path) -> Path:
    """A 1-step ``simmim`` pretraining run of this backbone (``anatssl pretrain``), once per session."""
    if name not in _PRETRAINED:
        out = root / f"simmim_{name}"
        _cli(
            "pretrain", "--method", "simmim", "--data", data, "--out", out, *model_overrides(name),
            "train.max_steps=1", "train.batch_size=1", "train.progress=false", "train.tensorboard=false",
            "simmim.crop_size=[64,64,64]",
        )  # fmt: skip
        _PRETRAINED[name] = out
    return _PRETRAINED[name]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry")


@pytest.mark.parametrize("name", NAMES)
def test_segmentation_finetune(name: str, synthetic_dataset: Path, work: Path) -> None:
    """Train 1 step on MetaTensor batches, predict the held-out volume with a sliding window, write all."""
    out = segmentation_run(name, synthetic_dataset, work)
    cfg = (out / "config.yaml").read_text()
    assert f"backbone: {name}" in cfg
    rows = _rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1] and np.isfinite(rows[0]["loss"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["init"]["kind"] == "scratch" and m["labeled"] == 1 and len(m["test_cases"]) == 1
    assert 0.0 <= m["mean_dice"] <= 1.0
    case = m["test_cases"][0]
    pred = nib.load(str(out / "predictions" / f"{case}.nii.gz"))
    image = nib.load(str(synthetic_dataset / "imagesTr" / f"{case}.nii.gz"))
    assert pred.shape == image.shape == (64, 64, 72)  # whole volume: two window positions along z
    ckpt = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    labels = ckpt["anatssl"]["labels"]  # {"0": "background", "1": ...}: the dataset's label values
    assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {int(v) for v in labels}
    assert (out / "report" / f"overlay_{case}.png").stat().st_size > 0
    net = SegmentationNet(build_backbone(from_dict(ModelConfig, ckpt["anatssl"]["model"])), len(labels))
    net.load_state_dict(ckpt["state_dict"], strict=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_sliding_window_evaluation_reproduces_the_finetune_scores(
    name: str, synthetic_dataset: Path, work: Path
) -> None:
    """``anatssl evaluate segmentation`` re-loads model.pt and predicts the held-out split again."""
    ft = segmentation_run(name, synthetic_dataset, work)
    out = work / f"eval_{name}"
    _cli(
        "evaluate",
        "segmentation",
        "--model",
        ft,
        "--data",
        synthetic_dataset,
        "--out",
        out,
        "--device",
        "cpu",
    )
    m = json.loads((out / "metrics.json").read_text())
    ref = json.loads((ft / "metrics.json").read_text())
    assert m["cases"] == ref["test_cases"]
    case = m["cases"][0]
    assert m["per_case"][case]["dice"] == pytest.approx(ref["per_case"][case]["dice"], nan_ok=True)
    a = np.asarray(nib.load(str(out / "predictions" / f"{case}.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(ft / "predictions" / f"{case}.nii.gz")).dataobj)
    assert a.shape == (64, 64, 72) and np.array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_classification_finetune_from_a_pretraining_run(
    name: str, synthetic_dataset: Path, work: Path
) -> None:
    run = pretrained_run(name, synthetic_dataset, work)
    out = work / f"cls_{name}"
    _cli(
        "finetune", "--task", "classification", "--data", synthetic_dataset, "--init", run, "--out", out,
        "--labeled", "4", *tiny_finetune(name), "split.n_test=2",
    )  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "classification" and m["init"]["kind"] == "run"
    assert m["init"]["load"]["n_loaded"] > 0 and m["init"]["load"]["n_unexpected"] == 0
    assert m["labeled"] == 4 and len(m["test_cases"]) == 2 and 0.0 <= m["accuracy"] <= 1.0
    assert [r["step"] for r in _rows(out / "metrics.jsonl")] == [1]
    assert f"backbone: {name}" in (out / "config.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_probe(name: str, synthetic_dataset: Path, work: Path) -> None:
    out = work / f"probe_{name}"
    _cli(
        "finetune", "--task", "probe", "--data", synthetic_dataset, "--init", "scratch", "--out", out,
        "--labeled", "4", *tiny_finetune(name), "split.n_test=2",
    )  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())
    bb = build_backbone(small_model(name))
    levels = (3, 4)  # classification.pool_levels of the tiny preset
    assert m["task"] == "probe" and m["feature_dim"] == sum(bb.feature_channels[lv] for lv in levels)
    assert m["labeled"] == 4 and 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["auc"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_export_reloads_strictly(name: str, synthetic_dataset: Path, work: Path) -> None:
    """``anatssl export --format safetensors`` (any backbone; swin also ``monai-swinunetr``): the file
    holds the run's encoder exactly, loads into the segmentation network with only the head ``out.*``
    added, strictly, and ``anatssl finetune --init FILE`` loads every tensor of it."""
    from safetensors.torch import load_file

    from anatssl.downstream.weights import load_run_encoder

    run = pretrained_run(name, synthetic_dataset, work)
    f = work / f"{name}.safetensors"
    _cli("export", "--run", run, "--format", "safetensors", "--out", f)
    tensors = load_file(str(f))
    enc, meta = load_run_encoder(run)
    assert set(tensors) == {k for k in enc if not k.startswith("recon_head.")}
    assert all(torch.equal(tensors[k], enc[k]) for k in tensors)
    net = SegmentationNet(build_backbone(from_dict(ModelConfig, meta["model"])), 3)
    head = {k: v for k, v in net.state_dict().items() if k.startswith("out.")}
    assert set(net.state_dict()) == set(tensors) | set(head)
    net.load_state_dict({**tensors, **head}, strict=True)

    if name == "swin":  # the MONAI counterpart: SwinUNETR with the run's settings, strictly
        from monai.networks.nets import SwinUNETR

        pt = work / "swin_swinunetr.pt"
        _cli("export", "--run", run, "--format", "monai-swinunetr", "--out", pt)
        sd = torch.load(pt, map_location="cpu", weights_only=True)["state_dict"]
        ref = SwinUNETR(in_channels=1, out_channels=3, feature_size=meta["model"]["feature_size"])
        ref_head = {k: v for k, v in ref.state_dict().items() if k.startswith("out.")}
        ref.load_state_dict({**sd, **ref_head}, strict=True)

    out = work / f"seg_from_export_{name}"
    _cli(
        "finetune", "--task", "segmentation", "--data", synthetic_dataset, "--init", f, "--out", out,
        "--labeled", "1", *tiny_finetune(name), "split.n_test=1",
    )  # fmt: skip
    load = json.loads((out / "metrics.json").read_text())["init"]["load"]
    assert load["n_loaded"] == len(tensors) and load["n_unexpected"] == 0
    assert (out / "model.pt").is_file()
