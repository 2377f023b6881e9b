"""``anatssl embed``: compute (or refresh) the SAM embedding cache of a dataset."""

from __future__ import annotations

import argparse
from typing import Any

from anatssl.cli.args import add_scan_data, command_parser

EPILOG = """\
examples:
  anatssl pretrain --method sam --data data --out runs/sam
  anatssl embed --model runs/sam --data data --out emb/sam
  anatssl pretrain --method alice --data data --out runs/alice --embeddings emb/sam

Writes DIR/cache.json (model run, weights hash, preprocessing preset) and one DIR/<scan>-<key>.npz per
scan: float16 fine (stride 2) and coarse maps with their grid -> world affines. Scans whose entry is
fresh (same scan bytes, same weights, same preset) are skipped; stale entries are recomputed. Every file
is written under a temporary name and renamed, so an interrupted run leaves no half-written entry.
The scans are preprocessed with the SAM run's own data preset (RUN/config.yaml `data:`).
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = command_parser(
        sub,
        "embed",
        help="SAM anatomical embeddings of every scan of a dataset, cached on disk",
        description="Embed every scan of a dataset with a trained SAM model (anatssl pretrain --method sam) "
        "into a cache directory that Alice and `anatssl match` read.",
        epilog=EPILOG,
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="RUN",
        help="a SAM run directory (config.yaml + checkpoints/last.pt) or its checkpoint file",
    )
    add_scan_data(p, ", or one volume file")
    p.add_argument("--out", required=True, metavar="DIR", help="cache directory (created; reused later)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument(
        "--window",
        type=int,
        default=128,
        help="embed volumes larger than this many voxels per axis in overlapping windows "
        "(0: whole volume at once; default 128)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in logs)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from anatssl.cli.args import scan_items
    from anatssl.runs.embedding import embed_dataset

    stats = embed_dataset(
        args.model,
        scan_items(args),
        args.out,
        device=args.device,
        window=args.window or None,
        progress=not args.no_progress,
    )
    print(f"embedded {stats['computed']} scan(s), {stats['skipped']} already cached -> {args.out}")
    return 0
