"""SAM embedding throughput: volumes/s and Mvoxel/s of ``embed_volume``, and matching throughput (points/s).

What ``anatssl embed`` costs per scan and what ``match_points`` costs per query, for the tiny and base
networks (random weights: speed does not depend on them):

* ``embed``: whole-volume forward (``window=0``) and the overlapping-window path (``window=128``,
  25 % overlap) on a volume of the given shape (tiny: a 96^3 synthetic scan at 4 mm after the foreground
  crop is about 96 x 88 x 96; base: an abdominal CT at 2 mm is about 192 x 160 x 200), plus the float16
  conversion and the ``.npz`` write of the cache entry;
* ``match``: ``match_points`` of N query points between two such embeddings (fine + upsampled coarse
  similarity, argmax over B's fine grid).

Usage (the lead runs the full table on a quiet machine; ``--quick`` is a smoke run)::

    python benchmarks/bench_embed.py --out benchmarks/results/bench_embed.json
    python benchmarks/bench_embed.py --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anatssl.anatomy.cache import embed_volume, save_map
from anatssl.anatomy.matching import match_points
from anatssl.anatomy.sam_model import SAMNet
from anatssl.data.volume import Volume

# (name, width, blocks, volume shape, spacing mm)
CASES = [
    ("tiny_96", 16, (1, 1, 1), (96, 88, 96), 4.0),
    ("base_2mm", 32, (2, 2, 2, 2), (192, 160, 200), 2.0),
]
QUICK = [("quick", 8, (1, 1, 1), (32, 32, 32), 4.0)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn: Any, device: torch.device, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_case(
    name: str,
    width: int,
    blocks: tuple[int, ...],
    shape: tuple[int, int, int],
    spacing: float,
    device: torch.device,
    warmup: int,
    reps: int,
    points: int,
) -> dict[str, Any]:
    torch.manual_seed(0)
    net = SAMNet(1, width, blocks, 128).to(device).eval()
    rng = np.random.default_rng(0)
    vol = Volume(rng.random((1, *shape), dtype=np.float32), np.diag([spacing] * 3 + [1.0]), f"{name}.nii.gz")
    nvox = float(np.prod(shape))
    row: dict[str, Any] = {
        "case": name,
        "shape": list(shape),
        "width": width,
        "blocks": list(blocks),
        "params": sum(p.numel() for p in net.parameters()),
    }
    for label, window in (("whole", None), ("windowed128", 128)):
        t = _time(lambda w=window: embed_volume(net, vol, window=w, device=device), device, warmup, reps)
        row[f"embed_{label}_s"] = t
        row[f"embed_{label}_mvox_per_s"] = nvox / t / 1e6
    emap = embed_volume(net, vol, window=None, device=device)
    with tempfile.TemporaryDirectory() as d:
        row["write_npz_s"] = _time(lambda: save_map(emap, Path(d) / "e.npz"), device, 0, max(1, reps))
        row["entry_mb"] = (Path(d) / "e.npz").stat().st_size / 2**20
    pts = vol.voxel_to_world(rng.uniform(0, np.asarray(shape) - 1, size=(points, 3)))
    t = _time(lambda: match_points(emap, emap, pts), device, 0, max(1, reps))
    row["match_points"] = points
    row["match_s"] = t
    row["match_points_per_s"] = points / t
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: one 32^3 case, one repetition")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions (median reported)")
    ap.add_argument("--points", type=int, default=256, help="query points for the matching benchmark")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()
    device = torch.device(args.device)
    cases = QUICK if args.quick else CASES
    warmup, reps = (0, 1) if args.quick else (1, args.reps)
    rows = [
        run_case(*c, device=device, warmup=warmup, reps=reps, points=16 if args.quick else args.points)
        for c in cases
    ]
    for r in rows:
        print(
            f"{r['case']:10s} {tuple(r['shape'])} params {r['params'] / 1e6:.2f} M | embed whole "
            f"{r['embed_whole_s']:.2f} s ({r['embed_whole_mvox_per_s']:.2f} Mvox/s), windowed "
            f"{r['embed_windowed128_s']:.2f} s | npz {r['write_npz_s']:.2f} s, {r['entry_mb']:.1f} MB | "
            f"match {r['match_points_per_s']:.0f} points/s"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        meta = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
