"""The compressed cache (``anatssl preprocess``, ``VolumeSource.validate``): identical arrays, start-up
without decoding, resuming after a kill mid-file, other settings, and a rank that fails, on real NIfTI
files and real worker processes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import anatssl.data.io as io_mod
from anatssl.cli.main import main
from anatssl.config.schema import DataConfig
from anatssl.data.cache import VolumeCache
from anatssl.data.manifest import discover
from anatssl.data.packed import PackedCache, fill
from anatssl.data.source import VolumeSource
from anatssl.data.synthetic import write_dataset
from anatssl.errors import DataError


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """4 synthetic CT subjects at 32^3 (int16 HU, labels); copied per test that writes next to them."""
    d = tmp_path_factory.mktemp("synth") / "s"
    write_dataset(d, 4, seed=3, size=32)
    return d


@pytest.fixture
def data(synth, tmp_path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(synth, d)
    return d


def _entries(root: Path) -> list[Path]:
    return sorted((root / "entries").iterdir())


@pytest.mark.parametrize("spacing", [None, (7.0, 7.0, 9.0)])
def test_packed_arrays_are_bit_identical_to_the_npy_cache(data, tmp_path, spacing):
    """Integer-HU CT is stored as uint16 codes, resampled CT as float32: either way the float32 bits
    (and the labels) come back exactly, whole and as crops that straddle chunk borders."""
    cfg = DataConfig(spacing=spacing)
    items = discover(data)
    cache = PackedCache(tmp_path / "c", cfg)
    states = fill(cache, items)
    assert [s.state for s in states] == ["ok"] * 4
    stored = states[0].meta["arrays"]["image"]["stored"]
    assert stored == ("<u2" if spacing is None else "<f4")
    ref = VolumeCache(tmp_path / "npy")
    for it, st in zip(items, states):
        got, want = cache.open(it, st.meta), ref.get(it, cfg)
        assert np.asarray(got.image).dtype == np.float32
        np.testing.assert_array_equal(np.asarray(got.image), want.image)
        np.testing.assert_array_equal(np.asarray(got.label), want.label)
        np.testing.assert_array_equal(got.affine, want.affine)
        box = (slice(None), slice(3, 31), slice(30, 34), slice(1, 40))
        np.testing.assert_array_equal(got.image[box], want.image[box])
        assert got.image[0, 2:5].shape == want.image[0, 2:5].shape
        assert float(got.image.max()) == float(want.image.max())  # ndarray methods decode the whole array
    raw = sum(4 * np.prod(s.meta["arrays"]["image"]["shape"]) for s in states)
    size = sum(s.meta["file_size"] for s in states)
    assert size < (0.4 if spacing is None else 0.9) * raw  # labels included


def test_preprocess_cli_reports_bad_scans_and_training_starts_without_decoding(
    data, tmp_path, monkeypatch, capsys
):
    (data / "imagesTr" / "synth_001.nii.gz").write_bytes(b"not a nifti file at all")
    assert main(["preprocess", "--data", str(data), "--workers", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "3 of 4 scans usable" in out and "synth_001.nii.gz" in out
    (root,) = (data / ".anatssl_cache").glob("packed-*")
    report = json.loads((root / "report.json").read_text())
    assert report["usable"] == 3 and [Path(b["image"]).name for b in report["unusable"]] == [
        "synth_001.nii.gz"
    ]

    def no_decoding(*a, **k):
        raise AssertionError("decoded a scan although the cache holds it")

    monkeypatch.setattr(io_mod, "read_volume", no_decoding)
    src = VolumeSource(data, DataConfig())
    bad = src.validate(progress=False)  # the bad scan is known bad without decoding it again
    assert [it.image.name for it, _ in bad] == ["synth_001.nii.gz"] and len(src) == 3
    vol = src.load(0)
    assert vol.meta["cache_entry"].startswith(str(root)) and src.shapes()[0][1] == vol.spatial_shape
    assert main(["preprocess", "--data", str(data), "--quiet"]) == 0
    assert "0 preprocessed now" in capsys.readouterr().out
    # an entry damaged under a running source (data file cut short) is rebuilt when drawn
    monkeypatch.undo()
    data_file = Path(vol.meta["cache_entry"]) / src._packed_meta[str(src.items[0].image)]["file"]
    before = np.asarray(vol.image)
    data_file.write_bytes(data_file.read_bytes()[:64])
    np.testing.assert_array_equal(np.asarray(src.load(0).image), before)


KILLER = """
import os, sys, zlib
import anatssl.data.packed as packed
from anatssl.config.schema import DataConfig
from anatssl.data.manifest import discover
calls = [0]
real = zlib.compress
def compress(b, level):
    calls[0] += 1
    if calls[0] == int(sys.argv[3]):
        os._exit(9)  # killed mid-file: no cleanup runs
    return real(b, level)
