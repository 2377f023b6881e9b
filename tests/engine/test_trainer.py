"""The engine proven on a real method (swinssl on the conv backbone, 32^3 crops)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from anatssl.engine.checkpoint import load_checkpoint
from anatssl.engine.data import StepBatchSampler, ViewDataset
from anatssl.engine.trainer import Trainer, lr_at, pretrain
from anatssl.errors import ConfigError, TrainingError
from anatssl.runs import load_pretrain_config
from engine_fixtures import FAST_SWINSSL, MemorySource


def _cfg(*extra: str):  # type: ignore[no-untyped-def]
    return load_pretrain_config("swinssl", "tiny", None, [*FAST_SWINSSL, *extra])


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_metrics_checkpoint_and_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    pretrain(_cfg("train.max_steps=6", "train.ckpt_every=3"), MemorySource(), run)
    rows = _rows(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        for key in ("loss", "rot", "contrast", "inpaint", "lr", "seconds"):
            assert math.isfinite(r[key]), key
    assert rows[0]["lr"] == pytest.approx(lr_at(_cfg("train.max_steps=6"), 0))
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 6 and ckpt["method"] == "swinssl"
    assert any(k.startswith("backbone.") for k in ckpt["model"])
    assert (run / "config.yaml").is_file()
    assert not [p for p in (run / "checkpoints").iterdir() if p.name != "last.pt"]


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    pretrain(_cfg("train.max_steps=8", "train.ckpt_every=100"), MemorySource(), full)
    pretrain(_cfg("train.max_steps=8", "train.stop_after=4"), MemorySource(), part)
    assert load_checkpoint(part / "checkpoints" / "last.pt")["step"] == 4
    pretrain(_cfg("train.max_steps=8", "train.ckpt_every=100"), MemorySource(), part, resume=True)
    a, b = _rows(full), _rows(part)
    assert [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b):
        assert abs(ra["loss"] - rb["loss"]) < 1e-5, (ra, rb)
        assert ra["lr"] == pytest.approx(rb["lr"])
    wa = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(part / "checkpoints" / "last.pt")["model"]
    assert max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa) < 1e-5


def test_existing_run_needs_resume(tmp_path: Path) -> None:
    pretrain(_cfg("train.max_steps=1"), MemorySource(), tmp_path / "r")
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(_cfg("train.max_steps=2"), MemorySource(), tmp_path / "r")


class _GoesBad(MemorySource):
    """Returns NaN images once ``good_loads`` volumes have been served (a scan going bad mid-run)."""

    def __init__(self, good_loads: int) -> None:
        super().__init__()
        self.good_loads = good_loads
        self.calls = 0

    def load(self, index: int):  # type: ignore[no-untyped-def]
        self.calls += 1
        v = super().load(index)
        if self.calls > self.good_loads:
            v = type(v)(np.full_like(v.image, np.nan), v.affine, v.path)
        return v


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "r"
    with pytest.raises(TrainingError, match=r"non-finite loss at step 3 .*last good checkpoint"):
        pretrain(_cfg("train.max_steps=10", "train.ckpt_every=2"), _GoesBad(good_loads=4), run)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
    assert [r["step"] for r in _rows(run)] == [1, 2]


def test_sample_order_is_a_function_of_position() -> None:
    src = MemorySource(n=5)
    ds = ViewDataset(src, lambda v, rng, s: {"path": v.path, "r": rng.random()}, seed=3)
    first = [ds[p] for p in range(10)]
    again = [ds[p] for p in range(10)]
    assert first == again
    # each epoch of n positions visits every volume once
    assert sorted(d["path"] for d in first[:5]) == sorted(v.path for v in src.volumes)
    # resuming at step 2 yields the same positions as the uninterrupted sampler
    full = list(StepBatchSampler(0, 4, 2, 1))
    assert list(StepBatchSampler(2, 4, 2, 1)) == full[2:]
    # two ranks never draw the same position
    r0 = {p for b in StepBatchSampler(0, 4, 2, 2, rank=0, world_size=2) for p in b}
    r1 = {p for b in StepBatchSampler(0, 4, 2, 2, rank=1, world_size=2) for p in b}
    assert not r0 & r1 and len(r0) == len(r1) == 16


SCRIPT = """
import signal, sys
# a shell that starts jobs in the background (nohup, `&`) hands them SIGINT ignored; restore Ctrl-C
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {tests!r})
from engine_fixtures import FAST_SWINSSL, MemorySource
from anatssl.runs import load_pretrain_config
from anatssl.engine.trainer import pretrain
cfg = load_pretrain_config("swinssl", "tiny", None, [*FAST_SWINSSL, "train.max_steps=100000",
                                                     "train.ckpt_every=100000"])
