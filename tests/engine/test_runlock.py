"""One process per run folder (``RUN/run.lock``), proven with real processes and real PIDs."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anatssl.cli.main import main
from anatssl.engine.runlock import RunLockedError, lock_path, read_owner, run_lock
from engine_fixtures import FAST_SWINSSL

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

HOLDER = """
import sys
from anatssl.engine.runlock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()  # hold the lock until the test closes our stdin (or kills us)
"""


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    assert main(["synth", "--out", str(out), "--n", "2", "--seed", "0", "--size", "48", "--quiet"]) == 0
    return out


def _holder(run: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "locked", proc.communicate()[1][-2000:]
    return proc


def _anatssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anatssl.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )


def _pretrain_args(data: Path, run: Path) -> list[str]:
    return ["pretrain", "--method", "swinssl", "--data", str(data), "--out", str(run), *FAST_SWINSSL]


def test_a_second_process_is_refused_naming_the_owner_and_the_lock_goes_at_exit(
    synth_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        rec = read_owner(lock_path(run))
        assert rec is not None and rec["pid"] == holder.pid and rec["host"] == socket.gethostname()
        # pretraining into the held folder: refused before anything is written
        p = _anatssl(*_pretrain_args(synth_data, run), "train.max_steps=1")
        assert p.returncode == 2, p.stderr[-2000:]
        err = p.stderr.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in p.stderr, p.stderr
        assert f"in use by PID {holder.pid} on host {socket.gethostname()}" in err[0]
        assert f"kill -TERM {holder.pid}" in err[0]
        assert not (run / "config.yaml").exists() and not (run / "checkpoints").exists()
        # fine-tuning into it (from this test's own process): refused the same way
        capsys.readouterr()
        code = main(
            ["finetune", "--task", "segmentation", "--data", str(synth_data), "--init", "scratch",
             "--out", str(run), "train.max_steps=1"]
        )  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and f"in use by PID {holder.pid}" in err and "Traceback" not in err, err
        assert not (run / "metrics.json").exists()
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    assert not lock_path(run).exists()  # released at exit
    with run_lock(run):  # the folder is free again
        assert read_owner(lock_path(run))["pid"] == os.getpid()  # type: ignore[index]


def test_the_lock_of_a_killed_process_is_taken_over_with_a_warning(
    synth_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    holder = _holder(run)
    holder.send_signal(signal.SIGKILL)  # no chance to clean up: the lock file stays
    holder.communicate(timeout=60)
    rec = read_owner(lock_path(run))
    assert rec is not None and rec["pid"] == holder.pid
    logger = logging.getLogger("anatssl")  # it does not propagate to the root logger caplog listens on
    logger.addHandler(caplog.handler)
    try:
        assert main([*_pretrain_args(synth_data, run), "train.max_steps=1"]) == 0
    finally:
        logger.removeHandler(caplog.handler)
    taken = [r.getMessage() for r in caplog.records if "taking over the stale lock" in r.getMessage()]
    assert len(taken) == 1 and f"PID {holder.pid}" in taken[0]
    assert (run / "checkpoints" / "last.pt").is_file() and not lock_path(run).exists()


def _write_lock(run: Path, **rec: object) -> None:
    run.mkdir(parents=True, exist_ok=True)
    lock_path(run).write_text(json.dumps(rec))


def test_live_foreign_and_reused_pid_locks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    host = socket.gethostname()
    # a live process on this host (our parent): refused
    live = tmp_path / "live"
    _write_lock(live, pid=os.getppid(), host=host, started="then", proc_start=None)
    with pytest.raises(RunLockedError, match=f"in use by PID {os.getppid()} on host {host}"):
        with run_lock(live):
            pass
    assert read_owner(lock_path(live))["pid"] == os.getppid()  # type: ignore[index]  # left alone
    # another host: cannot be checked from here, never taken over; the message says what to do
    far = tmp_path / "far"
    _write_lock(far, pid=1, host="node-elsewhere-17", started="then")
    with pytest.raises(RunLockedError, match=r"on host node-elsewhere-17.*delete .*run\.lock"):
        with run_lock(far):
            pass
    # a PID that now belongs to a process started after the lock was written (PID reuse): stale
    reused = tmp_path / "reused"
    _write_lock(reused, pid=os.getpid(), host=host, started="then", proc_start=1)
    logger = logging.getLogger("anatssl")
    logger.addHandler(caplog.handler)
    try:
        with run_lock(reused):
            assert read_owner(lock_path(reused))["proc_start"] != 1  # type: ignore[index]
    finally:
        logger.removeHandler(caplog.handler)
    assert any("taking over the stale lock" in r.getMessage() for r in caplog.records)
    assert not lock_path(reused).exists()


def test_nested_holds_in_one_process_and_rank_zero_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    with run_lock(run):
        with run_lock(run):  # run_pretraining -> pretrain -> Trainer: one process, one lock
            assert lock_path(run).exists()
        assert lock_path(run).exists()  # the outer hold still owns it
    assert not lock_path(run).exists()
    # a rank > 0 of a torchrun launch takes no lock: rank 0's lock does not stop it
    _write_lock(run, pid=os.getppid(), host=socket.gethostname(), started="then")
    monkeypatch.setenv("RANK", "1")
    with run_lock(run):
        pass
    assert read_owner(lock_path(run))["pid"] == os.getppid()  # type: ignore[index]


def test_a_lock_file_cut_short_is_stale_only_once_old(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    lock_path(run).write_text("")  # its writer died between creating and writing it
    with pytest.raises(RunLockedError, match="unknown process"):
        with run_lock(run):
            pass
    old = time.time() - 3600
    os.utime(lock_path(run), (old, old))
    with run_lock(run):
        assert read_owner(lock_path(run))["pid"] == os.getpid()  # type: ignore[index]


def test_a_requeued_slurm_job_takes_over_its_previous_runs_lock_from_another_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    # run 0 of job 4242 held the lock on a node that died; the requeued run starts elsewhere
    _write_lock(run, pid=77, host="node-that-died", started="then", slurm_job="4242", slurm_restart=0)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # not a requeue: the other node's lock stands
    with pytest.raises(RunLockedError, match="node-that-died"):
        with run_lock(run):
            pass
    monkeypatch.setenv("SLURM_JOB_ID", "5555")  # another job, even a later one: refused too
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")
    with pytest.raises(RunLockedError, match="node-that-died"):
        with run_lock(run):
            pass
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with run_lock(run):
        rec = read_owner(lock_path(run))
        assert rec is not None and rec["pid"] == os.getpid()
        assert rec["slurm_job"] == "4242" and rec["slurm_restart"] == 1
    assert not lock_path(run).exists()
