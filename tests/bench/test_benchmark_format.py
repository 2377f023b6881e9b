"""``anatssl benchmark --format``: the named layout reaches every cell that reads ``--data``
(pretraining, fine-tuning, dense evaluation, landmark matching, the SAM arm's split), not only the
command's up-front check. An nnU-Net folder read with ``btcv`` must fail inside each cell with the BTCV
reader's message; with detection those cells would read it as nnU-Net and train."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from layout_fixtures import btcv, nnunet

from anatssl.bench.suites import get_suite
from anatssl.errors import DataError

NOT_BTCV = "img/ holds no imgXXXX.nii.gz files"


def test_run_suite_reads_the_data_as_the_named_format_in_every_cell(tmp_path: Path) -> None:
    from anatssl.bench.runner import run_suite

    data = nnunet(tmp_path / "Dataset004_X", n=2)
    suite = dataclasses.replace(get_suite("smoke"), dense=(1,))
    out = tmp_path / "bench"
    results = run_suite(suite, out, data=data, data_format="btcv")
    failures = results["failures"]
    assert set(failures) == {
        "pretrain-swinssl-s0",
        "pretrain-simmim-s0",
        "finetune-scratch-n2-s0",
        "dense-scratch-s0",
    }
    assert all(NOT_BTCV in e for e in failures.values()), failures
    assert json.loads((out / "cells" / "data.json").read_text())["format"] == "btcv"


def test_landmark_matching_and_the_sam_split_read_the_named_format(tmp_path: Path) -> None:
    from anatssl.bench.runner import correspondence_cell
    from anatssl.bench.sam_arm import run_sam_arm

    data = nnunet(tmp_path / "Dataset004_X", n=2)
    suite = get_suite("smoke")
    with pytest.raises(DataError, match=NOT_BTCV):
        correspondence_cell("no-run-needed", data, suite, tmp_path / "c", "btcv")
    with pytest.raises(DataError, match=NOT_BTCV):
        run_sam_arm(get_suite("real-mri"), data, tmp_path / "sam", "btcv")
    assert not (tmp_path / "sam" / "sam" / "pretraining.json").exists()


def test_cli_passes_the_format_to_the_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A BTCV folder that also holds an MSD dataset.json is detected as msd; ``--format btcv`` is
    accepted (the cells read BTCV) and handed to the suite."""
    from anatssl.bench import runner
    from anatssl.cli import benchmark
    from anatssl.data.layouts import detect_format

    root = btcv(tmp_path / "mixed", n=3)
    training = [{"image": f"img/img{i:04d}.nii.gz", "label": f"label/label{i:04d}.nii.gz"} for i in (1, 2)]
    (root / "dataset.json").write_text(json.dumps({"training": training, "labels": {"0": "bg", "1": "a"}}))
    assert detect_format(root) == "msd"
    seen: dict[str, Any] = {}

    def fake_run_suite(suite: Any, out: str, **kw: Any) -> dict[str, Any]:
        seen.update(kw)
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "results.md").write_text("")
        return {}

    monkeypatch.setattr(runner, "run_suite", fake_run_suite)
    parser = argparse.ArgumentParser()
    benchmark.add_parser(parser.add_subparsers())
    out = tmp_path / "b"
    args = parser.parse_args(
        ["benchmark", "--suite", "smoke", "--out", str(out), "--data", str(root), "--format", "btcv"]
    )
    assert args.func(args) == 0
    assert seen["data_format"] == "btcv" and seen["data"] == str(root)
