"""What a resume checks before it touches weights: the changed config keys, and the temporary files
a checkpoint write killed half-way left behind."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anatssl.cli.main import main
from anatssl.engine.checkpoint import config_diff, load_checkpoint, temp_name_pattern
from engine_fixtures import FAST_SWINSSL


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    assert main(["synth", "--out", str(out), "--n", "2", "--seed", "0", "--size", "48", "--quiet"]) == 0
    return out


@pytest.fixture
def anatssl_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    logger = logging.getLogger("anatssl")  # it does not propagate to the root logger caplog listens on
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="anatssl")
    yield caplog
    logger.removeHandler(caplog.handler)


def _args(data: Path, run: Path) -> list[str]:
    return ["pretrain", "--method", "swinssl", "--data", str(data), "--out", str(run), *FAST_SWINSSL]


def test_config_diff_names_dotted_keys() -> None:
    old = {"model": {"feature_size": 12, "backbone": "conv"}, "train": {"max_steps": 4}, "x": [1, 2]}
    new = {
        "model": {"feature_size": 24, "backbone": "conv"},
        "train": {"max_steps": 4, "new": 1},
        "x": (1, 2),
    }
    assert config_diff(old, new) == ["model.feature_size: 12 -> 24", "train.new: (unset) -> 1"]


def test_resume_with_a_different_model_names_the_keys_and_leaves_the_run_as_it_was(
    synth_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    anatssl_log: pytest.LogCaptureFixture,
) -> None:
    run = tmp_path / "run"
    assert main([*_args(synth_data, run), "train.max_steps=3", "train.stop_after=2"]) == 0
    config_before = (run / "config.yaml").read_text()
    ckpt_before = (run / "checkpoints" / "last.pt").read_bytes()
    capsys.readouterr()

    code = main([*_args(synth_data, run), "--resume", "model.feature_size=12"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("anatssl pretrain: error:")]
    assert len(errors) == 1 and "does not fit the model" in errors[0], err
    assert "model.feature_size: 8 -> 12" in errors[0]
    assert "size mismatch" not in err and "Error(s) in loading state_dict" not in err  # not PyTorch's dump
    # nothing was overwritten: a plain --resume still continues the run
    assert (run / "config.yaml").read_text() == config_before
    assert (run / "checkpoints" / "last.pt").read_bytes() == ckpt_before

    # a change the weights do not care about is named in the log, and the run goes on
    assert main([*_args(synth_data, run), "--resume", "train.max_steps=4"]) == 0
    changed = [
        r.getMessage() for r in anatssl_log.records if "resuming with changed settings" in r.getMessage()
    ]
    assert changed and "train.max_steps: 3 -> 4" in changed[-1] and "feature_size" not in changed[-1]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4


KILLED_WRITER = """
import sys, time
import torch
from anatssl.engine.checkpoint import atomic_torch_save

class Stall:  # pickled after the tensor bytes: the write is under way, its temp file open
    def __reduce__(self):
        print("writing", flush=True)
        time.sleep(3600)
        return (int, ())

atomic_torch_save({"big": torch.zeros(1 << 20), "stall": Stall()}, sys.argv[1])
"""


def test_temp_files_of_a_write_killed_mid_way_are_removed_at_start(
    synth_data: Path, tmp_path: Path, anatssl_log: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    assert main([*_args(synth_data, run), "train.max_steps=3", "train.stop_after=1"]) == 0
    ckpts = run / "checkpoints"
    # a real writer, SIGKILLed in the middle of atomic_torch_save (between its write and its rename)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(ckpts / "last.pt")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    orphans = sorted(ckpts.glob(temp_name_pattern()))
    assert len(orphans) == 1 and orphans[0].name.startswith(".last.pt.")
    assert load_checkpoint(ckpts / "last.pt")["step"] == 1  # the kill left the real checkpoint intact
    (ckpts / ".step_0000002.pt.k3j9x.tmp").write_bytes(b"half")  # a periodic copy cut short
    unrelated = ckpts / "notes.tmp"
    unrelated.write_text("mine")
    with (run / "metrics.jsonl").open("a") as f:  # the killed run's last row, cut short mid-write
        f.write('{"step": 2, "loss": 0.5')
    time.sleep(0.01)

    assert main([*_args(synth_data, run), "--resume"]) == 0
    assert not list(ckpts.glob(temp_name_pattern()))
    assert unrelated.read_text() == "mine"
    removed = [r.getMessage() for r in anatssl_log.records if r.getMessage().startswith("removed ")]
    assert len(removed) == 2 and any(orphans[0].name in m for m in removed)
    assert load_checkpoint(ckpts / "last.pt")["step"] == 3
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
