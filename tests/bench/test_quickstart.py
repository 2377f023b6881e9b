"""run_quickstart at toy size: the whole story writes a table, plots and overlays (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anatssl.bench.quickstart import default_method, quickstart_suite, run_quickstart


def test_quickstart_prefers_alice_and_budgets_are_shared() -> None:
    from anatssl.methods import METHODS

    assert default_method() == ("alice" if "alice" in METHODS else "swinssl")
    s = quickstart_suite("swinssl")
    assert s.labeled == (2,) and s.methods == ("swinssl",) and "train.max_steps=60" in s.pretrain
    assert "model.backbone=conv" in s.shared


@pytest.mark.slow
def test_quickstart_quick_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = run_quickstart(tmp_path / "qs", method="swinssl", fast=True)
    assert res["inits"] == ["scratch", "swinssl"] and not res["failures"]
    report = tmp_path / "qs" / "report"
    for name in (
        "results.md",
        "dice_vs_labeled.png",
        "pretrain_loss.png",
        "overlay_scratch.png",
        "overlay_swinssl.png",
    ):
        assert (report / name).is_file(), name
    assert "| scratch |" in capsys.readouterr().out
    saved = json.loads((tmp_path / "qs" / "results.json").read_text())
    assert saved["segmentation"]["swinssl"]["2"]["mean_dice"]["n"] == 1
