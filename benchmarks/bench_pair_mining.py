"""Alice pair-mining throughput: our ``PairMiner`` vs the straightforward way (the public code's).

The straightforward way scores one query at a time: the fine and coarse cosine maps of the query
against the whole partner are computed on their grids, both are upsampled (trilinear) to the partner's
full voxel grid, averaged, and the argmax is taken over every voxel; queries are drawn until one scores
above the threshold (at most ``max_tries``). Ours draws all candidates up front and scores ``chunk``
queries per matrix product on the partner's fine grid, the coarse map interpolated with a precomputed
8-neighbour table (``anatssl/anatomy/pairing.py``).

Embeddings are *ideal* (random Fourier features of an anatomical coordinate shared by the two scans,
as in ``tests/anatomy/test_pairing.py``), so both ways should land on the same anatomy; the table
reports pairs per second, the mean distance between the two ways' matches (mm) and each way's mean
error to the true corresponding point (mm). Two regimes: ``threshold 0.7`` (a match is accepted at
the first tries, the usual case with a good SAM) and ``threshold 1.1`` (nothing is accepted: all 100
tries are scored, the worst case).

Usage (the lead runs the full table on a quiet machine; ``--quick`` is a smoke run)::

    python benchmarks/bench_pair_mining.py --threads 2 --sizes 96 160 --pairs 20 \
        --out benchmarks/results/bench_pair_mining.json
    python benchmarks/bench_pair_mining.py --quick
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from anatssl.anatomy.embedding import EmbeddingMap
from anatssl.anatomy.pairing import PairMiner, query_vectors, refine_to_voxel, snap_to_cells
from anatssl.data.volume import Volume


# -- synthetic scans with ideal embeddings ---------------------------------------------------------------
def _grid_affine(vol_affine: np.ndarray, stride: int) -> np.ndarray:
    m = np.diag([float(stride)] * 3 + [1.0])
    m[:3, 3] = (stride - 1) / 2
    return vol_affine @ m


def make_pair(
    size: int,
    spacing: float = 2.0,
    dim: int = 128,
    fine_stride: int = 2,
    coarse_stride: int = 16,
    seed: int = 0,
) -> tuple[tuple[Volume, EmbeddingMap], tuple[Volume, EmbeddingMap], object]:
    """Two ``size^3`` scans whose anatomies differ by a scale and a shift; returns them and ``B <- A`` map."""
    rng = np.random.default_rng(seed)
    feats = [
        (rng.normal(0, 1 / 6.0, (dim // 2, 3)), rng.uniform(0, 2 * np.pi, dim // 2)),
        (rng.normal(0, 1 / 30.0, (dim // 2, 3)), rng.uniform(0, 2 * np.pi, dim // 2)),
    ]
    fov = size * spacing
    centre = np.full(3, fov / 2)
    out = []
    for scale, shift in ((1.0, np.zeros(3)), (1.08, np.array([6.0, -4.0, 8.0]))):
        aff = np.diag([spacing] * 3 + [1.0])
        vol = Volume(np.zeros((1, size, size, size), np.float32), aff, f"scan_{scale}.nii.gz")
        g = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1)
        u = scale * (vol.voxel_to_world(g) - shift)
        vol.image[0] = (np.linalg.norm(u - centre, axis=-1) < 0.4 * fov).astype(np.float32)
        maps, affs = [], []
        for stride, (w, b) in zip((fine_stride, coarse_stride), feats):
            ga = _grid_affine(aff, stride)
            n = -(-size // stride)
            gg = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1)
            ph = scale * (EmbeddingMap.grid_to_world(ga, gg) - shift) @ w.T + b
            f = np.concatenate([np.cos(ph), np.sin(ph)], -1) / np.sqrt(dim // 2)
            maps.append(np.moveaxis(f, -1, 0).astype(np.float16))
            affs.append(ga)
        out.append((vol, EmbeddingMap(maps[0], maps[1], affs[0], affs[1], {}), scale, shift))
    (va, ea, _, _), (vb, eb, sb, tb) = out

    def truth(p_a: np.ndarray) -> np.ndarray:
        return va.voxel_to_world(p_a) / sb + tb  # world of the same anatomy in B

    return (va, ea), (vb, eb), truth


# -- the straightforward way -----------------------------------------------------------------------------
def naive_mine(
    vol_a: Volume, emb_a: EmbeddingMap, vol_b: Volume, emb_b: EmbeddingMap, cand: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """One query at a time, similarity upsampled to B's full voxel grid (as the public code)."""
    fine_b = torch.from_numpy(emb_b.fine.astype(np.float32))
    coarse_b = torch.from_numpy(emb_b.coarse.astype(np.float32))
    shape = vol_b.spatial_shape
    best = (-np.inf, None, None)
    for p in cand:
        fqa, cqa = query_vectors(vol_a, emb_a, p[None])  # the same query vectors as ours
        fq, cq = torch.from_numpy(fqa)[0], torch.from_numpy(cqa)[0]
        sf = torch.einsum("dxyz,d->xyz", fine_b, fq)[None, None]
        sc = torch.einsum("dxyz,d->xyz", coarse_b, cq)[None, None]
        sim = (
            0.5
            * (
                F.interpolate(sf, size=shape, mode="trilinear", align_corners=False)
                + F.interpolate(sc, size=shape, mode="trilinear", align_corners=False)
            )[0, 0]
        )
        score, flat = sim.flatten().max(0)
        if float(score) > best[0]:
            best = (float(score), p, np.array(np.unravel_index(int(flat), shape)))
        if float(score) > threshold:
            break
    return best[1], best[2]  # type: ignore[return-value]