packed.zlib.compress = compress
packed.fill(packed.PackedCache(sys.argv[2], DataConfig()), discover(sys.argv[1]))
"""


def test_a_preprocess_killed_mid_file_leaves_no_valid_entry_and_resumes(data, tmp_path):
    cache = PackedCache(tmp_path / "c", DataConfig())
    # a cropped 32^3 subject is one image chunk and one label chunk: the 6th chunk is the 3rd scan's label
    proc = subprocess.run([sys.executable, "-c", KILLER, str(data), str(tmp_path / "c"), "6"], timeout=300)
    assert proc.returncode == 9
    items = discover(data)
    states = [cache.status(it).state for it in items]
    assert "ok" in states and "todo" in states, states
    first_todo = states.index("todo")
    entry = cache.entry_dir(items[first_todo])
    assert [p.name for p in entry.iterdir() if p.name.startswith(".tmp-")]  # the partial file is there
    assert not (entry / "meta.json").exists()
    done = {i: cache.status(it).meta["file"] for i, it in enumerate(items) if states[i] == "ok"}
    (leftover,) = [p for p in entry.iterdir() if p.name.startswith(".tmp-")]
    young = entry / ".tmp-young.bin"  # another writer's file in progress: not removed
    young.write_bytes(b"x")
    os.utime(leftover, (1e9, 1e9))
    after = fill(cache, items)
    assert [s.state for s in after] == ["ok"] * 4
    assert {i: after[i].meta["file"] for i in done} == done  # finished entries were not redone
    assert not leftover.exists() and young.exists()  # the old leftover is gone, the young file kept
    # a data file cut short after its meta.json was written is not valid either
    data_file = entry / after[first_todo].meta["file"]
    data_file.write_bytes(data_file.read_bytes()[:100])
    assert cache.status(items[first_todo]).state == "todo"


def test_a_cache_made_with_other_settings_is_not_read_and_the_reason_is_given(data, caplog):
    assert main(["preprocess", "--data", str(data), "--quiet"]) == 0
    (old,) = (data / ".anatssl_cache").glob("packed-*")
    src = VolumeSource(data, DataConfig(hu_window=(-500.0, 500.0)))
    with caplog.at_level(logging.WARNING, logger="anatssl"):
        src.validate(progress=False)
    assert (
        "hu_window: [-1000.0, 1000.0] there, [-500.0, 500.0] here" in caplog.text and str(old) in caplog.text
    )
    assert not src.load(0).meta["cache_entry"].startswith(str(old))
    # an entry carried into the folder of other settings (same path hash) is refused, not read
    other = src.packed
    entry = other.entry_dir(src.items[0])
    shutil.rmtree(entry)
    shutil.copytree(PackedCache(data / ".anatssl_cache", DataConfig()).entry_dir(src.items[0]), entry)
    assert other.status(src.items[0]).state == "todo"
    # a source changed after preprocessing is redone
    img = src.items[1].image
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    assert other.status(src.items[1]).reason == "its source changed since it was preprocessed"


def test_a_failed_cache_write_is_an_error_naming_the_scan(data, tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PackedCache, "_write", full)
    with pytest.raises(DataError, match=r"rank 0: .*synth_000.nii.gz: OSError: \[Errno 28\]"):
        VolumeSource(data, DataConfig(), cache_dir=tmp_path / "c").validate(progress=False)


DDP = """
import os, sys, json, datetime
import torch.distributed as dist
from anatssl.config.schema import DataConfig
from anatssl.data.packed import PackedCache
from anatssl.data.source import VolumeSource
rank, data = int(sys.argv[1]), sys.argv[3]
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[2], rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=60))
out = {}
real_write, real_build = PackedCache._write, PackedCache.build
if rank == 1:  # first: rank 1 cannot write its cache entries
    def full(*a, **k):
        raise OSError(28, "No space left on device")
    PackedCache._write = full
