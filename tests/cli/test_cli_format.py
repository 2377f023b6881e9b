"""``--format`` on every command that takes a dataset: a layout that is not in the folder is refused with
the layout reader's message (exit status 2), and a matching one is read (the command gets past the
dataset and runs or stops at its next check). Real layouts written on disk (tests/data/layout_fixtures)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from layout_fixtures import nnunet

from anatssl.cli.main import main

NOT_BTCV = "img/ holds no imgXXXX.nii.gz files"


def test_benchmark_format_mismatch_and_match(tmp_path, capsys):
    root = nnunet(tmp_path / "Dataset004_X", n=2)
    base = ["benchmark", "--suite", "smoke", "--out", str(tmp_path / "b"), "--data", str(root)]
    assert main([*base, "--format", "btcv"]) == 2
    assert NOT_BTCV in capsys.readouterr().err
    # read as nnunet, the run goes on to its next check (--jobs 0), so nothing is trained here
    assert main([*base, "--format", "nnunet", "--jobs", "0"]) == 2
    err = capsys.readouterr().err
    assert "--jobs must be >= 1, got 0" in err and NOT_BTCV not in err
    assert main(["benchmark", "--suite", "smoke", "--out", str(tmp_path / "c"), "--format", "btcv"]) == 2
    assert "--format btcv names the layout of --data; give --data too" in capsys.readouterr().err
