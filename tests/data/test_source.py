"""VolumeSource: validate() drops bad scans with a warning, load() names a file gone bad, cache location."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import anatssl.data.io as io_mod  # the decoder every cache calls (through io.read_scan)
from anatssl.config.schema import DataConfig
from anatssl.data.manifest import DataItem
from anatssl.data.source import VolumeSource
from anatssl.errors import DataError


def ct(path: Path, seed: int = 0, shape=(24, 20, 16)) -> Path:
    rng = np.random.default_rng(seed)
    img = np.full(shape, -1000.0, np.float32)
    img[4:-4, 4:-4, 3:-3] = 30.0 + 15.0 * rng.standard_normal((shape[0] - 8, shape[1] - 8, shape[2] - 6))
    nib.save(nib.Nifti1Image(img, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "scans"
    d.mkdir()
    for i in range(3):
        ct(d / f"case_{i}.nii.gz", seed=i)
    return d


def test_load_from_folder_with_default_cache(folder):
    src = VolumeSource(folder, DataConfig())
    assert len(src) == 3 and src.cache.root == folder / ".anatssl_cache"
    vol = src.load(1)
    assert vol.path == str(folder / "case_1.nii.gz")
    assert vol.image.dtype == np.float32 and vol.image.ndim == 4
    assert 0.0 <= float(vol.image.min()) and float(vol.image.max()) <= 1.0
    assert src.items[1].image == folder / "case_1.nii.gz"
    # the cache folder inside the data folder is not mistaken for scans
    assert len(VolumeSource(folder, DataConfig())) == 3


def test_validate_drops_a_corrupt_scan_with_a_warning(folder, caplog):
    truncate(folder / "case_1.nii.gz")
    src = VolumeSource(folder, DataConfig())
    with caplog.at_level(logging.WARNING, logger="anatssl"):
        bad = src.validate(progress=True)
    assert [it.image.name for it, _ in bad] == ["case_1.nii.gz"]
    assert "corrupt, truncated" in bad[0][1]
    assert len(src) == 2 and [it.image.name for it in src.items] == ["case_0.nii.gz", "case_2.nii.gz"]
    assert any("case_1.nii.gz" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert src.load(0).path.endswith("case_0.nii.gz") and src.load(1).path.endswith("case_2.nii.gz")


def test_validate_fills_the_cache(folder, monkeypatch):
    src = VolumeSource(folder, DataConfig())
    src.validate(progress=False)
    calls = []
    real = io_mod.read_volume
    monkeypatch.setattr(io_mod, "read_volume", lambda *a, **k: calls.append(a) or real(*a, **k))
    for i in range(len(src)):
        src.load(i)
    pickle.loads(pickle.dumps(src)).load(2)  # what a DataLoader worker gets
    assert calls == []


def test_validate_with_threads_matches(folder):
    truncate(folder / "case_2.nii.gz")
    bad = VolumeSource(folder, DataConfig()).validate(progress=False, workers=2)
    assert [it.image.name for it, _ in bad] == ["case_2.nii.gz"]


def test_validate_raises_when_all_are_bad(folder):
    for p in folder.glob("*.nii.gz"):
        truncate(p)
    src = VolumeSource(folder, DataConfig())
    with pytest.raises(DataError, match="none of the 3 scans can be used") as e:
        src.validate(progress=False)
    assert all(f"case_{i}.nii.gz" in str(e.value) for i in range(3))


def test_load_after_the_scan_went_bad(folder):
    src = VolumeSource(folder, DataConfig())
    src.validate(progress=False)
    truncate(folder / "case_0.nii.gz")
    with pytest.raises(DataError) as e:
        src.load(0)
    assert "case_0.nii.gz" in str(e.value)
    (folder / "case_2.nii.gz").unlink()
    with pytest.raises(DataError, match="does not exist") as e:
        src.load(2)
    assert "case_2.nii.gz" in str(e.value)
    assert src.load(1).spatial_shape  # the others still load


def test_dataset_json_with_labels_and_landmarks(tmp_path):
    ct(tmp_path / "a.nii.gz")
    lab = np.zeros((24, 20, 16), np.uint8)
    lab[8:12, 8:12, 6:10] = 4
    nib.save(nib.Nifti1Image(lab, np.diag([1.0, 1.0, 2.0, 1.0])), str(tmp_path / "a_seg.nii.gz"))
    (tmp_path / "a.json").write_text(json.dumps({"landmarks": {"L1": [10.0, 9.5, 16.0]}}))
    entry = {"image": "a.nii.gz", "label": "a_seg.nii.gz", "landmarks": "a.json", "split": "train"}
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [entry]}))
    src = VolumeSource(tmp_path, DataConfig())
    vol = src.load(0)
    assert vol.landmarks == {"L1": [10.0, 9.5, 16.0]}
    assert vol.meta["fields"] == {"split": "train"}
    assert vol.label.shape == vol.image.shape and set(np.unique(vol.label)) == {0, 4}
    # world coordinates of the label block survive the foreground crop
    centre = vol.voxel_to_world(np.argwhere(vol.label[0] == 4).mean(0))
    np.testing.assert_allclose(centre, [9.5, 9.5, 15.0])


def test_bad_landmarks_make_the_scan_bad(tmp_path):
    ct(tmp_path / "a.nii.gz")
    ct(tmp_path / "b.nii.gz", seed=1)
    (tmp_path / "b.json").write_text(json.dumps({"L1": [1.0, 2.0]}))
    items = [
        DataItem(image=tmp_path / "a.nii.gz"),
        DataItem(image=tmp_path / "b.nii.gz", landmarks=tmp_path / "b.json"),
    ]
    src = VolumeSource(items, DataConfig(), cache_dir=tmp_path / "c")
    bad = src.validate(progress=False)
    assert len(bad) == 1 and "b.json" in bad[0][1] and "[x, y, z]" in bad[0][1]


def test_cache_dir_choice(folder, tmp_path, caplog):
    # explicit argument, then data_cfg.cache_dir
    assert VolumeSource(folder, DataConfig(), cache_dir=tmp_path / "x").cache.root == tmp_path / "x"
    assert VolumeSource(folder, DataConfig(cache_dir=str(tmp_path / "y"))).cache.root == tmp_path / "y"
    # an explicit folder that cannot be written is an error
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(DataError, match="cannot be created or written"):
        VolumeSource(folder, DataConfig(), cache_dir=tmp_path / "blocker" / "cache")
    # an unwritable default falls back to the run folder, with a warning
    (folder / ".anatssl_cache").write_text("a file where the cache folder would go")
    with caplog.at_level(logging.WARNING, logger="anatssl"):
        src = VolumeSource(folder, DataConfig(), fallback_cache_dir=tmp_path / "run" / "cache")
    assert src.cache.root == tmp_path / "run" / "cache"
    assert any("not writable" in r.getMessage() for r in caplog.records)
    assert src.load(0).image.ndim == 4


def test_shapes_and_small_scans_kept(folder):
    ct(folder / "case_small.nii.gz", shape=(12, 12, 8))
    src = VolumeSource(folder, DataConfig(foreground_crop=False))
    assert not src.validated
    src.validate(progress=False)
    assert src.validated
    shapes = dict(src.shapes())
    assert shapes[str(folder / "case_small.nii.gz")] == (12, 12, 8)
    assert shapes[str(folder / "case_0.nii.gz")] == (24, 20, 16)
    small = [Path(p).name for p, s in src.shapes() if any(a < b for a, b in zip(s, (16, 16, 8)))]
    assert small == ["case_small.nii.gz"]  # what the trainer announces for a method's min_volume_shape
    assert len(src) == 4  # small scans are not dropped


def test_empty_list_is_an_error(tmp_path):
    with pytest.raises(DataError, match="empty"):
        VolumeSource([], DataConfig(), cache_dir=tmp_path)
