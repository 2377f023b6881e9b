"""``anatssl synth`` through the CLI entry point: files, summary, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from anatssl.cli.main import main


def test_synth_writes_dataset_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    rc = main(
        ["synth", "--out", str(out), "--n", "2", "--seed", "4", "--size", "32", "--lesions", "1", "--quiet"]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "wrote 2 subjects" in printed and "s/subject" in printed
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["numTraining"] == 2 and ds["modality"] == {"0": "CT"}
    for entry in ds["training"]:
        for key in ("image", "label", "landmarks"):
            assert (out / entry[key]).is_file()
        assert entry["lesion"] in (0, 1)
        img = nib.load(out / entry["image"])
        assert img.shape == (32, 32, 32) and np.allclose(np.diag(img.affine)[:3], 12.0)
    assert sum(e["lesion"] for e in ds["training"]) >= 1  # --lesions 1: every subject that can get one


def test_synth_with_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["synth", "--out", str(tmp_path / "p"), "--n", "2", "--size", "16", "--region", "random"]) == 0
    )
    captured = capsys.readouterr()
    assert "2/2" in captured.err  # the rich progress bar (on stderr)
    assert "wrote 2 subjects" in captured.out


def test_synth_anisotropic_size_and_spacing(tmp_path: Path) -> None:
    out = tmp_path / "s"
    rc = main(["synth", "--out", str(out), "--n", "1", "--size", "24", "32", "40", "--spacing", "8", "6", "5",
               "--region", "chest", "--quiet"])  # fmt: skip
    assert rc == 0
    img = nib.load(out / "imagesTr" / "synth_000.nii.gz")
    lab = nib.load(out / "labelsTr" / "synth_000.nii.gz")
    assert img.shape == lab.shape == (24, 32, 40)
    assert np.allclose(img.affine, lab.affine) and np.allclose(np.diag(img.affine)[:3], [8, 6, 5])
    assert json.loads((out / "dataset.json").read_text())["training"][0]["region"] == "chest"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "0"], "--n must be at least 1"),
        (["--n", "1", "--size", "-5"], "--size [-5, -5, -5] must be positive"),
        (["--n", "1", "--size", "12"], "too small"),
        (["--n", "1", "--size", "32", "32"], "one value or three"),
        (["--n", "1", "--spacing", "-1"], "--spacing [-1.0, -1.0, -1.0] must be positive"),
        (["--n", "1", "--lesions", "1.5"], "--lesions must be a fraction"),
    ],
)
def test_synth_bad_input_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "never"
    assert main(["synth", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert "anatssl synth: error:" in err and message in err and "Traceback" not in err
    assert not out.exists()


def test_synth_refuses_non_empty_out_without_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "results.csv").write_text("precious")
    assert main(["synth", "--out", str(tmp_path), "--n", "1", "--size", "24", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]
    assert main(["synth", "--out", str(tmp_path), "--n", "1", "--size", "24", "--quiet", "--overwrite"]) == 0
    assert (tmp_path / "results.csv").read_text() == "precious" and (tmp_path / "dataset.json").is_file()


def test_synth_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["synth", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    options = ("--out", "--n", "--seed", "--size", "--spacing", "--region", "--lesions", "--overwrite")
    for opt in (*options, "--quiet"):
        assert opt in text
