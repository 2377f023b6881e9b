"""The compressed cache (``anatssl preprocess``) against the memory-mapped float32 ``.npy`` cache.

Measures, on synthetic CT written by ``anatssl synth`` (int16 HU NIfTI, labels):

* ``preprocess``: scans/s of :func:`anatssl.data.packed.fill` with 1 and 2 worker processes (fresh cache
  folder each time; decode + reorient + normalise + crop + compress + write);
* ``size``: bytes on disk vs the raw float32 image (and vs the ``.npy`` cache of the same scans), for
  the native grid (uint16 HU codes) and a resampled grid (``data.spacing`` set: float32, lossless);
  for CHUNK 32 / 64 and zlib level 1 / 6, which chose the defaults;
* ``crops``: random 96^3 crops/s (``VolumeSource.load``-like open + ``crop_at``) from each cache,
  page cache warm, for chunk edges 32 and 64;
* ``startup``: ``VolumeSource(data).validate()`` (what a run does before building its model) on an
  N-scan dataset with a complete cache vs without one (one process, as one rank does it).

The compared variants alternate inside each repetition and the medians are reported, because the
machine these figures come from was shared with a long-running benchmark (load average ~5 on 2 cores).

Usage::

    python benchmarks/bench_packed_cache.py --out benchmarks/results/bench_packed_cache.json
    python benchmarks/bench_packed_cache.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import anatssl.data.packed as packed
from anatssl.config.schema import DataConfig
from anatssl.data.cache import VolumeCache
from anatssl.data.manifest import discover
from anatssl.data.packed import PackedCache, fill
from anatssl.data.source import VolumeSource
from anatssl.data.synthetic import write_dataset
from anatssl.views.crops import crop_at

CROP = (96, 96, 96)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _fresh(root: Path, name: str) -> Path:
    d = root / name
    shutil.rmtree(d, ignore_errors=True)
    return d


def bench_preprocess(data: Path, work: Path, reps: int) -> dict[str, Any]:
    items = discover(data)
    times: dict[int, list[float]] = {1: [], 2: []}
    for r in range(reps):
        for w in (1, 2) if r % 2 == 0 else (2, 1):
            cache = PackedCache(_fresh(work, f"pre{w}"), DataConfig())
            t = time.perf_counter()
            states = fill(cache, items, workers=w)
            times[w].append(time.perf_counter() - t)
            assert all(s.state == "ok" for s in states)
    out = {
        f"workers_{w}": {"seconds": statistics.median(v), "scans_per_s": len(items) / statistics.median(v)}
        for w, v in times.items()
    }
    out["scans"] = len(items)
    out["speedup_2_vs_1"] = out["workers_2"]["scans_per_s"] / out["workers_1"]["scans_per_s"]
    return out


def bench_size(data: Path, work: Path) -> dict[str, Any]:
    items = discover(data)
    out: dict[str, Any] = {}
    for grid, cfg in (("native", DataConfig()), ("resampled_3mm", DataConfig(spacing=(3.0, 3.0, 3.0)))):
        npy = VolumeCache(_fresh(work, "npy"))
        raw = 0
        for it in items:
            raw += npy.get(it, cfg).image.nbytes
        row: dict[str, Any] = {"raw_float32_image_bytes": raw, "npy_cache_bytes": _du(npy.root)}
        for chunk in (32, 64):
            for level in (1, 6):
                packed.CHUNK, packed.ZLIB_LEVEL = chunk, level
                cache = PackedCache(_fresh(work, "sz"), cfg)
                t = time.perf_counter()
                states = fill(cache, items)
                secs = time.perf_counter() - t
                image_bytes = 0
                for it, st in zip(items, states):
                    v = cache.open(it, st.meta)
                    image_bytes += int(v.image.offsets[-1] - v.image.offsets[0])
                total = _du(cache.root)
                row[f"chunk{chunk}_zlib{level}"] = {
                    "stored": states[0].meta["arrays"]["image"]["stored"],
                    "image_bytes": image_bytes,
                    "image_ratio_vs_raw_float32": image_bytes / raw,
                    "cache_bytes_with_labels": total,
                    "cache_ratio_vs_npy_cache": total / row["npy_cache_bytes"],
                    "seconds_to_write": secs,
                }
        out[grid] = row
    packed.CHUNK, packed.ZLIB_LEVEL = 32, 1
    return out


def bench_crops(data: Path, work: Path, n: int, reps: int) -> dict[str, Any]:
    items = discover(data)
    cfg = DataConfig()
    npy = VolumeCache(_fresh(work, "crop_npy"))
    caches = {}
    for chunk in (32, 64):
        packed.CHUNK = chunk
        c = PackedCache(_fresh(work, f"crop{chunk}"), cfg)
        caches[chunk] = (c, {str(it.image): st.meta for it, st in zip(items, fill(c, items))})
    packed.CHUNK = 32
    for it in items:
        npy.get(it, cfg)
    shapes = [npy.get(it, cfg).spatial_shape for it in items]
    rng = np.random.default_rng(0)

    def starts(k: int) -> list[tuple[int, Any]]:
        out = []
        for _ in range(k):
            i = int(rng.integers(len(items)))
            out.append((i, [int(rng.integers(0, max(1, s - c + 1))) for s, c in zip(shapes[i], CROP)]))
        return out

    def run_npy(plan: list) -> None:
        for i, st in plan:
            crop_at(npy.get(items[i], cfg).image, st, CROP).copy()

    def run_packed(chunk: int, plan: list) -> None:
        c, metas = caches[chunk]
        for i, st in plan:
            crop_at(c.open(items[i], metas[str(items[i].image)]).image, st, CROP)  # type: ignore[arg-type]

    # identical crops from both
    i, st = starts(1)[0]
    c32, m32 = caches[32]
    a = crop_at(c32.open(items[i], m32[str(items[i].image)]).image, st, CROP)  # type: ignore[arg-type]
    assert np.array_equal(a, crop_at(npy.get(items[i], cfg).image, st, CROP))
    rates: dict[str, list[float]] = {"npy_mmap": [], "packed_chunk32": [], "packed_chunk64": []}
    for r in range(reps):
        plan = starts(n)
        order = ["npy_mmap", "packed_chunk32", "packed_chunk64"]
        for name in order if r % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            if name == "npy_mmap":
                run_npy(plan)
            else:
                run_packed(int(name[-2:]), plan)
            rates[name].append(n / (time.perf_counter() - t))
    out: dict[str, Any] = {k: {"crops_per_s": statistics.median(v)} for k, v in rates.items()}
    out["ratio_packed32_vs_npy"] = out["packed_chunk32"]["crops_per_s"] / out["npy_mmap"]["crops_per_s"]
    out["volume_shapes"] = [list(s) for s in shapes]
    return out


def bench_startup(data: Path, work: Path, reps: int) -> dict[str, Any]:
    cfg = DataConfig()
    cached = work / "startup_cached"
    VolumeSource(data, cfg, cache_dir=_fresh(work, "startup_cached")).validate(progress=False)
    with_c, without = [], []
    for r in range(reps):
        for mode in ("with", "without") if r % 2 == 0 else ("without", "with"):
            t = time.perf_counter()
            if mode == "with":
                VolumeSource(data, cfg, cache_dir=cached).validate(progress=False)
                with_c.append(time.perf_counter() - t)
            else:
                VolumeSource(data, cfg, cache_dir=_fresh(work, "startup_none")).validate(progress=False)
                without.append(time.perf_counter() - t)
    w, wo = statistics.median(with_c), statistics.median(without)
    return {"scans": len(discover(data)), "with_cache_s": w, "without_cache_s": wo, "ratio": wo / w}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="JSON file for the results")
    ap.add_argument("--quick", action="store_true", help="a smoke run: tiny data, one repetition")
    ap.add_argument("--work", help="scratch folder (default: a temp folder, removed)")
    ap.add_argument(
        "--parts",
        default="preprocess,size,crops,startup",
        help="comma-separated parts to run; with --out, the others keep their figures from that file",
    )
    args = ap.parse_args()
    torch_threads = os.environ.get("OMP_NUM_THREADS")
    q = args.quick
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_packed_"))
    parts = set(args.parts.split(","))
    res: dict[str, Any] = {}
    if args.out and Path(args.out).is_file() and parts != {"preprocess", "size", "crops", "startup"}:
        res = json.loads(Path(args.out).read_text())
    res.update(omp_num_threads=torch_threads)
    res[f"load_average_start_{'_'.join(sorted(parts))}"] = os.getloadavg()
    try:
        n_pre, size_pre, n_crop, size_crop, n_start, size_start = (
            (4, 32, 2, 48, 8, 32) if q else (16, 96, 6, 128, 200, 64)
        )
        d96 = work / f"synth_{size_pre}"
        if not d96.exists():
            write_dataset(d96, n_pre, seed=0, size=size_pre)
        d128 = work / f"synth_{size_crop}"
        if not d128.exists():
            write_dataset(d128, n_crop, seed=1, size=size_crop)
        d64 = work / f"synth_{n_start}x{size_start}"
        if not d64.exists():
            write_dataset(d64, n_start, seed=2, size=size_start)
        res["data"] = {
            "preprocess_and_size": f"{n_pre} synth scans at {size_pre}^3",
            "crops": f"{n_crop} synth scans at {size_crop}^3",
            "startup": f"{n_start} synth scans at {size_start}^3",
        }
        if "preprocess" in parts:
            res["preprocess"] = bench_preprocess(d96, work, 1 if q else 3)
            print(json.dumps(res["preprocess"], indent=1), flush=True)
        if "size" in parts:
            res["size"] = bench_size(d96, work)
            print(json.dumps(res["size"], indent=1), flush=True)
        if "crops" in parts:
            res["crops"] = bench_crops(d128, work, 5 if q else 40, 1 if q else 5)
            print(json.dumps(res["crops"], indent=1), flush=True)
        if "startup" in parts:
            res["startup"] = bench_startup(d64, work, 1 if q else 3)
            print(json.dumps(res["startup"], indent=1), flush=True)
        res[f"load_average_end_{'_'.join(sorted(parts))}"] = os.getloadavg()
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
