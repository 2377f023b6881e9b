"""A real 2-process ``torchrun`` with the gloo backend on CPU."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from anatssl.engine.checkpoint import load_checkpoint

SCRIPT = """
import sys, json, os
sys.path.insert(0, {tests!r})
import torch
from engine_fixtures import FAST_SWINSSL, MemorySource
from anatssl.config import load_pretrain_config
from anatssl.engine.trainer import Trainer
from anatssl.engine import distributed as D
extra = ["train.max_steps=3", "train.batch_size=1"]
cfg = load_pretrain_config("swinssl", "tiny", None, [*FAST_SWINSSL, *extra])
tr = Trainer(cfg, MemorySource(), sys.argv[1])
tr.fit()
total = sum(float(p.detach().double().sum()) for p in tr.method.parameters())
with open(os.path.join(sys.argv[1], f"rank{{D.rank()}}.json"), "w") as f:
    json.dump({{"rank": D.rank(), "world": D.world_size(), "checksum": total}}, f)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun not found",
)
def test_two_process_gloo_run_keeps_ranks_in_sync(tmp_path: Path) -> None:
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parents[1])))
    run = tmp_path / "run"
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()), str(script), str(run)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # DDP averaged the gradients: both ranks hold the same weights after 3 steps
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # only rank 0 logs
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
