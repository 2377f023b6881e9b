"""Benchmark suites: aggregation by hand, resumable cells, the smoke suite end to end (slow)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "downstream"))
from downstream_fixtures import write_labelled_dataset

from anatssl.bench.results import fmt, mean_std, summarise
from anatssl.bench.runner import CellStore
from anatssl.bench.suites import SUITES, get_suite
from anatssl.errors import ConfigError


def test_mean_std_hand_computed() -> None:
    m = mean_std([0.5, 0.7, None, float("nan")])
    assert m["n"] == 2 and m["mean"] == pytest.approx(0.6)
    assert m["std"] == pytest.approx(math.sqrt(0.02))  # sample std: ((0.1^2 + 0.1^2) / 1) ** 0.5
    assert fmt(m) == "0.600 ± 0.141"
    assert fmt(mean_std([0.25])) == "0.250" and fmt(mean_std([])) == "-"


def test_summarise_groups_by_init_labels_and_seeds() -> None:
    suite = get_suite("smoke")
    cells = {
        "finetune-scratch-n2-s0": {
            "mean_dice": 0.4,
            "mean_hd95_mm": 10.0,
            "dice": {"liver": 0.4, "mean": 0.4},
        },
        "finetune-swinssl-n2-s0": {
            "mean_dice": 0.6,
            "mean_hd95_mm": 5.0,
            "dice": {"liver": 0.6, "mean": 0.6},
        },
        "pretrain-swinssl-s0": {"loss_curve": [[0, 1.0], [1, 0.5]], "wall_seconds": 2.0, "cpu_seconds": 3.0},
        "correspondence-swinssl-s0": {
            "available": True,
            "model": {"mre_mm": 12.0, "median_mm": 9.0},
            "same_voxel": {"mre_mm": 20.0},
            "random_foreground": {"mre_mm": 80.0},
        },
    }
    r = summarise(suite, ["swinssl"], cells)
    assert r["segmentation"]["swinssl"]["2"]["mean_dice"]["mean"] == 0.6
    assert r["segmentation"]["scratch"]["2"]["dice_per_structure"] == {"liver": 0.4}
    assert r["correspondence"] == {
        "swinssl": {"mean_error_mm": mean_std([12.0]), "median_error_mm": mean_std([9.0])}
    }
    assert r["correspondence_baselines"]["same_voxel"]["mean_error_mm"]["mean"] == 20.0
    assert r["cost"]["pretrain_cpu_seconds"] == 3.0 and r["cost"]["cpu_seconds"] == 3.0


def test_cell_store_skips_finished_cells(tmp_path: Path) -> None:
    store = CellStore(tmp_path)
    calls = []
    assert store.run("a", lambda: calls.append(1) or {"x": 1})["x"] == 1
    assert store.run("a", lambda: calls.append(2) or {"x": 2})["x"] == 1
    assert calls == [1] and json.loads(store.path("a").read_text())["cell"] == "a"


def test_unknown_suite() -> None:
    names = ", ".join(sorted(SUITES))  # every suite, sorted (a new suite need not edit this test)
    with pytest.raises(ConfigError, match=f"unknown benchmark suite 'big'; available: {names}"):
        get_suite("big")
    assert {"smoke", "synthetic-small"} <= set(SUITES)


def _run_cli(argv: list[str]) -> int:
    from anatssl.cli import benchmark

    parser = argparse.ArgumentParser()
    benchmark.add_parser(parser.add_subparsers())
    args = parser.parse_args(["benchmark", *argv])
    return int(args.func(args))


@pytest.mark.slow
def test_smoke_suite_on_given_data_resumes(tmp_path: Path) -> None:
    data = write_labelled_dataset(tmp_path / "data", n=6, size=64)
    out = tmp_path / "bench"
    assert _run_cli(["--suite", "smoke", "--out", str(out), "--data", str(data)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["inits"] == ["scratch", "swinssl", "simmim"] and not res["failures"]
    for init in res["inits"]:
        assert 0.0 <= res["segmentation"][init]["2"]["mean_dice"]["mean"] <= 1.0
    md = (out / "results.md").read_text()
    assert "| scratch |" in md and "| simmim |" in md and "CPU-minutes" in md
    assert (out / "plots" / "dice_vs_labeled.png").is_file() and (
        out / "plots" / "pretrain_loss.png"
    ).is_file()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    (out / "cells" / "finetune-simmim-n2-s0.json").unlink()
    assert _run_cli(["--suite", "smoke", "--out", str(out), "--data", str(data)]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    changed = sorted(k for k in after if after[k] != stamps.get(k))
    assert changed == ["finetune-simmim-n2-s0.json"]


@pytest.mark.slow
def test_smoke_suite_on_synthetic_data(tmp_path: Path) -> None:
    """The whole suite with two cells at a time in worker processes (``--jobs 2``)."""
    out = tmp_path / "bench"
    assert _run_cli(["--suite", "smoke", "--out", str(out), "--jobs", "2"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["this_invocation"]["jobs"] == 2
    assert not res["failures"] and set(res["segmentation"]) == {"scratch", "swinssl", "simmim"}
    assert set(res["correspondence"]) == {"swinssl", "simmim"}  # synthetic subjects carry landmarks
    assert set(res["correspondence_baselines"]) == {"same_voxel", "random_foreground"}
    assert "random body voxel (chance)" in (out / "results.md").read_text()
    assert (out / "plots" / "correspondence.png").is_file()


@pytest.mark.parametrize("method", get_suite("synthetic-small").methods)
def test_scratch_starts_from_the_pretraining_init(method: str) -> None:
    """The benchmark's control: same seed -> the scratch backbone equals the method's initial encoder."""
    import torch

    from anatssl.methods import build_method
    from anatssl.models.backbones import build_backbone
    from anatssl.runs import load_pretrain_config

    cfg = load_pretrain_config(method, "tiny", overrides=["model.backbone=conv", "model.feature_size=4"])
    torch.manual_seed(0)  # as engine/trainer.py before build_method
    enc = build_method(cfg).encoder().state_dict()
    torch.manual_seed(0)  # as downstream/segmentation.py before build_backbone
    bb = build_backbone(cfg.model).state_dict()
    assert set(enc) == set(bb) and all(torch.equal(enc[k], bb[k]) for k in bb)


@pytest.mark.parametrize("name", sorted(SUITES))
def test_every_cell_config_of_a_suite_resolves(name: str) -> None:
    """Pretraining and fine-tuning configs of every cell build (a typo fails here, not hours into a run)."""
    from anatssl.bench.quickstart import quickstart_suite
    from anatssl.downstream.config import load_finetune_config
    from anatssl.runs import load_pretrain_config

    suites = [get_suite(name)] + (
        [quickstart_suite("alice"), quickstart_suite("swinssl")] if name == "smoke" else []
    )
    for suite in suites:
        for method in suite.methods:
            cfg = load_pretrain_config(
                method,
                suite.preset,
                None,
                [*suite.shared, *suite.pretrain, *suite.method_overrides.get(method, ())],
            )
            assert cfg.model.backbone in {"swin", "conv"}
        for n in suite.labeled:
            ft = load_finetune_config(
                "segmentation",
                suite.finetune_preset,
                None,
                [*suite.shared, *suite.finetune, f"split.labeled={n}", f"split.n_test={suite.n_test}"],
            )
            assert ft.split.labeled == n
        assert max((*suite.labeled, *suite.dense)) + suite.n_test <= suite.data["n"]


@pytest.mark.parametrize("name", [*SUITES, "quickstart-alice", "quickstart-swinssl"])
def test_every_arm_is_fine_tuned_with_the_same_network_and_preprocessing(name: str) -> None:
    """The comparison measures pretraining, not windows: every pretrained arm (whose run's model and
    intensity settings the fine-tuning inherits) is fine-tuned exactly like scratch."""
    from anatssl.bench.quickstart import quickstart_suite
    from anatssl.config.pretrain import pretrain_config_to_dict
    from anatssl.downstream.config import load_finetune_config
    from anatssl.runs import load_pretrain_config

    suite = quickstart_suite(name.split("-")[1]) if name.startswith("quickstart") else get_suite(name)
    ft_overrides = [*suite.shared, *suite.finetune, f"split.labeled={(*suite.labeled, *suite.dense)[0]}"]

    def seen(ft):  # type: ignore[no-untyped-def]
        d = ft.data
        return (d.modality, tuple(d.hu_window), d.spacing, tuple(d.mri_percentiles), ft.model)

    scratch = seen(load_finetune_config("segmentation", suite.finetune_preset, None, ft_overrides))
    for method in suite.methods:
        pre = load_pretrain_config(
            method,
            suite.preset,
            None,
            [*suite.shared, *suite.pretrain, *suite.method_overrides.get(method, ())],
        )
        raw = pretrain_config_to_dict(pre)
        ft = load_finetune_config(
            "segmentation",
            suite.finetune_preset,
            None,
            ft_overrides,
            from_init={"model": raw["model"], "data": raw["data"]},
        )
        assert seen(ft) == scratch, (method, seen(ft), scratch)


def _cell_record(value: int) -> dict:
    """A cell for the worker-pool test: where and with how many threads it ran."""
    import os

    import torch

    return {"value": value, "pid": os.getpid(), "threads": torch.get_num_threads()}


def _failing_cell() -> dict:
    raise ConfigError("this cell is broken on purpose")


def test_cells_run_in_parallel_workers_and_failures_are_collected(tmp_path: Path) -> None:
    import os
    from functools import partial

    from anatssl.bench.runner import _run_cells

    store = CellStore(tmp_path)
    store.put("done", {"value": -1})
    cells = [
        ("done", partial(_cell_record, 99)),
        ("a", partial(_cell_record, 1)),
        ("b", partial(_cell_record, 2)),
        ("bad", _failing_cell),
    ]
    errors = _run_cells(tmp_path, cells, jobs=2)
    assert errors == {"bad": "this cell is broken on purpose"}
    assert store.get("done") == {"value": -1}  # finished earlier: not recomputed
    a, b = store.get("a"), store.get("b")
    assert a is not None and b is not None and store.get("bad") is None
    assert (a["value"], b["value"]) == (1, 2)
    assert os.getpid() not in (a["pid"], b["pid"])  # ran in worker processes
    assert a["threads"] == b["threads"] == max(1, (os.cpu_count() or 1) // 2)
    assert a["wall_seconds"] >= 0 and a["cell"] == "a"


def _slow_cell(value: int) -> dict:
    import time

    time.sleep(1.5)
    return {"value": value}


def _interrupted_cell() -> dict:
    from anatssl.engine.signals import RunInterrupted

    raise RunInterrupted("stopped by SIGTERM at step 3; checkpoint saved", 15, 3)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_stop_signal_ends_the_benchmark_instead_of_moving_to_the_next_cell(
    tmp_path: Path, jobs: int
) -> None:
    """SIGTERM / Ctrl-C during a cell's training is a request to stop the benchmark (the cell saved its
    checkpoint; the same command resumes), not a failed cell: found when a `kill` of a running suite left
    it running the next pretraining."""
    from functools import partial

    from anatssl.bench.runner import _run_cells
    from anatssl.engine.signals import RunInterrupted

    cells = [("stop", _interrupted_cell), *[(f"after{i}", partial(_slow_cell, i)) for i in range(16)]]
    with pytest.raises(RunInterrupted) as e:
        _run_cells(tmp_path, cells, jobs=jobs)
    assert e.value.exit_code == 143
    store = CellStore(tmp_path)
    assert store.get("stop") is None
    ran = [i for i in range(16) if store.get(f"after{i}") is not None]
    # in process nothing after the stop runs; with 2 workers the cells the pool had already handed out
    # finish (4 of 16 when measured), the rest of the queue is cancelled
    assert ran == [] if jobs == 1 else len(ran) <= 8, ran


def test_cost_line_says_how_the_cells_ran() -> None:
    from anatssl.bench.results import _threads

    machine = {"cpu_count": 8, "torch_threads": 8}
    assert _threads({"machine": machine, "this_invocation": {"jobs": 1}}) == "8 threads"
    two = {"machine": machine, "this_invocation": {"jobs": 2, "wall_seconds": 600.0}}
    assert (
        _threads(two) == "2 cells at a time with 4 torch threads each: 10.0 wall-minutes for the invocation"
    )
    eight = {"machine": machine, "this_invocation": {"jobs": 8, "wall_seconds": 60.0}}
    assert "with 1 torch thread each" in _threads(eight)


def test_method_differences_pair_the_same_volumes_and_name_the_better_method() -> None:
    """s2dc beats simmim by exactly 0.1 on every held-out volume of the probe at 1 (a point interval:
    bold, s2dc named); on landmarks the two differ by +-1 mm alternately (mean 0: not clear); the
    fine-tuned pair is missing for simmim, so that row is absent."""
    from anatssl.bench.results import method_differences, method_pairs, method_table

    suite = dataclasses.replace(get_suite("synthetic-probe"), seeds=(0,), dense=(1,), labeled=(1,))
    assert method_pairs(["swinssl", "simmim", "s2dc"]) == [
        ("simmim", "swinssl"),
        ("s2dc", "swinssl"),
        ("s2dc", "simmim"),
    ]
    vols = {"v0": 0.2, "v1": 0.5, "v2": 0.3}

    def dense(shift: float, lm: dict[str, float]) -> dict[str, Any]:
        return {
            "probe": {"1": {"per_case_mean_dice": {k: v + shift for k, v in vols.items()}}},
            "landmarks": {"per_landmark_mre_mm": lm},
        }

    cells = {
        "dense-simmim-s0": dense(0.0, {"a": 10.0, "b": 12.0}),
        "dense-s2dc-s0": dense(0.1, {"a": 11.0, "b": 11.0}),
        "finetune-s2dc-n1-s0": {"per_case_mean_dice": vols},
    }
    diffs = method_differences(suite, ["simmim", "s2dc"], cells)
    assert list(diffs) == ["s2dc - simmim"]
    probe = diffs["s2dc - simmim"]["probe Dice @1"]
    assert probe["mean"] == pytest.approx(0.1) and probe["ci95"] == pytest.approx([0.1, 0.1])
    assert probe["n"] == 3
    lm = diffs["s2dc - simmim"]["landmark error mm"]
    assert lm["mean"] == pytest.approx(0.0) and lm["ci95"][0] < 0 < lm["ci95"][1]
    assert "fine-tuned Dice @1" not in diffs["s2dc - simmim"]
    table = method_table({"method_differences": diffs})
    assert "| probe Dice @1 | **+0.100 [+0.100, +0.100] s2dc** |" in table
    assert "| landmark error mm | +0.0 [" in table
