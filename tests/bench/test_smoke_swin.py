"""The ``smoke-swin`` suite: every benchmark stage once on the ``swin`` backbone every shipped preset
trains (issue 19: the other suites use ``conv``, so the default backbone's downstream path went
unexercised by the evidence and crashed unnoticed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anatssl.bench.suites import get_suite
from anatssl.cli.main import main


def test_smoke_swin_is_smoke_on_the_swin_backbone() -> None:
    smoke, swin = get_suite("smoke"), get_suite("smoke-swin")
    assert "model.backbone=swin" in swin.shared and "model.backbone=conv" in smoke.shared
    assert (swin.methods, swin.pretrain, swin.finetune, swin.labeled) == (
        smoke.methods,
        smoke.pretrain,
        smoke.finetune,
        smoke.labeled,
    )


@pytest.mark.slow
def test_smoke_swin_suite_runs_every_cell_on_swin(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    assert main(["benchmark", "--suite", "smoke-swin", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert not res["failures"] and set(res["segmentation"]) == {"scratch", "swinssl", "simmim"}
    for init in res["segmentation"]:
        assert 0.0 <= res["segmentation"][init]["2"]["mean_dice"]["mean"] <= 1.0
    assert set(res["correspondence"]) == {"swinssl", "simmim"}
    configs = sorted(out.glob("**/config.yaml"))
    assert len(configs) >= 5  # 2 pretrainings + 3 fine-tunings
    assert all("backbone: swin" in c.read_text() for c in configs), configs
    assert (out / "results.md").is_file() and (out / "plots" / "dice_vs_labeled.png").is_file()
