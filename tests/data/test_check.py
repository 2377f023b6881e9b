"""``anatssl data check``: the dataset fingerprint and integrity check on real NIfTI datasets on disk.

A clean synthetic dataset (``anatssl synth``) passes with the right counts, shapes, spacings and
label values; a corrupt file, a label on another grid, label values outside the table and a
channel-count mismatch each fail (exit status 1) naming the file in the table and the JSON; the
modality guess says CT for the phantoms and MRI for an MRI-like volume.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from anatssl.cli.main import main
from anatssl.config.schema import DataConfig
from anatssl.data.check import check_dataset, guess_modality

SYNTH_SIZE = 32
SYNTH_SPACING = 12.0  # what `anatssl synth --size 32` writes (the phantom's field of view over 32 voxels)


@pytest.fixture(scope="module")
def synth_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    assert main(["synth", "--out", str(out), "--n", "3", "--size", str(SYNTH_SIZE), "--seed", "0"]) == 0
    return out


@pytest.fixture
def synth(synth_master: Path, tmp_path: Path) -> Path:
    """A fresh copy per test (tests damage it)."""
    dst = tmp_path / "data"
    shutil.copytree(synth_master, dst)
    return dst


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(["data", "check", *args])
    out = capsys.readouterr()
    return rc, out.out + out.err


def mri_volume(seed: int, shape: tuple[int, int, int] = (24, 24, 24)) -> np.ndarray:
    """A T1-like magnitude image: an ellipsoidal head of 300..800 in a dark Rician background
    (|signal + complex Gaussian noise|, sigma 20), so no voxel is negative."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    r = np.sqrt(((g / np.array([0.8, 0.9, 0.85])[:, None, None, None]) ** 2).sum(0))
    signal = np.where(r < 1, 550 + 250 * np.cos(6 * g[0]) * np.cos(5 * g[1]), 0.0)
    noisy = np.hypot(signal + rng.normal(0, 20, shape), rng.normal(0, 20, shape))
    return noisy.astype(np.float32)


def save(path: Path, array: np.ndarray, spacing: float = 2.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([spacing, spacing, spacing, 1.0])), str(path))
    return path


# -- the modality guess, from numbers by hand --------------------------------------------------------
def _stats(**kw: float) -> dict[str, float]:
    base = {"min": 0.0, "max": 1.0, "p99.5": 1.0, "air_share": 0.0, "negative_share": 0.0, "dark_share": 0.0}
    return {**base, **kw}


def test_guess_modality_rules() -> None:
    ct = guess_modality(_stats(min=-1024, max=1500, **{"p99.5": 900}, air_share=0.4, negative_share=0.6))
    assert (ct["modality"], ct["confidence"]) == ("ct", "high")
    assert "40% of voxels at or below -900 HU" in ct["evidence"]
    # 5 % air: CT, less sure; 1 % air: not enough for the air rule, but 30 % negative down to -200
    assert (
        guess_modality(_stats(min=-1000, max=900, air_share=0.05, negative_share=0.3))["confidence"]
        == "medium"
    )
    low = guess_modality(_stats(min=-200, max=900, air_share=0.0, negative_share=0.3))
    assert (low["modality"], low["confidence"]) == ("ct", "low")
    mri = guess_modality(_stats(min=0.5, max=812, **{"p99.5": 790}, dark_share=0.35))
    assert (mri["modality"], mri["confidence"]) == ("mri", "high")
    assert (
        guess_modality(_stats(min=0.5, max=812, **{"p99.5": 790}, dark_share=0.02))["confidence"] == "medium"
    )
    # already scaled to [0, 1], or z-scored: neither
    assert guess_modality(_stats(min=0.0, max=1.0))["modality"] == "unknown"
    assert (
        guess_modality(_stats(min=-2.5, max=3.1, **{"p99.5": 2.6}, negative_share=0.5))["modality"]
        == "unknown"
    )


