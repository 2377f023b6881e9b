"""Cluster life of a run through the real CLI in real processes: Ctrl-C, SIGUSR1 and SIGTERM each
save a checkpoint and exit with 128 + the signal (one line, no traceback); the same command with
``--resume auto`` starts the run the first time and continues it after every stop, ending on the
weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anatssl.cli.main import main
from anatssl.engine.checkpoint import load_checkpoint
from anatssl.engine.runlock import lock_path
from engine_fixtures import FAST_SWINSSL

STEPS = 24


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    assert main(["synth", "--out", str(out), "--n", "3", "--seed", "0", "--size", "48", "--quiet"]) == 0
    return out


def _command(data: Path, run: Path) -> list[str]:
    return [
        sys.executable, "-m", "anatssl.cli.main", "pretrain", "--method", "swinssl", "--data", str(data),
        "--out", str(run), "--resume", "auto", *FAST_SWINSSL, f"train.max_steps={STEPS}",
        "train.ckpt_every=1000", "train.batch_size=1",
    ]  # fmt: skip


def _start(cmd: list[str]) -> subprocess.Popen[str]:
    # Ctrl-C reaches a job as SIGINT; a background shell starts children with SIGINT ignored, so reset it
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"},  # log lines unwrapped
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return rows[-1]["step"] if rows else 0


def _stop_after(cmd: list[str], run: Path, at_least: int, sig: signal.Signals) -> tuple[int, str]:
    """Run ``cmd`` until ``metrics.jsonl`` reaches ``at_least`` steps, send ``sig``, wait for the exit."""
    proc = _start(cmd)
    try:
        deadline = time.time() + 600
        while _logged_steps(run) < at_least:
            if proc.poll() is not None:
                pytest.fail(f"exited before step {at_least}: {proc.communicate()[1][-3000:]}")
            if time.time() > deadline:
                pytest.fail(f"no step {at_least} within 600 s")
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:  # never leave a training process behind
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def _finish(cmd: list[str]) -> str:
    proc = _start(cmd)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return err


@pytest.mark.slow
def test_signals_save_and_resume_auto_reaches_the_uninterrupted_weights(
    synth_data: Path, tmp_path: Path
) -> None:
    full, run = tmp_path / "full", tmp_path / "run"
    err = _finish(_command(synth_data, full))  # --resume auto on an empty folder: starts the run
    assert "has no checkpoint; starting the run" in err

    previous = 0
    for sig, code in ((signal.SIGINT, 130), (signal.SIGUSR1, 138), (signal.SIGTERM, 143)):
        rc, err = _stop_after(_command(synth_data, run), run, previous + 2, sig)
        assert rc == code, (sig.name, err[-3000:])
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
        lines = [ln for ln in err.splitlines() if ln.startswith("anatssl pretrain:")]
        assert len(lines) == 1 and f"stopped by {sig.name} at step" in lines[0], err[-3000:]
        step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
        assert f"at step {step} of {STEPS}" in lines[0]
        assert previous + 2 <= step < STEPS, (sig.name, step)
        assert not lock_path(run).exists()  # released on the way out
        if previous:
            assert "has a checkpoint; resuming" in err
        previous = step

    _finish(_command(synth_data, run))  # the requeued job: continues to the end
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    a = load_checkpoint(full / "checkpoints" / "last.pt")
    b = load_checkpoint(run / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == STEPS
    diff = max((a["model"][k].float() - b["model"][k].float()).abs().max().item() for k in a["model"])
    assert diff < 1e-5, diff


@pytest.mark.slow
def test_ctrl_c_to_the_whole_process_group_with_loader_workers(synth_data: Path, tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches every process of the foreground group, DataLoader workers included:
    the workers leave it to the training process, which saves and exits 130 without a traceback."""
    run = tmp_path / "run"
    cmd = [*_command(synth_data, run), "data.num_workers=1"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"},
        start_new_session=True,  # its own process group, as a terminal job has
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 600
        while _logged_steps(run) < 2:
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"no 2 steps: {proc.communicate()[1][-3000:] if proc.poll() is not None else ''}")
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "worker" not in err.lower(), err
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 2 <= step < STEPS
    _finish(cmd)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
