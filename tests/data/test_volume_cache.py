"""VolumeCache: decode once, memory-mapped hits, invalidation on source / preset change, atomic writes."""

from __future__ import annotations

import json
import os
import pickle
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import anatssl.data.cache as cache_mod
import anatssl.data.io as io_mod  # the decoder every cache calls (through io.read_scan)
from anatssl.config.schema import DataConfig
from anatssl.data.cache import VolumeCache
from anatssl.data.manifest import DataItem
from anatssl.errors import DataError


def ct_scan(path: Path, seed: int = 0, shape=(24, 20, 16), label: bool = False) -> DataItem:
    """Air with a soft-tissue box (HU) and, optionally, a label file on the same grid."""
    rng = np.random.default_rng(seed)
    img = np.full(shape, -1000.0, np.float32)
    img[6:18, 5:15, 4:12] = 40.0 + 10.0 * rng.standard_normal((12, 10, 8))
    aff = np.diag([1.0, 1.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(img, aff), str(path))
    lab_path = None
    if label:
        lab = np.zeros(shape, np.uint8)
        lab[8:12, 7:10, 5:9] = 2
        lab_path = path.with_name(path.name.replace(".nii.gz", "_seg.nii.gz"))
        nib.save(nib.Nifti1Image(lab, aff), str(lab_path))
    return DataItem(image=path, label=lab_path)


@pytest.fixture
def count_reads(monkeypatch):
    """Counts calls of the decoder (the real one runs; the counter only counts)."""
    calls: list[str] = []
    real = io_mod.read_volume

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(io_mod, "read_volume", counting)
    return calls


def test_get_stores_npy_and_sidecar_and_hits_without_decoding(tmp_path, count_reads):
    item = ct_scan(tmp_path / "a.nii.gz", label=True)
    cache = VolumeCache(tmp_path / "cache")
    cfg = DataConfig()
    v1 = cache.get(item, cfg)
    assert len(count_reads) == 2  # image + label
    entry = Path(v1.meta["cache_entry"])
    sidecar = json.loads((entry / "meta.json").read_text())
    assert sidecar["source"]["image"] == str(item.image)
    assert sidecar["fingerprint"]["image"]["size"] == item.image.stat().st_size
    assert sidecar["shape"] == list(v1.image.shape)
    assert isinstance(v1.image, np.memmap) and not v1.image.flags.writeable
    assert v1.image.dtype == np.float32 and v1.label.dtype == np.int16
    assert 0.0 <= float(v1.image.min()) and float(v1.image.max()) <= 1.0
    mtime = (entry / "meta.json").stat().st_mtime_ns

    v2 = cache.get(item, cfg)  # same process: memo hit
    v3 = VolumeCache(tmp_path / "cache").get(item, cfg)  # fresh process state: hash check, still a hit
    assert len(count_reads) == 2
    assert (entry / "meta.json").stat().st_mtime_ns == mtime
    for v in (v2, v3):
        np.testing.assert_array_equal(v.image, v1.image)
        np.testing.assert_array_equal(v.label, v1.label)
        np.testing.assert_allclose(v.affine, v1.affine)


def test_cached_volume_matches_direct_preprocessing(tmp_path):
    from anatssl.data.io import read_volume
    from anatssl.data.presets import preprocess

    item = ct_scan(tmp_path / "a.nii.gz")
    cfg = DataConfig(spacing=(2.0, 2.0, 2.0))
    cached = VolumeCache(tmp_path / "c").get(item, cfg)
    direct = preprocess(read_volume(item.image), cfg)
    np.testing.assert_array_equal(np.asarray(cached.image), direct.image)
    np.testing.assert_allclose(cached.affine, direct.affine)


def test_source_change_invalidates(tmp_path, count_reads):
    item = ct_scan(tmp_path / "a.nii.gz", seed=0)
    cache = VolumeCache(tmp_path / "cache")
    v1 = cache.get(item, DataConfig())
    old = np.array(v1.image)
    ct_scan(tmp_path / "a.nii.gz", seed=1)  # rewritten with other noise
    v2 = cache.get(item, DataConfig())
    assert len(count_reads) == 2
    assert not np.array_equal(np.asarray(v2.image), old)
    np.testing.assert_array_equal(old, v1.image)  # the old mmap still reads the old (unlinked) array
    files = sorted(p.name for p in Path(v2.meta["cache_entry"]).iterdir())
    assert len([f for f in files if f.startswith("image-")]) == 1  # the replaced array was removed


def test_same_size_and_mtime_but_new_content_is_caught_by_the_hash(tmp_path, count_reads):
    item = ct_scan(tmp_path / "a.nii", seed=0)  # uncompressed: new noise, same size
    VolumeCache(tmp_path / "cache").get(item, DataConfig())
    st = item.image.stat()
    ct_scan(tmp_path / "a.nii", seed=2)
    os.utime(item.image, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -p` / `rsync -t` would leave it
    assert item.image.stat().st_size == st.st_size and item.image.stat().st_mtime_ns == st.st_mtime_ns
    VolumeCache(tmp_path / "cache").get(item, DataConfig())
    assert len(count_reads) == 2


def test_preset_change_is_a_different_entry(tmp_path, count_reads):
    item = ct_scan(tmp_path / "a.nii.gz")
    cache = VolumeCache(tmp_path / "cache")
    a = cache.get(item, DataConfig())
    b = cache.get(item, DataConfig(hu_window=(-200.0, 300.0)))
    assert len(count_reads) == 2
    assert a.meta["cache_entry"] != b.meta["cache_entry"]
    assert a.meta["preset_key"] != b.meta["preset_key"]
    assert not np.array_equal(np.asarray(a.image), np.asarray(b.image))
    cache.get(item, DataConfig())  # the first entry is still there
    assert len(count_reads) == 2


def test_writes_leave_no_temp_files_even_on_failure(tmp_path, monkeypatch):
    item = ct_scan(tmp_path / "a.nii.gz", label=True)
    cache = VolumeCache(tmp_path / "cache")
    vol = cache.get(item, DataConfig())
    entry = Path(vol.meta["cache_entry"])
    assert not [p for p in entry.iterdir() if p.name.startswith(".tmp")]
    assert sorted(p.suffix for p in entry.iterdir()) == [".json", ".npy", ".npy"]

    def broken_save(f, arr):
        f.write(b"partial")
        raise OSError("disk full")

    ct_scan(tmp_path / "a.nii.gz", seed=3, label=True)  # force a rebuild
    monkeypatch.setattr(cache_mod.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        VolumeCache(tmp_path / "cache").get(item, DataConfig())
    assert not [p for p in entry.iterdir() if p.name.startswith(".tmp")]
    assert json.loads((entry / "meta.json").read_text())["image_file"] in os.listdir(
        entry
    )  # old entry intact


def test_concurrent_writers_leave_a_consistent_entry(tmp_path):
    item = ct_scan(tmp_path / "a.nii.gz", label=True)
    cfg = DataConfig()
    results, errors = [], []

    def worker():
        try:
            results.append(VolumeCache(tmp_path / "cache").get(item, cfg))  # separate memos: all decode
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    for v in results[1:]:
        np.testing.assert_array_equal(v.image, results[0].image)
    entry = Path(results[0].meta["cache_entry"])
    assert not [p for p in entry.iterdir() if p.name.startswith(".tmp")]
    final = VolumeCache(tmp_path / "cache").get(item, cfg)
    np.testing.assert_array_equal(final.image, results[0].image)


def test_damaged_cache_file_is_rebuilt(tmp_path, count_reads):
    item = ct_scan(tmp_path / "a.nii.gz")
    vol = VolumeCache(tmp_path / "cache").get(item, DataConfig())
    expected, entry = np.array(vol.image), Path(vol.meta["cache_entry"])
    del vol  # drop the mmap before damaging its file in place (the cache itself never writes in place)
    name = json.loads((entry / "meta.json").read_text())["image_file"]
    (entry / name).write_bytes(b"\x93NUMPY garbage")
    again = VolumeCache(tmp_path / "cache").get(item, DataConfig())
    assert len(count_reads) == 2
    np.testing.assert_array_equal(np.asarray(again.image), expected)


def test_bad_source_and_missing_source(tmp_path):
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(b"\x1f\x8b\x08 not really gzip")
    cache = VolumeCache(tmp_path / "cache")
    with pytest.raises(DataError) as e:
        cache.get(DataItem(image=path), DataConfig())
    assert "bad.nii.gz" in str(e.value)
    with pytest.raises(DataError, match="does not exist") as e:
        cache.get(DataItem(image=tmp_path / "gone.nii.gz"), DataConfig())
    assert "gone.nii.gz" in str(e.value)


def test_cache_pickles_with_its_memo(tmp_path, count_reads):
    item = ct_scan(tmp_path / "a.nii.gz")
    cache = VolumeCache(tmp_path / "cache")
    cache.get(item, DataConfig())
    clone = pickle.loads(pickle.dumps(cache))
    clone.get(item, DataConfig())
    assert len(count_reads) == 1


def test_can_write(tmp_path):
    assert VolumeCache.can_write(tmp_path / "new" / "dir")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert not VolumeCache.can_write(blocker / "sub")


def test_folder_fingerprint_follows_its_files(tmp_path):
    """A DICOM series folder is fingerprinted by its listing: a rewritten or added slice changes it."""
    series = tmp_path / "series"
    series.mkdir()
    for k in range(3):
        (series / f"IM{k}").write_bytes(bytes([k]) * 100)
    fp = cache_mod.fingerprint(series)
    assert fp == cache_mod.fingerprint(series) and fp["size"] == 300
    (series / "IM1").write_bytes(b"x" * 101)
    fp2 = cache_mod.fingerprint(series)
    assert fp2["hash"] != fp["hash"] and fp2["size"] == 301
    (series / "IM3").write_bytes(b"y")
    assert cache_mod.fingerprint(series)["hash"] != fp2["hash"]
