"""Frozen-encoder dense probe and label transfer: hand-checkable cases, then the CLI on a tiny dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anatssl.cli.main import main
from anatssl.config.schema import ModelConfig
from anatssl.downstream.dense_probe import (
    Standardiser,
    cell_labels,
    dice_per_structure,
    fit_probe,
    multiscale_features,
    probe_scores,
    rows,
    sample_reference,
    scores_to_labels,
    summarise_cases,
    transfer_scores,
)
from anatssl.models.backbones import build_backbone


def _blocks(shape: tuple[int, int, int] = (8, 6, 4), seed: int = 0) -> torch.Tensor:
    """A label volume with 4 classes in slabs plus a random speckle of class 3."""
    y = torch.zeros(shape, dtype=torch.long)
    y[2:5] = 1
    y[5:] = 2
    g = torch.Generator().manual_seed(seed)
    y[torch.rand(shape, generator=g) < 0.1] = 3
    return y


def test_dice_per_structure_hand_computed() -> None:
    truth = torch.zeros(4, 4, 1, dtype=torch.long)
    pred = torch.zeros_like(truth)
    truth[0, :, 0] = 1  # 4 voxels of class 1
    pred[0, :2, 0] = 1  # 2 of them found ...
    pred[1, :2, 0] = 1  # ... and 2 false positives: Dice 2*2 / (4 + 4)
    pred[3, 3, 0] = 3  # class 3 predicted, absent from the truth: 0
    d = dice_per_structure(pred, truth, ["a", "b", "c"])
    assert d["a"] == pytest.approx(0.5)
    assert math.isnan(d["b"])  # absent from both: not scored
    assert d["c"] == 0.0
    s = summarise_cases({"x": d, "y": {"a": 1.0, "b": 1.0, "c": math.nan}})
    assert s["per_case_mean_dice"] == {"x": pytest.approx(0.25), "y": 1.0}
    assert s["mean_dice"] == pytest.approx(0.625)
    assert s["dice"] == {"a": pytest.approx(0.75), "b": 1.0, "c": 0.0}


def test_probe_on_one_hot_label_features_gives_dice_1() -> None:
    y = _blocks()
    feats = F.one_hot(y, 4).permute(3, 0, 1, 2).float()  # (4, X, Y, Z): the labels themselves
    x = rows(feats)
    std = Standardiser.fit(x)
    head, losses = fit_probe(std(x), y.flatten(), 4, steps=300, lr=1e-1, seed=0)
    assert losses[-1] < 0.05 < losses[0]
    pred = scores_to_labels(probe_scores(head, feats, std), y.shape, stride=1)
    d = dice_per_structure(pred, y, ["a", "b", "c"])
    assert d == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_label_transfer_with_one_hot_features_is_exact() -> None:
    ref = _blocks(seed=0)
    query = _blocks(seed=1)  # another speckle: a nearest neighbour must follow the features
    fr = rows(F.one_hot(ref, 4).permute(3, 0, 1, 2).float())
    fq = rows(F.one_hot(query, 4).permute(3, 0, 1, 2).float())
    g = torch.Generator().manual_seed(0)
    idx = sample_reference(ref.flatten(), 16, g)
    votes = transfer_scores(fr[idx], ref.flatten()[idx], fq, 4, k=1, chunk=7)
    assert votes.sum(1).eq(1).all()  # one vote per query voxel
    assert torch.equal(votes.argmax(1), query.flatten())
    votes3 = transfer_scores(fr[idx], ref.flatten()[idx], fq, 4, k=3, chunk=5)
    assert votes3.sum(1).eq(3).all() and torch.equal(votes3.argmax(1), query.flatten())


def test_sample_reference_gives_each_class_an_equal_share() -> None:
    labels = torch.cat([torch.zeros(1000), torch.ones(100), torch.full((3,), 2)]).long()
    idx = sample_reference(labels, 30, torch.Generator().manual_seed(0))
    counts = torch.bincount(labels[idx], minlength=3).tolist()
    assert counts == [10, 10, 3]  # quota ceil(30 / 3) = 10; class 2 has only 3 cells
    assert len(set(idx.tolist())) == len(idx)


def test_cell_labels_take_the_centre_voxel_and_pad_with_background() -> None:
    y = torch.arange(5)[:, None, None].expand(5, 2, 2).clone()  # x index as label
    c = cell_labels(y, 2)
    assert c.shape == (3, 1, 1)
    assert c[:, 0, 0].tolist() == [1, 3, 0]  # voxels 1, 3; the padded far cell is background


def test_multiscale_features_shapes_and_the_input_channel() -> None:
    torch.manual_seed(0)
    bb = build_backbone(ModelConfig(backbone="conv", feature_size=4)).eval()
    img = np.random.default_rng(0).random((1, 40, 36, 33)).astype(np.float32)
    f = multiscale_features(bb, img, stride=2, amp="none")
    assert f.shape == (1 + 4 * (1 + 2 + 4 + 8 + 16), 20, 18, 17)
    expect = F.avg_pool3d(torch.from_numpy(img)[None, :, :40, :36, :32], 2)[0, 0]
    assert torch.allclose(f[0, :, :, :16], expect)  # channel 0 = the input averaged over each cell
    f4 = multiscale_features(bb, img, stride=4, levels=(4,), include_input=False, amp="none")
    assert f4.shape == (64, 10, 9, 9)
    assert torch.isfinite(f).all() and torch.isfinite(f4).all()


def test_scores_upsample_to_the_voxel_grid() -> None:
    s = torch.zeros(2, 2, 1, 1)
    s[0, 0] = 1.0  # class 0 wins in the first cell,
    s[1, 1] = 1.0  # class 1 in the second; the boundary falls between them
    lab = scores_to_labels(s, (4, 2, 2), stride=2)
    assert lab[:, 0, 0].tolist() == [0, 0, 1, 1]


def _conv(fs: int = 4) -> list[str]:
    return ["model.backbone=conv", f"model.feature_size={fs}", "split.n_test=2", "train.device=cpu"]


def test_segmentation_probe_cli_writes_per_structure_and_per_case_dice(
    labelled_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "probe"
    rc = main(
        ["finetune", "--task", "segmentation-probe", "--data", str(labelled_dataset), "--init", "scratch"]
        + ["--out", str(out), "--labeled", "2", *_conv(), "dense.steps=30"]
    )
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "segmentation-probe" and m["labeled"] == 2 and len(m["train_cases"]) == 2
    assert set(m["dice"]) == {"liver", "kidney"}
    assert set(m["per_case_mean_dice"]) == set(m["test_cases"]) and len(m["test_cases"]) == 2
    assert 0.0 <= m["mean_dice"] <= 1.0
    assert m["features"]["channels"] == 1 + 4 * 31 and m["features"]["stride"] == 2
    assert m["init"]["kind"] == "scratch"
    assert "label_transfer" not in m
    assert '"mean_dice"' in capsys.readouterr().out


def test_label_transfer_cli_at_several_counts_with_landmarks_skipped(
    labelled_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lt"
    rc = main(
        [
            "evaluate",
            "label-transfer",
            "--data",
            str(labelled_dataset),
            "--init",
            "scratch",
            "--out",
            str(out),
        ]
        + ["--labeled", "1,3", "--landmarks", *_conv(), "dense.reference_voxels=256"]
    )
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["label_transfer"]) == {"1", "3"}
    assert m["label_transfer"]["3"]["train_cases"][:1] == m["label_transfer"]["1"]["train_cases"]
    assert m["landmarks"] == {"available": False, "reason": "fewer than two held-out volumes carry landmarks"}
    # the random-init control is a function of the seed
    out2 = tmp_path / "lt2"
    main(
        [
            "evaluate",
            "label-transfer",
            "--data",
            str(labelled_dataset),
            "--init",
            "scratch",
            "--out",
            str(out2),
        ]
        + ["--labeled", "1", *_conv(), "dense.reference_voxels=256"]
    )
    m2 = json.loads((out2 / "metrics.json").read_text())
    assert m2["label_transfer"]["1"]["per_case"] == m["label_transfer"]["1"]["per_case"]


def test_dense_config_is_checked() -> None:
    from anatssl.downstream.config import load_finetune_config
    from anatssl.errors import ConfigError

    with pytest.raises(ConfigError, match="dense.stride"):
        load_finetune_config("segmentation-probe", "tiny", None, ["dense.stride=3"])
    with pytest.raises(ConfigError, match="dense.levels"):
        load_finetune_config("label-transfer", "tiny", None, ["dense.levels=[5]"])


@pytest.mark.parametrize("method", ["alice", "s2dc"])
def test_a_run_checkpoint_gives_that_steps_encoder(tmp_path: Path, method: str) -> None:
    """The budget curve evaluates RUN/checkpoints/step_XXXXXXX.pt: the method's encoder() at that step,
    not a student/teacher key guess."""
    import shutil

    from downstream_fixtures import fabricate_run

    from anatssl.downstream.weights import resolve_init

    run = fabricate_run(tmp_path / "run", method, ("model.backbone=conv", "model.feature_size=4"))
    ckpt = run / "checkpoints" / "step_0000003.pt"
    shutil.copy(run / "checkpoints" / "last.pt", ckpt)
    a, b = resolve_init(run), resolve_init(ckpt)
    assert b.kind == "run" and b.meta["step"] == 3 and b.meta["method"] == method
    assert a.state_dict is not None and b.state_dict is not None
    assert set(a.state_dict) == set(b.state_dict)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