try:
    VolumeSource(data, DataConfig(), cache_dir=data + "/../cache").validate(progress=False)
except Exception as e:
    out["error"] = str(e)
PackedCache._write = real_write
built = []
def build(self, item):
    built.append(item.image.name)
    return real_build(self, item)
PackedCache.build = build
src = VolumeSource(data, DataConfig(), cache_dir=data + "/../cache")
bad = src.validate(progress=False)
out.update(items=[p.image.name for p in src.items], bad=[[i.image.name, r] for i, r in bad], built=built)
json.dump(out, open(data + f"/../rank{rank}.json", "w"))
"""


@pytest.mark.slow  # 2 processes importing torch: ~25 s here
def test_ranks_preprocess_disjoint_shares_and_a_failing_rank_does_not_hang_the_other(data, tmp_path):
    """Two gloo ranks over 4 scans, the 4th broken: (1) rank 1's cache writes fail: both ranks stop with
    one message naming rank 1 and its scan (no hang: the 60 s collective timeout would fail the test);
    (2) then each rank builds every other scan and both drop the broken one, saying it was rank 1's."""
    import socket

    (data / "imagesTr" / "synth_003.nii.gz").write_bytes(b"broken")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", DDP, str(r), port, str(data)], env=env) for r in (0, 1)]
    assert [p.wait(timeout=240) for p in procs] == [0, 0]
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert res[0]["error"] == res[1]["error"]
    assert "rank 1: " in res[0]["error"] and "synth_001.nii.gz" in res[0]["error"]
    assert "No space left" in res[0]["error"] and "rank 0" not in res[0]["error"]
    # rank 0's share (0, 2) was cached by the first attempt; the second builds the rest
    assert res[0]["built"] == [] and res[1]["built"] == ["synth_001.nii.gz"]
    assert res[0]["items"] == res[1]["items"] == [f"synth_00{i}.nii.gz" for i in range(3)]
    assert res[0]["bad"] == res[1]["bad"]
    ((name, reason),) = res[0]["bad"]
    assert name == "synth_003.nii.gz" and reason.endswith("(rank 1)")


@pytest.mark.slow  # one pretraining step: ~15 s here
def test_pretraining_after_preprocess_reads_the_cache_and_decodes_nothing(data, tmp_path, monkeypatch):
    assert main(["preprocess", "--data", str(data), "--quiet"]) == 0

    def no_decoding(*a, **k):
        raise AssertionError("decoded a scan although the cache holds it")

    monkeypatch.setattr(io_mod, "read_volume", no_decoding)
    args = ["pretrain", "--method", "swinssl", "--data", str(data), "--out", str(tmp_path / "run")]
    args += ["train.max_steps=1", "train.batch_size=1", "train.progress=false", "train.tensorboard=false"]
    assert main(args) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_a_scan_broken_after_preprocessing_is_recorded_bad_and_a_fixed_one_usable_again(data, tmp_path):
    cache = PackedCache(tmp_path / "c", DataConfig())
    items = discover(data)
    assert fill(cache, items)[2].state == "ok"
    good = items[2].image.read_bytes()
    items[2].image.write_bytes(b"broken")
    assert cache.status(items[2]).reason == "its source changed since it was preprocessed"
    assert fill(cache, items)[2].state == "bad" and cache.status(items[2]).state == "bad"
    items[2].image.write_bytes(good)
    assert cache.status(items[2]).state == "todo"
    assert fill(cache, items)[2].state == "ok" and cache.status(items[2]).state == "ok"
