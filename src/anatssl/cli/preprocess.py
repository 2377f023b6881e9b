"""``anatssl preprocess``: fill the compressed cache that pretraining reads, with N worker processes.

Example: ``anatssl preprocess --data data/ct --workers 8 --method swinssl --preset base``; then
``anatssl pretrain --method swinssl --preset base --data data/ct ...`` starts without decoding a scan.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from anatssl.cli.args import add_config_layers, add_scan_data, command_parser

EPILOG = """\
examples:
  anatssl preprocess --data data/ct --workers 8 --method swinssl --preset base
  anatssl preprocess --data data/ct --workers 8 data.spacing=[1.5,1.5,2.0] data.cache_dir=/scratch/c

Pass the --method / --preset / --config / data.* overrides of the run you will start: the cache holds
one set of preprocessing settings (data.*, model.in_channels), and a run with other settings does not
read it (it says which setting differs and builds its own). Killed, it continues where it stopped when
run again. The scans it cannot use are listed at the end and in <cache>/report.json; exit status 0
if at least one scan is usable.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from anatssl.methods import METHODS

    p = command_parser(
        sub,
        "preprocess",
        help="decode, resample, normalise and crop every scan once, into the compressed training cache",
        description="Decode, reorient, resample, normalise and crop every scan with N worker processes "
        "into the compressed, chunked cache that pretraining reads (docs/data.md, Cache).",
        epilog=EPILOG,
    )
    add_scan_data(p)
    p.add_argument(
        "--workers", type=int, default=1, metavar="N", help="worker processes (default 1; one per core)"
    )
    p.add_argument(
        "--method",
        default="swinssl",
        choices=METHODS.names(),
        help="the method whose preset holds the data settings (default swinssl)",
    )
    add_config_layers(p, "the preset the run will use (tiny or base; default tiny)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (the summary stays)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from anatssl.data.layouts import discover
    from anatssl.data.packed import PackedCache, fill, other_settings
    from anatssl.data.source import choose_cache_dir
    from anatssl.errors import ConfigError, DataError
    from anatssl.runs import load_pretrain_config

    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    cfg = load_pretrain_config(args.method, args.preset, args.config, list(args.overrides))
    items = discover(args.data, args.format)
    cache = PackedCache(
        choose_cache_dir(args.data, cfg.data.cache_dir), cfg.data, channels=cfg.model.in_channels
    )
    for line in other_settings(cache.cache_dir, cache.spec):
        print(f"note: {line}")
    before = [cache.status(it).state for it in items]
    t0 = time.perf_counter()
    statuses = fill(cache, items, workers=args.workers, progress=not args.quiet)
    seconds = time.perf_counter() - t0
    errors = [(it, st.reason) for it, st in zip(items, statuses) if st.state == "error"]
    if errors:
        listing = "; ".join(f"{it.image}: {r}" for it, r in errors[:3])
        raise DataError(f"cannot write the cache {cache.root} for {len(errors)} scan(s): {listing}")
    ok = [st for st in statuses if st.state == "ok"]
    bad = [(str(it.image), st.reason) for it, st in zip(items, statuses) if st.state == "bad"]
    new = sum(1 for b, st in zip(before, statuses) if b == "todo" and st.state != "todo")
    stored = sum(int(st.meta["file_size"]) for st in ok if st.meta)
    raw = sum(4 * _voxels(st.meta["arrays"]["image"]["shape"]) for st in ok if st.meta)
    report = {
        "cache": str(cache.root),
        "settings": cache.spec,
        "scans": len(items),
        "usable": len(ok),
        "preprocessed_now": new,
        "seconds": round(seconds, 3),
        "workers": args.workers,
        "stored_bytes": stored,
        "raw_float32_image_bytes": raw,
        "unusable": [{"image": p, "reason": r} for p, r in bad],
    }
    cache.ensure_root()
    cache.write_report(report)
    ratio = f" = {stored / raw:.2f}x" if raw else ""
    print(
        f"{len(ok)} of {len(items)} scans usable in {cache.root} ({new} preprocessed now, in {seconds:.1f} s "
        f"with {args.workers} worker(s)); {stored / 1e6:.1f} MB stored vs {raw / 1e6:.1f} MB as raw "
        f"float32{ratio}"
    )
    if bad:
        print(f"{len(bad)} scan(s) cannot be used (listed in {cache.root / 'report.json'}):")
        for p, r in bad:
            print(f"  {p}: {r}")
    if not ok:
        raise DataError(f"none of the {len(items)} scans in {args.data} can be used")
    return 0


def _voxels(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
