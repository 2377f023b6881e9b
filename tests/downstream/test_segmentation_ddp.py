"""Segmentation fine-tuning under a real ``torchrun --nproc_per_node 2`` (gloo on CPU), through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun not found")
def test_two_process_segmentation_finetuning_through_the_cli(synthetic_dataset: Path, tmp_path: Path) -> None:
    """2 ranks, one training volume each, validation + best selection on rank 0: exit 0, rank 0's
    files only once, the ranks' weights equal after the last step (DDP averaged the gradients of
    different volumes), and the saved model is the selected one."""
    out = tmp_path / "ft"
    cmd = [
        TORCHRUN, "--nproc_per_node", "2", "--master_port", str(_free_port()),
        "-m", "anatssl.cli.main", "finetune", "--task", "segmentation", "--data", str(synthetic_dataset),
        "--init", "scratch", "--out", str(out), "--labeled", "2",
        "model.backbone=conv", "model.feature_size=4", "segmentation.roi_size=[32,32,32]",
        "segmentation.samples_per_volume=1", "segmentation.sw_batch_size=2", "segmentation.overlay_cases=1",
        "train.max_steps=4", "train.batch_size=1", "train.log_every=1", "train.progress=false",
        "train.device=cpu", "train.amp=none", "train.val_every=2", "train.select=best",
        "split.n_test=1", "split.n_val=1", "optim.warmup_steps=0", "optim.lr=1e-2",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1  # rank 0 prints the summary, rank 1 nothing

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2
    sums = metrics["rank_weight_sums"]
    assert len(sums) == 2 and sums[0] == sums[1]  # bitwise: DDP kept the two ranks equal
    assert len(metrics["train_cases"]) == 2 and len(metrics["test_cases"]) == 1
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # one writer
    assert [r["step"] for r in rows if r.get("val_dice") is not None] == [2, 4]
    assert metrics["selection"]["rule"] == "best" and metrics["selection"]["step"] in (2, 4)
    for name in ("config.yaml", "model.pt"):
        assert (out / name).is_file()
    assert len(list((out / "predictions").glob("*.nii.gz"))) == 1
    saved = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(t).all() for t in saved.values())
    if metrics["selection"]["step"] == 4:  # the last weights were selected: the file holds them
        total = sum(float(t.double().sum()) for t in saved.values())
        assert total == pytest.approx(sums[0], rel=1e-12)


def test_single_process_tasks_refuse_to_run_under_torchrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """classification in a process whose environment (as torchrun sets it) makes it 1 of 2: refused
    with exit 2 and one line, before anything is written (each rank would run the whole task into --out)."""
    from anatssl.cli.main import main

    for k, v in {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "cls"
    argv = [
        "finetune",
        "--task",
        "classification",
        "--data",
        str(tmp_path),
        "--init",
        "scratch",
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--task classification runs in one process" in err and "Traceback" not in err
    assert not out.exists()
