"""``anatssl quickstart``: the whole story on built-in synthetic data, on a laptop CPU."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "quickstart",
        help="synthetic data -> pretraining -> fine-tuning (pretrained vs scratch) -> a table",
        description="Run the full pipeline on built-in synthetic CT phantoms with the tiny presets: "
        "`anatssl synth`, `anatssl pretrain`, then segmentation fine-tuning of the pretrained encoder "
        "and of a randomly initialised one on a few labelled volumes; prints a table and writes plots "
        "to OUT/report/.",
    )
    p.add_argument("--out", default="quickstart", help="output folder (default: ./quickstart)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and of training")
    p.add_argument(
        "--method", default=None, help="pretraining method (default: alice when available, else swinssl)"
    )
    p.add_argument(
        "--fast", action="store_true", help="a ~1-minute smoke version (fewer steps, smaller data)"
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from anatssl.bench.quickstart import run_quickstart

    run_quickstart(args.out, seed=args.seed, method=args.method, fast=args.fast)
    return 0
