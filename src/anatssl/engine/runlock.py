"""One process per run folder: ``RUN/run.lock`` names the owner (PID, host, start time, command).

``anatssl pretrain`` and ``anatssl finetune`` take the lock before writing anything into their
``--out``; a second process refuses with :class:`RunLockedError` naming the owner.
A lock whose process is gone (a dead PID on this host, or a PID since reused by another program,
told apart by the process start time in ``/proc``) is stale: it is taken over with a warning, so a
``kill -9`` never blocks a rerun. A lock written on another host cannot be checked from here and is
not taken over (the message says so), with one exception: under SLURM the lock records the job id
and its restart count, and a requeued job (same ``SLURM_JOB_ID``, higher ``SLURM_RESTART_COUNT``)
knows its previous run is over wherever it ran, so a node that died mid-run does not block the
requeue. Under ``torchrun`` / ``srun`` only rank 0 (``RANK`` in the environment) takes it. The lock is
released when the ``with`` block ends or, for :func:`hold_run_lock`, when the process exits.

Creating the file is atomic (``O_CREAT | O_EXCL``); taking over a stale lock is serialised by a
second ``run.lock.takeover`` file, so two processes that find the same stale lock cannot both win.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from anatssl.engine.checkpoint import LOCK_FILE
from anatssl.errors import AnatsslError

log = logging.getLogger("anatssl")


class RunLockedError(AnatsslError, RuntimeError):
    """The run folder belongs to another live process (its lock file names the owner)."""


TAKEOVER_TIMEOUT_S = 30.0
"""A ``run.lock.takeover`` file older than this was left by a process that died while taking over."""

_held: dict[Path, int] = {}  # lock files this process holds -> nesting depth


def lock_path(run_dir: str | Path) -> Path:
    """``RUN/run.lock`` as an absolute path (the key of this process's holds)."""
    return Path(os.path.abspath(Path(run_dir) / LOCK_FILE))


def _proc_start_ticks(pid: int) -> int | None:
    """The process start time (clock ticks since boot, ``/proc/PID/stat`` field 22); None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after its last ')'
    return int(stat.rsplit(")", 1)[1].split()[19])


def _owner_record() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "proc_start": _proc_start_ticks(pid),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv else "",
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart": _slurm_restart(),
    }


def _slurm_restart() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def _earlier_run_of_this_job(rec: dict[str, Any]) -> bool:
    """Whether the lock was taken by an earlier run of the SLURM job this process belongs to (a requeue:
    SLURM starts a requeued job only after its previous run has ended)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or rec.get("slurm_job") != job:
        return False
    return int(rec.get("slurm_restart") or 0) < _slurm_restart()


def read_owner(path: Path) -> dict[str, Any] | None:
    """The lock file's record; None if there is none. An unreadable file reads as ``{}``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        rec = json.loads(text)
    except json.JSONDecodeError:
        return {}  # cut short (its writer died between create and write): stale once old enough
    return rec if isinstance(rec, dict) else {}


def _is_stale(rec: dict[str, Any], path: Path) -> bool:
    """Whether the owner is certainly gone: its PID is dead on this host, or now belongs to a process
    started later (PID reuse). An empty / unreadable record is stale after TAKEOVER_TIMEOUT_S."""
    if not rec:
        try:
            return time.time() - path.stat().st_mtime > TAKEOVER_TIMEOUT_S
        except FileNotFoundError:
            return True
    if _earlier_run_of_this_job(rec):
        return True
    if rec.get("host") != socket.gethostname():
        return False
    pid = int(rec.get("pid", -1))
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    recorded, now = rec.get("proc_start"), _proc_start_ticks(pid)
    return recorded is not None and now is not None and int(recorded) != now


def describe_owner(rec: dict[str, Any]) -> str:
    if not rec:
        return "an unknown process (the lock file is empty or unreadable)"
    cmd = f": {rec['command']}" if rec.get("command") else ""
    return f"PID {rec.get('pid')} on host {rec.get('host')}, started {rec.get('started')}{cmd}"


def _create(path: Path) -> bool:
    """Write our record into a new lock file; False if one exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(_owner_record(), f)
        f.write("\n")
    return True


@contextlib.contextmanager
def _takeover_guard(path: Path) -> Iterator[bool]:
    """Hold ``run.lock.takeover`` (yields False if another process holds it)."""
    guard = path.with_name(path.name + ".takeover")
    with contextlib.suppress(FileNotFoundError):
        if time.time() - guard.stat().st_mtime > TAKEOVER_TIMEOUT_S:
            guard.unlink()
    try:
        fd = os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        yield False
        return
    os.close(fd)
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            guard.unlink()


def _refuse(run_dir: Path, path: Path, rec: dict[str, Any]) -> RunLockedError:
    here = rec.get("host") == socket.gethostname()
    what = (
        f"stop it first (kill -TERM {rec.get('pid')} saves a checkpoint and exits) or wait for it"
        if here and rec
        else f"if no process uses the folder any more, delete {path}"
    )
    return RunLockedError(
        f"run folder {run_dir} is in use by {describe_owner(rec)} (lock {path}); "
        f"{what}, or choose another --out"
    )


def acquire(run_dir: str | Path) -> bool:
    """Take ``run_dir``'s lock for this process; False if this process already held it (nested).

    Raises RunLockedError naming the owner if a live process holds it.
    """
    run_dir = Path(run_dir)
    path = lock_path(run_dir)
    if path in _held:
        _held[path] += 1
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        if _create(path):
            _held[path] = 1
            return True
        rec = read_owner(path)
        if rec is None:
            continue  # released between our two calls
        if not _is_stale(rec, path):
            raise _refuse(run_dir, path, rec)
        with _takeover_guard(path) as ours:
            if not ours:
                time.sleep(0.2)
                continue
            again = read_owner(path)
            if again is not None and again != rec:
                continue  # someone else took it over meanwhile: look again
            log.warning(
                "taking over the stale lock of %s: its owner (%s) is gone", run_dir, describe_owner(rec)
            )
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            if _create(path):
                _held[path] = 1
                return True
    rec = read_owner(path) or {}
    raise _refuse(run_dir, path, rec)


def release(run_dir: str | Path) -> None:
    """Drop one level of this process's hold; the file goes when the outermost holder releases it,
    and only if it still names this process."""
    path = lock_path(run_dir)
    depth = _held.get(path, 0)
    if depth > 1:
        _held[path] = depth - 1
        return
    _held.pop(path, None)
    rec = read_owner(path)
    if rec and rec.get("pid") == os.getpid() and rec.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def is_lock_rank() -> bool:
    """Whether this process takes run locks: not a rank > 0 of a torchrun / srun launch."""
    return int(os.environ.get("RANK", "0") or 0) == 0


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block (only rank 0 under torchrun; re-entrant in one process)."""
    if not is_lock_rank():
        yield
        return
    acquire(run_dir)
    try:
        yield
    finally:
        release(run_dir)


def hold_run_lock(run_dir: str | Path) -> None:
    """Take ``run_dir``'s lock (rank 0 only) if this process does not hold it, until the process exits."""
    if is_lock_rank() and lock_path(run_dir) not in _held:
        acquire(run_dir)
        atexit.register(release, Path(run_dir))