print("started", flush=True)
pretrain(cfg, MemorySource(), sys.argv[1])
"""


def test_ctrl_c_saves_a_checkpoint(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parents[1])))
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.time() + 600  # generous: CI machines can be slow; the loop exits as soon as ready
        metrics = run / "metrics.jsonl"
        while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
            if proc.poll() is not None:
                pytest.fail(f"training exited early: {proc.communicate()[1][-2000:]}")
            time.sleep(0.2)
        assert metrics.exists() and len(metrics.read_text().splitlines()) >= 2, (
            "no training steps within 600 s"
        )
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:  # never leave a training process behind
            proc.kill()
    assert proc.returncode != 0
    assert "RunInterrupted: stopped by SIGINT" in err and "KeyboardInterrupt" not in err
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert step >= 2
    assert len(_rows(run)) >= step


def test_fp16_on_cpu_is_refused(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        Trainer(_cfg("train.amp=fp16"), MemorySource(), tmp_path / "r")


def test_bf16_autocast_runs_on_cpu(tmp_path: Path) -> None:
    pretrain(_cfg("train.max_steps=2", "train.amp=bf16"), MemorySource(), tmp_path / "r")
    assert all(math.isfinite(r["loss"]) for r in _rows(tmp_path / "r"))


def test_grad_accumulation_matches_a_double_batch_in_sample_count(tmp_path: Path) -> None:
    pretrain(
        _cfg("train.max_steps=2", "train.grad_accum=2", "train.batch_size=1"), MemorySource(), tmp_path / "r"
    )
    assert len(_rows(tmp_path / "r")) == 2


class _OneBad(MemorySource):
    def load(self, index: int):  # type: ignore[no-untyped-def]
        if index == 1:
            from anatssl.errors import DataError

            raise DataError("mem_1.nii.gz: truncated gzip stream; re-export the scan or remove it")
        return super().load(index)


def test_a_scan_that_fails_mid_run_is_skipped_with_a_warning(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    logger = logging.getLogger("anatssl")
    logger.addHandler(caplog.handler)
    try:
        pretrain(_cfg("train.max_steps=3"), _OneBad(), tmp_path / "r")
    finally:
        logger.removeHandler(caplog.handler)
    assert len(_rows(tmp_path / "r")) == 3
    warnings = [r.getMessage() for r in caplog.records if "skipping a bad scan" in r.getMessage()]
    assert len(warnings) == 1 and "mem_1.nii.gz" in warnings[0]


def test_max_minutes_pauses_with_a_checkpoint_and_resume_finishes(tmp_path: Path) -> None:
    run = tmp_path / "r"
    # 1e-6 minutes: the limit is crossed by the first step, which is saved
    pretrain(_cfg("train.max_steps=3", "train.ckpt_every=100", "train.max_minutes=1e-6"), MemorySource(), run)
    assert [r["step"] for r in _rows(run)] == [1]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1
    pretrain(_cfg("train.max_steps=3", "train.ckpt_every=100"), MemorySource(), run, resume=True)
    assert [r["step"] for r in _rows(run)] == [1, 2, 3]
    with pytest.raises(ConfigError, match="train.max_minutes must be > 0"):
        _cfg("train.max_minutes=0")
