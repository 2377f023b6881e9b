"""The dense-probe suites: their configuration, and a toy-size run of the whole protocol (slow)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from anatssl.bench.dense import checkpoint_steps, dense_cells, pretrain_checkpoint_overrides
from anatssl.bench.suites import get_suite


def test_synthetic_probe_keeps_the_budget_checkpoints_and_lists_every_cell() -> None:
    s = get_suite("synthetic-probe")
    assert s.pretrain_steps == 1200
    assert checkpoint_steps(s) == [300, 600]
    assert pretrain_checkpoint_overrides(s) == ["train.keep_checkpoints=true", "train.ckpt_every=300"]
    assert set(s.methods) == {"swinssl", "simmim", "s2dc", "alice", "voco", "modelsgenesis"}
    runs = {(m, seed): Path(f"/r/{m}_s{seed}") for m in s.methods for seed in s.seeds}
    names = [n for n, _ in dense_cells(s, s.methods, runs, Path("/d"), Path("/o"), {})]
    # the random-init control and every method per seed, plus each method's two kept checkpoints
    assert len(names) == 2 * (1 + 6) + 2 * 6 * 2
    assert "dense-scratch-s1" in names and "dense-s2dc-s0-step300" in names
    assert not any(n.startswith("dense-scratch-s0-step") for n in names)
    failed = dense_cells(s, s.methods, runs, Path("/d"), Path("/o"), {"pretrain-alice-s0": "boom"})
    assert not any(n.startswith("dense-alice-s0") for n, _ in failed)


@pytest.mark.parametrize("name", ["synthetic-probe", "gpu-probe"])
def test_dense_and_fine_tuning_cells_use_the_same_split(name: str) -> None:
    """Probe, transfer and fine-tuning with N labelled volumes train on the same N volumes; "all" is
    the whole pool."""
    from anatssl.downstream.config import load_finetune_config
    from anatssl.downstream.labelled import LabelledCase, split_cases
    from anatssl.runs import load_pretrain_config

    s = get_suite(name)
    ft = load_finetune_config(
        "segmentation", s.finetune_preset, None, [*s.shared, *s.finetune, f"split.n_test={s.n_test}"]
    )
    dn = load_finetune_config(
        "segmentation-probe",
        s.finetune_preset,
        None,
        [*s.shared, *s.dense_overrides, f"split.n_test={s.n_test}"],
    )
    cases = [LabelledCase(name=f"c{i}", image=Path(f"c{i}.nii.gz")) for i in range(s.data["n"])]
    ft_train, ft_test = split_cases(cases, ft.split)
    dn_train, dn_test = split_cases(cases, dn.split)
    assert ft_train == dn_train and ft_test == dn_test
    assert max(s.labeled) == len(ft_train)  # the largest fine-tuning count is the whole pool
    assert max(s.dense) <= len(ft_train)
    for method in s.methods:
        cfg = load_pretrain_config(
            method,
            s.preset,
            None,
            [*s.shared, *s.pretrain, *s.method_overrides.get(method, ())] + pretrain_checkpoint_overrides(s),
        )
        assert cfg.train.keep_checkpoints and s.pretrain_steps % cfg.train.ckpt_every == 0
        assert cfg.train.max_steps == s.pretrain_steps


@pytest.mark.slow
def test_toy_probe_suite_runs_end_to_end_with_intervals_and_budget_curve(tmp_path: Path) -> None:
    """synthetic-probe at toy size (2 pretraining steps of simmim and s2dc, tiny probe): every cell runs,
    results.json has delta_vs_scratch per arm and metric, results.md the tables, the plots exist; a
    rerun resumes without recomputing."""
    from anatssl.bench.runner import run_suite

    s = get_suite("synthetic-probe")
    toy = dataclasses.replace(
        s,
        name="probe-toy",
        methods=("simmim", "s2dc"),
        seeds=(0, 1),
        labeled=(1,),
        data={"n": 8, "size": 64, "seed": 0},
        shared=("model.backbone=conv", "model.feature_size=4", "data.hu_window=[-1000,1000]"),
        pretrain=("train.max_steps=4", "train.batch_size=1", "train.log_every=1", "optim.warmup_steps=0"),
        finetune=(
            "split.n_val=1",
            "train.max_steps=2",
            "train.batch_size=1",
            "segmentation.roi_size=[32,32,32]",
            "segmentation.samples_per_volume=1",
            "segmentation.overlay_cases=0",
            "optim.warmup_steps=0",
        ),
        dense_overrides=("split.n_val=1", "dense.steps=20", "dense.reference_voxels=128"),
        n_test=3,
        dense=(1, 2),
        budget=(0.0, 0.5, 1.0),
        correspondence_subjects=3,
    )
    res = run_suite(toy, tmp_path / "b")
    assert res["failures"] == {}
    dense = res["dense"]
    assert set(dense) == {"scratch", "simmim", "s2dc"}
    for arm in ("simmim", "s2dc"):
        for key in ("probe", "label_transfer"):
            for n in ("1", "2"):
                d = dense[arm][key][n]["delta_vs_scratch"]
                assert d["n_seeds"] == 2 and d["n_units"] == 3
                assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
        assert "delta_vs_scratch" in dense[arm]["landmark_error_mm"]
        assert "delta_vs_scratch" in res["segmentation"][arm]["1"]
        steps = [r["step"] for r in res["budget_curve"][arm]]
        assert steps == [0, 2, 4]
    assert "delta_vs_scratch" not in dense["scratch"]["probe"]["1"]
    md = (tmp_path / "b" / "results.md").read_text()
    assert "random init (control)" in md and "Pretraining-budget curve" in md and "95 %" in md
    for png in ("dense_vs_labeled", "budget_curve", "pretrain_loss"):
        assert (tmp_path / "b" / "plots" / f"{png}.png").is_file()
    cells = json.loads((tmp_path / "b" / "cells" / "dense-s2dc-s0-step2.json").read_text())
    assert cells["init"]["kind"] != "scratch"
    again = run_suite(toy, tmp_path / "b")  # resumes: every cell is done
    assert json.dumps(again["dense"], sort_keys=True) == json.dumps(res["dense"], sort_keys=True)
