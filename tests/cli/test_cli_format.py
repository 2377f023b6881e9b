"""``--format`` on every command that takes a dataset: a layout that is not in the folder is refused with
the layout reader's message (exit status 2), and a matching one is read (the command gets past the
dataset and runs or stops at its next check). Real layouts written on disk (tests/data/layout_fixtures)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "anatomy"))
from layout_fixtures import btcv, nnunet

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


def mixed(root: Path, msd_cases: int = 3) -> Path:
    """A BTCV folder (img/, label/: 3 cases, BTCV's 13-organ table) that also holds an MSD dataset.json
    listing the first ``msd_cases`` of them with labels 'a', 'b', 'c' and a 'lesion' field: detection
    says msd, ``--format btcv`` reads the BTCV layout instead."""
    btcv(root, n=3)
    training = [
        {"image": f"img/img{i:04d}.nii.gz", "label": f"label/label{i:04d}.nii.gz", "lesion": i % 2}
        for i in range(1, msd_cases + 1)
    ]
    labels = {"0": "background", "1": "a", "2": "b", "3": "c"}
    (root / "dataset.json").write_text(json.dumps({"training": training, "labels": labels}))
    return root


DENSE = ["model.backbone=conv", "model.feature_size=4", "split.n_test=1", "train.progress=false"]


def test_mixed_folder_is_detected_as_msd(tmp_path):
    from anatssl.data.layouts import detect_format

    assert detect_format(mixed(tmp_path / "m")) == "msd"


def test_evaluate_correspondence_format(tmp_path, capsys):
    from sam_fixtures import make_sam_run, write_phantom

    data = tmp_path / "lm"
    (data / "imagesTr").mkdir(parents=True)
    entries = []
    for i in range(3):
        img = write_phantom(data / "imagesTr" / f"case_{i}.nii.gz", seed=i, shift=0.2 * i)
        (data / f"lm_{i}.json").write_text(json.dumps({"a": [0.0, 0.0, 10.0 + i], "b": [20.0, -10.0, -5.0]}))
        entries.append({"image": f"imagesTr/{img.name}", "landmarks": f"lm_{i}.json"})
    (data / "dataset.json").write_text(json.dumps({"training": entries}))
    run = make_sam_run(tmp_path / "sam")
    base = ["evaluate", "correspondence", "--model", str(run), "--data", str(data), "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "e1"), "--format", "btcv"]) == 2
    assert NOT_BTCV in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "e2"), "--format", "msd"]) == 0
    assert json.loads((tmp_path / "e2" / "metrics.json").read_text())["subjects"] == 3
    btcv(data, n=3)  # a BTCV layout beside it: --format btcv reads that one, which has no landmarks
    assert main([*base, "--out", str(tmp_path / "e3"), "--format", "btcv"]) == 2
    assert "correspondence needs >= 2 scans with landmarks, got 0" in capsys.readouterr().err


def test_evaluate_label_transfer_format(tmp_path, capsys):
    root = mixed(tmp_path / "m")
    base = ["evaluate", "label-transfer", "--init", "scratch", "--data", str(root), "--labeled", "1"]
    for fmt, first in (("btcv", "spleen"), ("msd", "a")):
        out = tmp_path / fmt
        assert main([*base, "--out", str(out), "--format", fmt, *DENSE]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m["structures"][0] == first and len(m["structures"]) == (13 if fmt == "btcv" else 3)
        assert np.isfinite(m["label_transfer"]["1"]["mean_dice"])
    nn = nnunet(tmp_path / "nn", n=2)
    assert main([*base[:5], str(nn), "--out", str(tmp_path / "x"), "--format", "btcv", *DENSE]) == 2
    assert NOT_BTCV in capsys.readouterr().err


def test_finetune_other_tasks_take_format(tmp_path, capsys):
    root = mixed(tmp_path / "m")
    base = ["finetune", "--init", "scratch", "--data", str(root)]
    probe = [*base, "--task", "segmentation-probe", "--out", str(tmp_path / "p"), "--labeled", "1"]
    assert main([*probe, "--format", "btcv", *DENSE]) == 0
    m = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert m["task"] == "segmentation-probe" and m["structures"][:2] == ["spleen", "right_kidney"]
    # classification reads the named layout: BTCV's cases have no 'lesion' field (the MSD entries do)
    cls = [*base, "--task", "classification", "--out", str(tmp_path / "c"), *DENSE]
    assert main([*cls, "--format", "btcv"]) == 2
    assert "has no 'lesion' field" in capsys.readouterr().err
    nn = nnunet(tmp_path / "nn", n=2)
    assert main([*cls[:4], str(nn), *cls[5:], "--format", "btcv"]) == 2
    assert NOT_BTCV in capsys.readouterr().err


ALICE = [
    "model.backbone=conv", "model.feature_size=4", "alice.crop_size=32", "alice.border_margin=8",
    "alice.out_dim=32", "alice.head_hidden_dim=32", "alice.head_bottleneck_dim=16", "alice.casa_heads=4",
    "alice.pairing=random", "train.progress=false", "data.num_workers=0",
]  # fmt: skip


def test_prepare_alice_run_takes_data_format(tmp_path):
    from anatssl.errors import DataError
    from anatssl.runs import load_pretrain_config
    from anatssl.runs.alice_stage0 import prepare_alice_run

    root = mixed(tmp_path / "m", msd_cases=1)
    cfg = load_pretrain_config("alice", "tiny", None, ALICE)
    with pytest.raises(DataError, match="at least 2 training volumes, got 1"):
        prepare_alice_run(cfg, root, tmp_path / "a")  # detected: the MSD json's one case
    assert prepare_alice_run(cfg, root, tmp_path / "b", data_format="btcv") == ""  # BTCV's 3 cases
    with pytest.raises(DataError, match=NOT_BTCV):
        prepare_alice_run(cfg, nnunet(tmp_path / "nn", n=2), tmp_path / "c", data_format="btcv")
