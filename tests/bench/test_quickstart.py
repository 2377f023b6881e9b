"""The quickstart: its suite, its printed table on known results, and a toy-size run (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from anatssl.bench.quickstart import default_method, quickstart_suite, quickstart_table, run_quickstart


def test_quickstart_pretrains_s2dc_and_scores_the_frozen_encoder_against_random_init() -> None:
    assert default_method() == "s2dc"
    s = quickstart_suite("s2dc")
    assert s.methods == ("s2dc",) and s.seeds == (0,) and s.dense == (1, 2)
    assert s.labeled == ()  # no fine-tuning: the frozen-encoder measurements fit the ten minutes
    assert "train.max_steps=1500" in s.pretrain and "model.backbone=conv" in s.shared
    assert s.data == {"n": 16, "size": 64, "seed": 0} and s.n_test == 4


def _entry(dice: float, delta: tuple[float, float, float] | None) -> dict:
    e: dict = {"mean_dice": {"mean": dice, "std": math.nan, "n": 1}}
    if delta:
        e["delta_vs_scratch"] = {"mean": delta[0], "ci95": [delta[1], delta[2]]}
    return e


def test_table_shape_and_reading_on_known_results() -> None:
    results = {
        "inits": ["scratch", "s2dc"],
        "spec": {"dense": [1, 2], "n_test": 4},
        "dense": {
            "scratch": {
                "probe": {"1": _entry(0.12, None), "2": _entry(0.18, None)},
                "label_transfer": {"1": _entry(0.26, None), "2": _entry(0.33, None)},
                "landmark_error_mm": {"mean": 34.0, "std": math.nan, "n": 1},
                "landmark_baselines_mm": {"same_voxel": {"mean": 36.7}},
            },
            "s2dc": {
                "probe": {"1": _entry(0.28, (0.16, 0.10, 0.22)), "2": _entry(0.30, (0.12, 0.05, 0.20))},
                "label_transfer": {
                    "1": _entry(0.27, (0.01, -0.02, 0.04)),
                    "2": _entry(0.33, (0.0, -0.03, 0.03)),
                },
                "landmark_error_mm": {
                    "mean": 30.0,
                    "std": math.nan,
                    "n": 1,
                    "delta_vs_scratch": {"mean": -4.0, "ci95": [-6.0, -1.5]},
                },
            },
        },
    }
    lines = quickstart_table(results)
    assert lines[0].split() == ["random", "init", "s2dc", "difference", "[95", "%", "interval]"]
    rows = {ln[:20].strip(): ln[20:].split() for ln in lines[1:6]}
    assert rows["probe Dice @1"] == ["0.120", "0.280", "+0.160", "[+0.100,", "+0.220]", "helps"]
    assert rows["transfer Dice @1"] == ["0.260", "0.270", "+0.010", "[-0.020,", "+0.040]"]
    assert rows["landmark error mm"] == ["34.0", "30.0", "-4.0", "[-6.0,", "-1.5]", "helps"]
    assert lines[6] == "(landmark error without learning, same voxel index: 36.7 mm)"
    assert lines[-1] == (
        "Reading: pretraining with s2dc helps probe Dice @1, probe Dice @2, landmark error mm (95 % "
        "intervals over 4 held-out volumes exclude 0); 2 other differences are not clear."
    )
    assert all(len(ln) <= 90 for ln in lines[:-1])  # fits a terminal; the reading is one line


@pytest.mark.slow
def test_quickstart_quick_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = run_quickstart(tmp_path / "qs", method="s2dc", fast=True)
    assert res["inits"] == ["scratch", "s2dc"] and not res["failures"]
    report = tmp_path / "qs" / "report"
    for name in ("results.md", "dense_vs_labeled.png", "pretrain_loss.png"):
        assert (report / name).is_file(), name
    out = capsys.readouterr().out
    assert "random init" in out and "probe Dice @1" in out and "landmark error mm" in out
    assert "Reading:" in out
    saved = json.loads((tmp_path / "qs" / "results.json").read_text())
    assert saved["dense"]["s2dc"]["probe"]["1"]["mean_dice"]["n"] == 1
    assert "delta_vs_scratch" in saved["dense"]["s2dc"]["label_transfer"]["2"]