def run(size: int, pairs: int, threshold: float, chunk: int) -> dict[str, float]:
    (va, ea), (vb, eb), truth = make_pair(size)
    miner = PairMiner(threshold=threshold, max_tries=100, border_margin=8, chunk=chunk)
    rng = np.random.default_rng(0)
    fg = miner.foreground(va)
    cands = [snap_to_cells(va, ea, fg[rng.integers(len(fg), size=100)]) for _ in range(pairs)]
    # ours (the first call builds B's index, as a real run does once per partner it keeps cached)
    miner.mine(va, ea, vb, eb, np.random.default_rng(123))
    t0 = time.perf_counter()
    ours = [miner.mine(va, ea, vb, eb, np.random.default_rng(1000 + i)) for i in range(pairs)]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = [naive_mine(va, ea, vb, eb, c, threshold) for c in cands]
    t_naive = time.perf_counter() - t0
    err_ours = [np.linalg.norm(vb.voxel_to_world(r.voxel_b) - truth(r.voxel_a)) for r in ours]
    err_naive = [np.linalg.norm(vb.voxel_to_world(q) - truth(p)) for p, q in naive]
    # the same queries through both ways (one try each): how far apart are the matches?
    index = miner._fine_index(vb, eb)
    dist = []
    for p in cands[0][:10]:
        _, q_naive = naive_mine(va, ea, vb, eb, p[None], -np.inf)
        fq, cq = query_vectors(va, ea, p[None])
        sim = index.similarity(fq, cq)[:, 0]
        q_ours, _ = refine_to_voxel(sim, int(sim.argmax()), vb, eb)
        dist.append(np.linalg.norm(vb.voxel_to_world(q_naive) - vb.voxel_to_world(q_ours)))
    agree = float(np.mean(dist))
    return {
        "size": size,
        "threshold": threshold,
        "pairs": pairs,
        "chunk": chunk,
        "ours_pairs_per_s": pairs / t_ours,
        "naive_pairs_per_s": pairs / t_naive,
        "speedup": t_naive / t_ours,
        "ours_mean_tries": float(np.mean([r.tries for r in ours])),
        "ours_error_mm": float(np.mean(err_ours)),
        "naive_error_mm": float(np.mean(err_naive)),
        "same_query_match_distance_mm": agree,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 160], help="scan edge (voxels, 2 mm)")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.7, 1.1])
    ap.add_argument("--pairs", type=int, default=20, help="pairs mined per row")
    ap.add_argument("--chunk", type=int, default=16, help="queries scored per matrix product (ours)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    ap.add_argument("--quick", action="store_true", help="smoke run: one small size, 2 pairs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.sizes, args.pairs = [48], 2
    rows = [run(s, args.pairs, t, args.chunk) for s in args.sizes for t in args.thresholds]
    hdr = (
        f"{'size':>5} {'thr':>4} {'ours pairs/s':>12} {'naive pairs/s':>13} {'speedup':>8} {'tries':>6} "
        f"{'err ours':>9} {'err naive':>9} {'ours-naive':>10}"
    )
    print(hdr)
    for r in rows:
        print(
            f"{r['size']:>5} {r['threshold']:>4} {r['ours_pairs_per_s']:>12.2f} "
            f"{r['naive_pairs_per_s']:>13.2f} {r['speedup']:>8.1f} {r['ours_mean_tries']:>6.1f} "
            f"{r['ours_error_mm']:>9.2f} "
            f"{r['naive_error_mm']:>9.2f} {r['same_query_match_distance_mm']:>10.2f}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
