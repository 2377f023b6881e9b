"""``anatssl embed / match / evaluate correspondence`` end to end on real NIfTI files (random-init models)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "anatomy"))
from sam_fixtures import make_sam_run, write_phantom

from anatssl.cli.main import main


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "imagesTr").mkdir(parents=True)
    (data / "landmarks").mkdir()
    entries = []
    for i in range(3):
        img = write_phantom(data / "imagesTr" / f"case_{i}.nii.gz", seed=i, shift=0.2 * i)
        lms = {"a": [0.0, 0.0, 10.0 + i], "b": [20.0, -10.0, -5.0], "c": [-15.0, 12.0, 30.0 - 2 * i]}
        (data / "landmarks" / f"case_{i}.json").write_text(json.dumps(lms))
        entries.append({"image": f"imagesTr/{img.name}", "landmarks": f"landmarks/case_{i}.json"})
    (data / "dataset.json").write_text(json.dumps({"training": entries}))
    return data


@pytest.mark.slow
def test_embed_then_match(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_sam_run(tmp_path / "sam")
    emb = tmp_path / "emb"
    cmd = ["embed", "--model", str(run), "--data", str(dataset), "--out", str(emb), "--no-progress"]
    assert main(cmd) == 0
    assert "embedded 3 scan(s), 0 already cached" in capsys.readouterr().out
    assert main(cmd) == 0
    assert "embedded 0 scan(s), 3 already cached" in capsys.readouterr().out
    assert len(list(emb.glob("*.npz"))) == 3 and (emb / "cache.json").is_file()

    a, b = dataset / "imagesTr" / "case_0.nii.gz", dataset / "imagesTr" / "case_1.nii.gz"
    png = tmp_path / "m.png"
    rc = main(
        [
            "match",
            "--model",
            str(run),
            "--a",
            str(a),
            "--b",
            str(b),
            "--point",
            "4,-8,12",
            "--png",
            str(png),
            "--embeddings",
            str(emb),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "match  B: world (" in out and "score" in out
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    # the same point given as voxel indices of A's file (affine: 4 mm, origin -80,-72,-88)
    rc = main(["match", "--model", str(run), "--a", str(a), "--b", str(b), "--point", "21,16,25", "--voxel"])
    out2 = capsys.readouterr().out
    assert rc == 0 and "query  A: world (4.00, -8.00, 12.00) mm" in out2
    assert out2.splitlines()[1] == out.splitlines()[1]  # same match with or without the cache


@pytest.mark.slow
def test_match_errors(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_sam_run(tmp_path / "sam")
    a = dataset / "imagesTr" / "case_0.nii.gz"
    rc = main(["match", "--model", str(run), "--a", str(a), "--b", str(a), "--point", "500,0,0"])
    err = capsys.readouterr().err
    assert rc == 2 and "is outside volume A" in err and "Traceback" not in err
    assert main(["match", "--model", str(run), "--a", str(a), "--b", str(a), "--point", "1,2"]) == 2
    assert "must be three numbers" in capsys.readouterr().err
    swin = make_sam_run(tmp_path / "swin", method="swinssl", **{"model.feature_size": "12"})
    assert main(["match", "--model", str(swin), "--a", str(a), "--b", str(a), "--point", "0,0,0"]) == 2
    assert "is a 'swinssl' run, not a SAM run" in capsys.readouterr().err
    assert main(["embed", "--model", str(swin), "--data", str(dataset), "--out", str(tmp_path / "e")]) == 2
    assert not (tmp_path / "e" / "cache.json").exists()  # nothing half-written


@pytest.mark.slow
def test_evaluate_correspondence(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_sam_run(tmp_path / "sam")
    out = tmp_path / "eval"
    rc = main(
        [
            "evaluate",
            "correspondence",
            "--model",
            str(run),
            "--data",
            str(dataset),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    for k in ("model", "same_voxel", "random_foreground"):
        assert set(m[k]) == {"mre_mm", "median_mm", "within_10mm", "n"}
        assert m[k]["n"] == 3 * 2 * 3  # 6 ordered pairs x 3 landmarks
    assert m["subjects"] == 3 and set(m["per_landmark_mre_mm"]) == {"a", "b", "c"}
    for b in ("same_voxel", "random_foreground"):  # paired on the same 18 matches
        d = m["vs_baselines"][b]
        assert d["n"] == 18 and 0.0 <= d["model_closer"] <= 1.0
        assert d["mean_difference_mm"] == pytest.approx(m["model"]["mre_mm"] - m[b]["mre_mm"])
        assert d["ci95_mm"][0] <= d["ci95_mm"][1]
    printed = capsys.readouterr().out
    assert "model vs same_voxel: closer in" in printed and "sub-cell" in m["matching"]
    rc = main(
        ["evaluate", "correspondence", "--model", str(run), "--data", str(dataset), "--out", str(out)]
        + ["--no-progress", "--cell-centre"]
    )
    assert (
        rc == 0
        and "centre of the best fine cell" in json.loads((out / "metrics.json").read_text())["matching"]
    )
    rc = main(
        ["evaluate", "correspondence", "--model", str(run), "--data", str(dataset), "--out", str(out)]
        + ["--no-progress", "--prior", "affine", "--window-mm", "15"]
    )
    m2 = json.loads((out / "metrics.json").read_text())
    assert rc == 0 and "within 15 mm of a robust affine" in m2["matching"]
    assert m2["affine_fit"]["n"] == 18 and m2["model"]["n"] == 18
    assert m2["prior"]["window_mm"] == 15.0 and 0.0 <= m2["prior"]["mean_inlier_fraction"] <= 1.0
    assert "affine_fit" in capsys.readouterr().out
    # the baselines do not depend on the prior
    assert m2["same_voxel"] == m["same_voxel"]


@pytest.mark.slow
def test_evaluate_correspondence_other_method(dataset: Path, tmp_path: Path) -> None:
    swin = make_sam_run(tmp_path / "swin", method="swinssl", **{"model.feature_size": "12"})
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "correspondence",
                "--model",
                str(swin),
                "--data",
                str(dataset),
                "--out",
                str(out),
                "--no-progress",
                "--max-subjects",
                "2",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "swinssl" and m["features"] == "decoder" and m["model"]["n"] == 2 * 3


def test_bad_arguments_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = str(tmp_path / "a.nii.gz")
    assert main(["match", "--model", str(tmp_path), "--a", a, "--b", a, "--point", "1,2"]) == 2
    assert "must be three numbers x,y,z" in capsys.readouterr().err
    assert main(["match", "--model", str(tmp_path / "nope"), "--a", a, "--b", a, "--point", "1,2,3"]) == 2
    assert "is neither a run directory nor a checkpoint file" in capsys.readouterr().err
    assert main(["embed", "--model", str(tmp_path), "--data", a, "--out", str(tmp_path / "e")]) == 2
    assert "has no checkpoints/last.pt" in capsys.readouterr().err


def test_bad_window_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmd = ["evaluate", "correspondence", "--model", str(tmp_path / "nowhere"), "--data", str(tmp_path)]
    assert main(cmd + ["--out", str(tmp_path / "o"), "--prior", "affine", "--window-mm", "0"]) == 2
    assert "--window-mm must be > 0, got 0.0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_evaluate_without_task_shows_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate"]) == 2
    assert "correspondence" in capsys.readouterr().out