# -- a clean dataset ----------------------------------------------------------------------------------
def test_clean_synth_dataset(synth: Path) -> None:
    report = check_dataset(synth, DataConfig(), min_shape=(64, 64, 64))
    assert report.ok, report.errors
    assert report.format == "msd"
    assert [c.name for c in report.cases] == ["synth_000", "synth_001", "synth_002"]
    for c in report.cases:
        assert c.readable and c.status == "warning"  # 32^3 < 64^3: zero-padded, not an error
        assert c.shape == [SYNTH_SIZE] * 3
        assert c.spacing == [SYNTH_SPACING] * 3
        assert c.channels == 1
        assert c.landmarks is not None and c.landmarks > 10
        assert c.intensity[0]["min"] == -1024.0  # int16 HU, air padded at -1024
        assert c.label_values is not None and c.label_values[0] == 0 and set(c.label_values) <= set(range(19))
        assert c.modality is not None and c.modality["modality"] == "ct"
        # the preset's body box on the native grid: at most the scan, at least most of it
        assert c.preprocessed_shape is not None and all(24 <= s <= 32 for s in c.preprocessed_shape)
    assert len(report.label_table) == 19 and report.label_table[7] == "liver"
    assert report.modality["modality"] == "ct" and report.modality["confidence"] == "high"
    assert report.modality["votes"] == {"ct": 3}
    assert report.summary["spacing"]["median"] == [SYNTH_SPACING] * 3
    assert report.summary["shape"]["max"] == [SYNTH_SIZE] * 3
    pooled = report.summary["intensity"][0]
    assert pooled["min"] == -1024.0 and pooled["min"] <= pooled["p0.5"] <= pooled["p50"] <= pooled["max"]
    assert any("3 scan(s) smaller than the crop (64, 64, 64)" in w for w in report.warnings)
    assert report.settings["hu_window"] == [-1000.0, 1000.0] and report.settings["crop"] == [64, 64, 64]


@pytest.mark.parametrize("spacing", [None, (24.0, 24.0, 24.0), (7.0, 9.0, 15.0)])
def test_preprocessed_shape_matches_the_preset(
    synth: Path, spacing: tuple[float, float, float] | None
) -> None:
    """The estimate from the native grid against presets.preprocess itself: exact without resampling,
    within a voxel with it (down- and upsampling)."""
    from anatssl.data.io import read_volume
    from anatssl.data.presets import preprocess

    cfg = DataConfig(spacing=spacing)
    report = check_dataset(synth, cfg)
    images = sorted((synth / "imagesTr").glob("*.nii.gz"))
    for case, image in zip(report.cases, images, strict=True):
        real = preprocess(read_volume(image), cfg).spatial_shape
        assert case.preprocessed_shape is not None
        err = max(abs(a - b) for a, b in zip(case.preprocessed_shape, real))
        assert err <= (0 if spacing is None else 1), (case.name, case.preprocessed_shape, real)


