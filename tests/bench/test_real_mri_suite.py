"""The real-mri suite: its configuration, the SAM arm's split and cells, its summary (no training here)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from anatssl.bench.dense import dense_cells
from anatssl.bench.sam_arm import pretraining_split, sam_cells, sam_markdown, summarise_sam, write_init_run
from anatssl.bench.suites import get_suite


def test_real_mri_suite_configures_sam_and_the_dense_arms_on_mri() -> None:
    from anatssl.downstream.config import load_finetune_config
    from anatssl.runs import load_pretrain_config

    s = get_suite("real-mri")
    assert s.data["kind"] == "mri-brain" and s.data["n"] - s.n_test == 24  # SAM pretrains on 24
    assert s.correspondence_subjects == s.n_test == 8
    sam = load_pretrain_config("sam", s.preset, None, list(s.sam or ()))
    assert sam.data.modality == "mri" and tuple(sam.data.spacing or ()) == (4.0, 4.0, 4.0)
    assert sam.train.max_steps == 660 and sam.params.mining_score == "combined"
    # the suite's SAM arm is the mri_tiny preset: the same resolved config but for the preset's name
    preset = load_pretrain_config("sam", "mri_tiny", None, [])
    assert dataclasses.replace(preset, preset=sam.preset) == sam
    for method in s.methods:
        cfg = load_pretrain_config(
            method, s.preset, None, [*s.shared, *s.pretrain, *s.method_overrides.get(method, ())]
        )
        assert cfg.data.modality == "mri" and cfg.model.backbone == "conv"
    dn = load_finetune_config(
        "segmentation-probe",
        s.finetune_preset,
        None,
        [*s.shared, *s.dense_overrides, f"split.n_test={s.n_test}"],
    )
    assert dn.data.modality == "mri"
    runs = {(m, seed): Path(f"/r/{m}_s{seed}") for m in s.methods for seed in s.seeds}
    names = [n for n, _ in dense_cells(s, s.methods, runs, Path("/d"), Path("/o"), {})]
    assert names == [
        "dense-scratch-s0",
        "dense-scratch-s1",
        *(f"dense-{m}-s{seed}" for m in ("s2dc", "simmim") for seed in (0, 1)),
    ]
    # fine-tuning, the expensive cell, on seed 0 only, with 1 and 4 labelled volumes
    assert s.finetune_seeds == (0,) and s.labeled == (1, 4)


def _tiny_dataset(root: Path, n: int) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    entries = []
    for i in range(n):
        img = np.random.default_rng(i).normal(size=(8, 8, 8)).astype(np.float32)
        nib.save(nib.Nifti1Image(img, np.eye(4)), root / "imagesTr" / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image((img > 0).astype(np.uint8), np.eye(4)), root / "labelsTr" / f"c{i}.nii.gz")
        entries.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "1": "fg"}, "training": entries}))
    return root


def test_sam_pretrains_on_the_volumes_outside_the_held_out_split(tmp_path: Path) -> None:
    from anatssl.config.finetune import SplitConfig
    from anatssl.downstream.labelled import read_labelled_dataset, split_cases

    data = _tiny_dataset(tmp_path / "data", 10)
    s = dataclasses.replace(get_suite("real-mri"), n_test=3, seeds=(0, 1))
    split = pretraining_split(data, s, tmp_path / "out" / "pretraining.json")
    train = {Path(e["image"]) for e in json.loads(split.read_text())["training"]}
    cases, _ = read_labelled_dataset(data)
    _, test = split_cases(cases, SplitConfig(n_test=3))
    assert len(train) == 7 and not train & {c.image.resolve() for c in test}
    names = [n for n, _ in sam_cells(s, data, tmp_path / "out")]
    assert names == [
        f"{k}-s{seed}"
        for seed in (0, 1)
        for k in (
            "pretrain-sam",
            "correspondence-sam",
            "correspondence-sam_init",
            "correspondence-sam_prior",
            "correspondence-sam_init_prior",
        )
    ]
    assert sam_cells(dataclasses.replace(s, sam=None), data, tmp_path / "o2") == []


def test_random_init_run_is_a_sam_run_the_evaluation_reads(tmp_path: Path) -> None:
    from anatssl.runs import RunDir

    over = ["sam.width=4", "sam.embed_dim=16", "data.modality=mri", "seed=3"]
    run = write_init_run("sam", over, tmp_path / "init")
    rd = RunDir(run)
    assert rd.method == "sam" and rd.has_checkpoint() and rd.config.data.modality == "mri"
    again = write_init_run("sam", over, tmp_path / "init2")  # the same seed -> the same weights
    import torch

    a = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(again / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_summary_reports_the_ratio_to_the_same_voxel_guess() -> None:
    s = get_suite("real-mri")

    def corr(mre: float) -> dict[str, object]:
        m = {"mre_mm": mre, "median_mm": mre - 1, "within_10mm": 0.5, "n": 10}
        sv = {"mre_mm": 14.0, "median_mm": 13.0, "within_10mm": 0.3, "n": 10}
        rf = {"mre_mm": 80.0, "median_mm": 79.0, "within_10mm": 0.0, "n": 10}
        d = {"n": 10, "model_closer": 0.9, "mean_difference_mm": mre - 14.0, "ci95_mm": [-8.0, -6.0]}
        return {
            "available": True,
            "model": m,
            "same_voxel": sv,
            "random_foreground": rf,
            "vs_baselines": {"same_voxel": d},
        }

    cells = {"correspondence-sam-s0": corr(7.0), "correspondence-sam_init-s0": corr(30.0)}
    out = summarise_sam(s, cells)  # type: ignore[arg-type]
    rec = out["seeds"]["0"]
    assert rec["ratio_to_same_voxel"] == pytest.approx(0.5) and rec["sam_init"]["mre_mm"] == 30.0
    assert rec["sam_prior"] is None and "prior_ratio_to_same_voxel" not in rec
    md = sam_markdown(out)
    assert "SAM / same voxel = 0.50" in md and "| 0 | SAM, random init | 30.00 |" in md
    assert "affine prior" not in md
    # with the affine-prior cells
    prior = corr(4.2)
    prior["affine_fit"] = {"mre_mm": 3.0, "median_mm": 2.5, "within_10mm": 0.95, "n": 10}
    prior["prior"] = {"kind": "affine", "window_mm": 20.0, "mean_inlier_fraction": 0.55}
    cells |= {"correspondence-sam_prior-s0": prior, "correspondence-sam_init_prior-s0": corr(20.0)}
    rec = summarise_sam(s, cells)["seeds"]["0"]  # type: ignore[arg-type]
    assert rec["prior_ratio_to_same_voxel"] == pytest.approx(0.3) and rec["prior_inliers"] == 0.55
    md = sam_markdown(summarise_sam(s, cells))  # type: ignore[arg-type]
    assert "| 0 | SAM + affine prior (20 mm window) | 4.20 |" in md
    assert (
        "| 0 | the fitted affine alone | 3.00 |" in md
        and "| 0 | SAM random init + affine prior | 20.00 |" in md
    )
    assert "with the affine prior: SAM / same voxel = 0.30" in md and "55 % of the fitting matches" in md


@pytest.mark.slow  # ~1 CPU-minute: 5 tiny brains, 2 SAM steps, two correspondence evaluations
def test_toy_sam_arm_runs_through_the_benchmark_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``anatssl benchmark --suite ... --methods sam`` on tiny brains: data written once, SAM trained
    on the 2 non-held-out subjects, SAM and its random init matched on the 3 held-out ones; a rerun
    resumes without recomputing."""
    from anatssl.bench.suites import SUITES
    from anatssl.cli.main import main
    from anatssl.data.synthetic.mri_atlas import missing_sources

    if (missing := missing_sources()) is not None:
        pytest.skip(f"mri-brain sources absent: {missing}")
    toy = dataclasses.replace(
        get_suite("real-mri"),
        name="real-mri-toy",
        data={"kind": "mri-brain", "n": 5, "seed": 0, "size": [24, 28, 24], "spacing": [8, 8, 8]},
        n_test=3,
        correspondence_subjects=3,
        sam=(
            "data.modality=mri",
            "data.spacing=[8,8,8]",
            "sam.width=4",
            "sam.embed_dim=16",
            "sam.crop_size=[16,16,16]",
            "train.max_steps=2",
            "train.batch_size=1",
        ),
    )
    monkeypatch.setitem(SUITES, toy.name, toy)
    out = tmp_path / "bench"
    assert main(["benchmark", "--suite", toy.name, "--out", str(out), "--methods", "sam"]) == 0
    assert "SAM / same voxel = " in capsys.readouterr().out
    summary = json.loads((out / "sam.json").read_text())
    rec = summary["seeds"]["0"]
    assert rec["sam"]["n"] == rec["sam_init"]["n"] == rec["same_voxel"]["n"] > 0
    assert rec["ratio_to_same_voxel"] == pytest.approx(rec["sam"]["mre_mm"] / rec["same_voxel"]["mre_mm"])
    assert (
        rec["sam_prior"]["n"] == rec["affine_fit"]["n"] == rec["sam"]["n"] and rec["sam_init_prior"]["n"] > 0
    )
    pre = json.loads((out / "cells" / "pretrain-sam-s0.json").read_text())
    assert pre["steps"] == 2
    assert len(json.loads((out / "sam" / "pretraining.json").read_text())["training"]) == 2
    stamp = (out / "cells" / "correspondence-sam-s0.json").stat().st_mtime_ns
    assert main(["benchmark", "--suite", toy.name, "--out", str(out), "--methods", "sam"]) == 0
    assert (out / "cells" / "correspondence-sam-s0.json").stat().st_mtime_ns == stamp  # resumed
