"""``benchmarks/gpu_check.sh --device cpu``: the GPU check's dry run (same code, tiny shapes), for real."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from anatssl.methods import METHODS

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_check.sh"


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "check.json"
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--device", "cpu", "--out", str(out), "--steps", "2", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
    )
    assert out.is_file(), proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_cpu_dry_run_checks_every_method_the_swin_parity_and_a_finetuning_step(tmp_path: Path) -> None:
    proc, report = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["ok"] and report["device"] == "cpu"
    assert sorted(report["methods"]) == sorted(METHODS.names())  # every registered method
    for name, r in report["methods"].items():
        assert r["ok"] and len(r["losses"]) == 2 and all(math.isfinite(v) for v in r["losses"]), name
        assert r["step_s"] > 0 and r["peak_cuda_mb"] is None
    parity = report["swin_parity"]
    assert parity["ok"] and parity["max_abs_output_diff"] <= 1e-4 and parity["max_rel_grad_diff"] <= 1e-3
    ft = report["finetune_segmentation"]
    assert ft["ok"] and math.isfinite(ft["loss"]) and ft["roi_size"] == [32, 32, 32]
    assert "checks passed" in proc.stdout


@pytest.mark.slow
def test_a_failing_check_is_reported_and_exits_1(tmp_path: Path) -> None:
    proc, report = _run(tmp_path, "--methods", "simmim", "no_such_method")
    assert proc.returncode == 1
    assert not report["ok"] and report["methods"]["simmim"]["ok"]
    assert "no_such_method" in report["methods"]["no_such_method"]["error"]
    assert "failed: no_such_method" in proc.stdout