def test_cli_clean_dataset_json_and_table(synth: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_cli(capsys, str(synth))
    assert rc == 0, out
    doc = json.loads((synth / ".anatssl_check.json").read_text())  # the default place
    assert doc["ok"] is True
    assert doc["counts"] == {"cases": 3, "readable": 3, "with_errors": 0, "with_warnings": 3}
    assert [c["shape"] for c in doc["cases"]] == [[32, 32, 32]] * 3
    assert [c["spacing"] for c in doc["cases"]] == [[12.0, 12.0, 12.0]] * 3
    assert doc["settings"]["method"] == "swinssl" and doc["settings"]["crop"] == [64, 64, 64]
    assert doc["modality"]["modality"] == "ct"
    assert set(doc["summary"]["label_values_present"]) <= set(range(19))
    assert doc["label_table"]["0"] == "background"
    assert "synth_001" in out and "32x32x32" in out and "ct (high)" in out
    assert "modality guess: CT (high confidence)" in out
    assert "clip to the HU window [-1000, 1000]" in out
    assert "zero-padded" in out and "ok: nothing found that would fail a run" in out
    assert f"report: {synth / '.anatssl_check.json'}" in out


def test_cli_resolves_method_preset_and_overrides(synth: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = synth.parent / "check.json"
    rc, out = run_cli(
        capsys, str(synth), "--method", "s2dc", "--out", str(out_json), "--quiet", "data.spacing=[24,24,24]"
    )
    assert rc == 0, out
    doc = json.loads(out_json.read_text())
    assert doc["settings"]["spacing"] == [24.0, 24.0, 24.0] and doc["settings"]["crop"] == [128, 128, 64]
    # 12 mm -> 24 mm halves the body box (the estimate is made on the native grid)
    for c in doc["cases"]:
        assert all(12 <= s <= 16 for s in c["preprocessed_shape"]), c["preprocessed_shape"]
    assert "resample to 24x24x24 mm" in out and "synth_000" not in out.split("preprocessing")[0]  # --quiet


# -- what would fail a run ----------------------------------------------------------------------------
def _case(doc: dict, name: str) -> dict:
    return next(c for c in doc["cases"] if c["name"] == name)


def error_row(out: str, case: str) -> str:
    """The first line of ``case``'s row in the errors table (case | file | error) of the screen output."""
    table = out[out.index("error(s): a run would fail") :]
    return next(line for line in table.splitlines() if line.startswith(f"│ {case} "))


def test_corrupt_file_fails_naming_it(synth: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = synth / "imagesTr" / "synth_001.nii.gz"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated download
    rc, out = run_cli(capsys, str(synth), "--out", str(synth / "r.json"))
    assert rc == 1
    doc = json.loads((synth / "r.json").read_text())
    assert doc["ok"] is False and doc["counts"]["readable"] == 2 and doc["counts"]["with_errors"] == 1
    case = _case(doc, "synth_001")
    assert case["status"] == "error" and case["readable"] is False
    assert str(bad) in case["errors"][0] and "corrupt" in case["errors"][0]
    assert _case(doc, "synth_000")["status"] == "warning"
    assert "1 error(s): a run would fail or drop the case" in out
    cases_row = next(line for line in out.splitlines() if "synth_001" in line and "│" in line)
    assert "│ error " in cases_row and "│ -  " in cases_row  # status error, no shape
    assert "imagesTr/synth_001.nii.gz" in error_row(out, "synth_001")


def test_label_on_another_grid_fails(synth: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lab = synth / "labelsTr" / "synth_002.nii.gz"
    img: Any = nib.load(str(lab))
    shifted = img.affine.copy()
    shifted[0, 3] += 6.0  # half a voxel: a misregistered label
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), shifted), str(lab))
    rc, out = run_cli(capsys, str(synth), "--out", str(synth / "r.json"))
    assert rc == 1
    case = _case(json.loads((synth / "r.json").read_text()), "synth_002")
    assert case["status"] == "error" and case["readable"] is True  # the image is fine
    assert case["label_values"] is None
    (err,) = case["errors"]
    assert str(lab) in err and "different voxel->world affines (max difference 6 mm" in err
    assert "labelsTr/synth_002.nii.gz" in error_row(out, "synth_002")


def test_label_of_another_shape_fails(synth: Path) -> None:
    lab = synth / "labelsTr" / "synth_000.nii.gz"
    save(lab, np.zeros((32, 32, 30), np.uint8), SYNTH_SPACING)
    report = check_dataset(synth, DataConfig())
    (err,) = report.cases[0].errors
    assert str(lab) in err and "spatial shape (32, 32, 30)" in err and not report.ok


def test_label_values_outside_the_table_fail(synth: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lab = synth / "labelsTr" / "synth_000.nii.gz"
    img: Any = nib.load(str(lab))
    arr = np.asanyarray(img.dataobj).astype(np.int16)
    arr[:2, :2, :2] = 42
    arr[-1, -1, -1] = 25
    nib.save(nib.Nifti1Image(arr, img.affine), str(lab))
    rc, out = run_cli(capsys, str(synth), "--out", str(synth / "r.json"))
    assert rc == 1
    doc = json.loads((synth / "r.json").read_text())
    case = _case(doc, "synth_000")
    assert 42 in case["label_values"] and 25 in case["label_values"]
    (err,) = case["errors"]
    assert str(lab) in err and "values [25, 42] that the label table does not name" in err
    assert "outside the table: [25, 42]" in out
    assert "labelsTr/synth_000.nii.gz" in error_row(out, "synth_000")


def test_channel_count_mismatch_fails(tmp_path: Path) -> None:
    """An MSD dataset.json naming two channels over single-channel files, and a 2-channel 4D file
    read by a run with model.in_channels = 1."""
    root = tmp_path / "msd"
    save(root / "imagesTr" / "a.nii.gz", mri_volume(0))
    save(root / "imagesTr" / "b.nii.gz", np.stack([mri_volume(1), mri_volume(2)], axis=-1))
    doc = {
        "modality": {"0": "T1", "1": "T2"},
        "labels": {"0": "background"},
        "training": [{"image": "imagesTr/a.nii.gz"}, {"image": "imagesTr/b.nii.gz"}],
    }
    (root / "dataset.json").write_text(json.dumps(doc))
    report = check_dataset(root, DataConfig(modality="mri"), in_channels=1)
    a, b = report.cases
    assert a.status == "error" and "holds 1 channel(s) but the dataset names 2" in a.errors[0]
    assert str(root / "imagesTr" / "a.nii.gz") in a.errors[0]
    assert b.errors == [] and b.channels == 2 and len(b.intensity) == 2
    assert any("model.in_channels = 1; set model.in_channels=2" in e for e in report.errors)
    ok = check_dataset(root, DataConfig(modality="mri"), in_channels=2)
    assert [c.status for c in ok.cases] == ["error", "ok"]


def test_unknown_format_is_a_usage_error(synth: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        run_cli(capsys, str(synth), "--format", "nosuch")
    err = capsys.readouterr().err
    assert e.value.code == 2 and "invalid choice: 'nosuch'" in err and "'totalsegmentator'" in err
    rc, out = run_cli(capsys, str(synth), "--format", "btcv")  # a known layout that is not this one
    assert rc == 2 and "no imgXXXX.nii.gz files" in out
    rc, out = run_cli(capsys, str(synth / "missing"))
    assert rc == 2 and "does not exist" in out


# -- modality -----------------------------------------------------------------------------------------
def test_mri_folder_guessed_mri(tmp_path: Path) -> None:
    for i in range(2):
        save(tmp_path / "mri" / f"sub{i}.nii.gz", mri_volume(i))
    report = check_dataset(tmp_path / "mri", DataConfig(modality="mri"))
    assert report.ok, report.errors
    assert report.format == "folder" and report.label_table == {}
    for c in report.cases:
        assert c.modality is not None and c.modality["modality"] == "mri", c.modality
        assert c.intensity[0]["min"] >= 0 and 700 < c.intensity[0]["max"] < 900
    assert report.modality["modality"] == "mri" and report.modality["confidence"] == "high"
    assert report.settings["mri_percentiles"] == [0.5, 99.5] and "hu_window" not in report.settings
    assert not any("look like" in w for w in report.warnings)
    # checked with the CT preset, the mismatch is a warning (the run would not fail, but scale wrongly)
    as_ct = check_dataset(tmp_path / "mri", DataConfig())
    assert as_ct.ok
    assert any(
        "look like MRI (high confidence) but the run's data.modality is 'ct'" in w for w in as_ct.warnings
    )


def test_cli_modality_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(tmp_path / "mri" / "sub0.nii.gz", mri_volume(0))
    save(tmp_path / "mri" / "sub1.nii.gz", mri_volume(1))
    rc, out = run_cli(capsys, str(tmp_path / "mri"), "--modality", "mri", "--out", str(tmp_path / "r.json"))
    assert rc == 0, out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["settings"]["modality"] == "mri" and doc["modality"]["modality"] == "mri"
    assert "MRI, per-scan percentiles 0.5 / 99.5" in out and "modality guess: MRI" in out


# -- reading: workers, a read-only data folder ------------------------------------------------------------
def test_workers_give_the_same_report(synth: Path) -> None:
    one = check_dataset(synth, DataConfig()).to_json()
    two = check_dataset(synth, DataConfig(), workers=2).to_json()
    assert one == two


def test_read_only_data_folder_falls_back(
    synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data folder refuses the write (as a read-only mount would, also for root): the report goes
    to the working folder, and the output says where."""
    import anatssl.cli.data as cli_data

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    write = cli_data._write_json

    def refuse_data_folder(path: Path, doc: dict) -> None:
        if path.parent == synth:
            raise PermissionError(13, "Permission denied", str(path))
        write(path, doc)

    monkeypatch.setattr(cli_data, "_write_json", refuse_data_folder)
    rc, out = run_cli(capsys, str(synth), "--quiet")
    assert rc == 0, out
    assert not (synth / ".anatssl_check.json").exists()
    where = work / "anatssl_check_data.json"
    assert json.loads(where.read_text())["counts"]["cases"] == 3
    assert f"{synth} is not writable; the report went to {where}" in out
    assert f"report: {where}" in out


# -- the downloaded layouts (anatssl.data.layouts): multi-file channels, merged structure masks --------
def nnunet_dataset(root: Path, n: int = 2) -> Path:
    """nnU-Net v2 raw: two MRI channels per case (``{case}_0000``, ``{case}_0001``), a label map each."""
    doc = {
        "channel_names": {"0": "T1", "1": "T2"},
        "labels": {"background": 0, "tumour": 1},
        "numTraining": n,
        "file_ending": ".nii.gz",
    }
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(doc))
    for i in range(n):
        save(root / "imagesTr" / f"case_{i:03d}_0000.nii.gz", mri_volume(10 * i))
        save(root / "imagesTr" / f"case_{i:03d}_0001.nii.gz", 0.5 * mri_volume(10 * i + 1))
        lab = np.zeros((24, 24, 24), np.uint8)
        lab[8:14, 8:14, 8:14] = 1
        save(root / "labelsTr" / f"case_{i:03d}.nii.gz", lab)
    return root


def test_nnunet_channels_read_per_channel(tmp_path: Path) -> None:
    root = nnunet_dataset(tmp_path / "Dataset001_Brain")
    report = check_dataset(root, DataConfig(modality="mri"), in_channels=2)
    assert report.ok, report.errors
    assert report.format == "nnunet" and report.channel_names == ["T1", "T2"]
    assert report.label_table == {0: "background", 1: "tumour"}
    for c in report.cases:
        assert c.channels == 2 and len(c.images) == 2 and c.label_values == [0, 1]
        assert len(c.intensity) == 2
        # channel 1 is channel 0's sibling at half the scale: its max is about half
        assert 0.3 < c.intensity[1]["max"] / c.intensity[0]["max"] < 0.7
    assert len(report.summary["intensity"]) == 2 and report.modality["modality"] == "mri"
    one = check_dataset(root, DataConfig(modality="mri"), in_channels=1)
    assert any("2 channels ['T1', 'T2'] but the run reads model.in_channels = 1" in e for e in one.errors)


def test_nnunet_channel_on_another_grid_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = nnunet_dataset(tmp_path / "Dataset001_Brain")
    moved = save(root / "imagesTr" / "case_001_0001.nii.gz", mri_volume(3), spacing=3.0)
    rc, out = run_cli(
        capsys, str(root), "--modality", "mri", "model.in_channels=2", "--out", str(tmp_path / "r.json")
    )
    assert rc == 1, out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert _case(doc, "case_000")["status"] == "warning"  # 24^3 < the 64^3 crop only
    case = _case(doc, "case_001")
    (err,) = case["errors"]
    assert f"channel file {moved} is on another grid" in err and "spacing [3.0, 3.0, 3.0]" in err
    assert "imagesTr/case_001_0001.nii.gz" in error_row(out, "case_001")


def test_nnunet_missing_channel_file_fails(tmp_path: Path) -> None:
    root = nnunet_dataset(tmp_path / "Dataset001_Brain")
    gone = root / "imagesTr" / "case_000_0001.nii.gz"
    gone.unlink()
    report = check_dataset(root, DataConfig(modality="mri"), in_channels=2)
    case = report.cases[0]
    assert case.status == "error" and not case.readable
    assert any(str(gone) in e and "missing" in e for e in case.errors)
    assert report.cases[1].status == "ok"


def test_totalsegmentator_masks_merged_and_checked(tmp_path: Path) -> None:
    root = tmp_path / "Totalsegmentator_dataset"
    for i in range(2):
        d = root / f"s{i:04d}"
        rng = np.random.default_rng(i)
        ct = (-1000 + rng.normal(0, 10, (24, 24, 24))).astype(np.float32)
        ct[4:20, 4:20, 2:22] = 40 + rng.normal(0, 10, (16, 16, 20))
        save(d / "ct.nii.gz", ct, 1.5)
        for k, name in enumerate(("liver", "spleen")):
            m = np.zeros((24, 24, 24), np.uint8)
            m[6 + 6 * k : 10 + 6 * k, 8:12, 8:12] = 1
            save(d / "segmentations" / f"{name}.nii.gz", m, 1.5)
    report = check_dataset(root, DataConfig())
    assert report.ok, report.errors
    assert report.format == "totalsegmentator"
    assert report.label_table == {0: "background", 1: "liver", 2: "spleen"}
    assert [c.label_values for c in report.cases] == [[0, 1, 2], [0, 1, 2]]
    assert report.modality["modality"] == "ct"
    bad = save(root / "s0001" / "segmentations" / "spleen.nii.gz", np.zeros((24, 24, 20), np.uint8), 1.5)
    report = check_dataset(root, DataConfig())
    (err,) = report.cases[1].errors
    assert str(bad) in err and "shape (24, 24, 20)" in err and report.cases[0].status == "ok"


def test_btcv_label_outside_its_13_organ_table(tmp_path: Path) -> None:
    root = tmp_path / "BTCV"
    for i in (1, 2):
        rng = np.random.default_rng(i)
        ct = (-1000 + rng.normal(0, 10, (24, 24, 24))).astype(np.float32)
        ct[4:20, 4:20, 2:22] = 40 + rng.normal(0, 10, (16, 16, 20))
        save(root / "img" / f"img{i:04d}.nii.gz", ct, 1.5)
        lab = np.zeros((24, 24, 24), np.uint8)
        lab[6:10, 6:10, 6:10] = 6  # liver
        if i == 2:
            lab[12:14, 12:14, 12:14] = 14  # BTCV names 0..13
        save(root / "label" / f"label{i:04d}.nii.gz", lab, 1.5)
    report = check_dataset(root, DataConfig())
    assert report.format == "btcv" and len(report.label_table) == 14 and report.label_table[6] == "liver"
    ok, bad = report.cases
    assert ok.status == "ok" and ok.label_values == [0, 6]
    (err,) = bad.errors
    assert str(root / "label" / "label0002.nii.gz") in err and "values [14]" in err


def test_dicom_series_folders(tmp_path: Path) -> None:
    """A folder of DICOM series: one clean CT series is read (no header pass: geometry after decoding),
    one folder mixing two series is an error naming the folder."""
    pytest.importorskip("pydicom")
    from test_io import write_dicom_series  # tests/data/test_io.py: CT slices with real LPS geometry

    root = tmp_path / "dicom"
    stored = np.full((16, 16, 12), 24, np.int16)  # intercept -1024: air (0 HU stored as 1024) ...
    stored[4:12, 4:12, 2:10] = 1064  # ... around a 40 HU body
    write_dicom_series(root / "patient1" / "ct", stored)
    mixed = root / "patient2" / "ct"
    write_dicom_series(mixed, stored, series_uid="1.2.3.1")
    for p in write_dicom_series(tmp_path / "other", stored, series_uid="1.2.3.2").iterdir():
        p.rename(mixed / f"b_{p.name}")
    report = check_dataset(root, DataConfig())
    assert report.format == "dicom" and len(report.cases) == 2
    clean, bad = sorted(report.cases, key=lambda c: c.images[0])
    assert clean.status == "ok" and clean.shape == [16, 16, 12]
    assert clean.spacing == [0.7, 0.8, 2.5]  # PixelSpacing (row, column) = (0.8, 0.7): x is the column step
    assert clean.intensity[0]["min"] == -1000.0 and clean.modality is not None
    assert clean.modality["modality"] == "ct"
    (err,) = bad.errors
    assert str(mixed) in err and "2 DICOM series" in err and not report.ok
