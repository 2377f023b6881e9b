"""A real 2-process ``torchrun`` with the gloo backend on CPU, and 2 "nodes" x 1 process joined through
torchrun's c10d rendezvous on localhost (the multi-node recipe of docs/engine.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from anatssl.engine.checkpoint import load_checkpoint
from engine_fixtures import FAST_S2DC, FAST_SWINSSL

STEPS = ["train.max_steps=3", "train.batch_size=1"]
S2DC_OPTS = [*FAST_S2DC, "s2dc.queue_size=8", "train.progress=false", "train.tensorboard=false"]

SCRIPT = """
import sys, json, os
sys.path.insert(0, {tests!r})
import torch
from engine_fixtures import MemorySource
from anatssl.runs import load_pretrain_config
from anatssl.engine.trainer import Trainer
from anatssl.engine import distributed as D
spec = json.loads(sys.argv[2])
cfg = load_pretrain_config(spec["method"], "tiny", None, spec["overrides"])
tr = Trainer(cfg, MemorySource(shape=tuple(spec["shape"])), sys.argv[1])
tr.fit()
total = sum(float(p.detach().double().sum()) for p in tr.method.parameters())
queue = getattr(tr.method, "queue", None)
pg = torch.distributed.distributed_c10d._get_default_group()
timeout = pg._get_backend(torch.device("cpu")).options._timeout.total_seconds()  # train.dist_timeout_minutes
with open(os.path.join(sys.argv[1], f"rank{{D.rank()}}.json"), "w") as f:
    json.dump({{"rank": D.rank(), "world": D.world_size(), "checksum": total, "timeout_s": timeout,
               "queue": None if queue is None else queue.features().tolist()}}, f)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(tmp_path: Path, spec: dict) -> tuple[Path, list[dict]]:
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parents[1])))
    run = tmp_path / "run"
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()), str(script), str(run)]
        + [json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, _check_run(run)


def _check_run(run: Path) -> list[dict]:
    ranks = [json.loads((run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # DDP averaged the gradients: both ranks hold the same weights after 3 steps
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # only rank 0 logs
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    assert not (run / "run.lock").exists()  # rank 0 took the run's lock (rank 1 none) and released it
    return ranks


needs_torchrun = pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun not found",
)


@needs_torchrun
def test_two_process_gloo_run_keeps_ranks_in_sync(tmp_path: Path) -> None:
    spec = {"method": "swinssl", "overrides": [*FAST_SWINSSL, *STEPS], "shape": [40, 40, 36]}
    _torchrun(tmp_path, spec)


@needs_torchrun
def test_two_process_s2dc_run_gathers_one_queue(tmp_path: Path) -> None:
    """S2DC under torchrun: weights in sync, and each rank's queue holds the keys of *both* ranks."""
    spec = {"method": "s2dc", "overrides": [*S2DC_OPTS, *STEPS], "shape": [64, 64, 32]}
    _, ranks = _torchrun(tmp_path, spec)
    q0, q1 = (torch.tensor(r["queue"]) for r in ranks)
    assert q0.shape == (6, 16)  # 3 steps x 2 ranks x 1 volume, queue of 8 not yet full
    torch.testing.assert_close(q0, q1, rtol=0, atol=0)
    # the two keys enqueued at a step came from different volumes (rank 0's, then rank 1's)
    assert all((q0[2 * i] - q0[2 * i + 1]).abs().max() > 1e-4 for i in range(3))


@needs_torchrun
@pytest.mark.slow
def test_two_nodes_join_through_c10d_rendezvous(tmp_path: Path) -> None:
    """Two torchrun invocations (--nnodes 2, one process each) meet at a c10d rendezvous endpoint on
    localhost, as two machines of a cluster would; the run's weights agree on both and the process
    group has the timeout the config asks for."""
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parents[1])))
    run = tmp_path / "run"
    spec = {
        "method": "swinssl",
        "overrides": [*FAST_SWINSSL, *STEPS, "train.dist_timeout_minutes=7"],
        "shape": [40, 40, 36],
    }
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    endpoint = f"localhost:{_free_port()}"
    node = [
        torchrun, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", endpoint, "--rdzv-id", "anatssl-test", str(script), str(run), json.dumps(spec),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(node, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in (0, 1)
    ]
    try:
        outs = [p.communicate(timeout=900) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:  # never leave a node behind
                p.kill()
                p.communicate()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    ranks = _check_run(run)
    assert [r["timeout_s"] for r in ranks] == [420.0, 420.0]


STOP_SCRIPT = """
import sys, json, os
sys.path.insert(0, {tests!r})
import torch
from engine_fixtures import MemorySource
from anatssl.runs import load_pretrain_config
from anatssl.engine.trainer import Trainer
from anatssl.engine.signals import RunInterrupted
from anatssl.engine import distributed as D
cfg = load_pretrain_config("swinssl", "tiny", None, json.loads(sys.argv[2]))
run = sys.argv[1]
tr = Trainer(cfg, MemorySource(), run)
with open(os.path.join(run, f"pid{{D.rank()}}"), "w") as f:
    f.write(str(os.getpid()))
try:
    tr.fit()
    code, step = 0, None
except RunInterrupted as e:
    code, step = e.exit_code, e.step
total = sum(float(p.detach().double().sum()) for p in tr.method.parameters())
with open(os.path.join(run, f"stopped{{D.rank()}}.json"), "w") as f:
    json.dump({{"code": code, "step": step, "checksum": total}}, f)
sys.exit(code)
"""


def _stop_run(tmp_path: Path, send: Callable[[subprocess.Popen[str], Path], None]) -> tuple[list[dict], str]:
    """A long 2-process torchrun run; after 2 logged steps ``send(torchrun, run)`` signals it; -> what
    each rank reported when it stopped, and torchrun's stderr."""
    script = tmp_path / "stop.py"
    script.write_text(STOP_SCRIPT.format(tests=str(Path(__file__).parents[1])))
    run = tmp_path / "run"
    overrides = [*FAST_SWINSSL, "train.max_steps=100000", "train.ckpt_every=100000", "train.batch_size=1"]
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    proc = subprocess.Popen(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()), str(script), str(run)]
        + [json.dumps(overrides)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.time() + 600
        metrics = run / "metrics.jsonl"
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"no 2 steps: {proc.communicate()[1][-3000:] if proc.poll() is not None else ''}")
            time.sleep(0.05)
        send(proc, run)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0  # torchrun reports its workers' non-zero exits (or its own signal)
    stopped = [json.loads((run / f"stopped{r}.json").read_text()) for r in (0, 1)]
    assert stopped[0]["step"] == stopped[1]["step"] >= 2, err[-3000:]
    assert stopped[0]["checksum"] == pytest.approx(stopped[1]["checksum"], rel=1e-6)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == stopped[0]["step"]
    assert not (run / "run.lock").exists()
    return stopped, err


@needs_torchrun
@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    """SIGUSR1 reaches only rank 1 (as when a cluster signals one task): the ranks agree on it at the
    step boundary, stop together, rank 0 saves that step, and each exits 138."""
    stopped, err = _stop_run(
        tmp_path, lambda _, run: os.kill(int((run / "pid1").read_text()), signal.SIGUSR1)
    )
    assert [s["code"] for s in stopped] == [138, 138], err[-3000:]


@needs_torchrun
@pytest.mark.slow
def test_sigterm_to_torchrun_is_passed_on_and_the_run_saves(tmp_path: Path) -> None:
    """`kill` / `scancel` to the torchrun agent: it passes SIGTERM on to its workers, which save the
    step they agree on and exit 143 before the agent's shutdown timeout."""
    stopped, err = _stop_run(tmp_path, lambda proc, _: proc.send_signal(signal.SIGTERM))
    assert [s["code"] for s in stopped] == [143, 143], err[-3000:]
