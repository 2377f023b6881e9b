"""``anatssl views``: draw a method's training views on a few scans (PNG), to check them by eye."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from anatssl.cli.args import add_config_layers, add_scan_data, command_parser

EPILOG = """\
examples:
  anatssl synth --out data --n 2 --seed 0
  anatssl views --method s2dc --data data --out views
  anatssl views --method s2dc --preset base --data data --out views s2dc.official=true
  anatssl views --method alice --data data --out views alice.pairing=random

s2dc: each PNG shows the src slab and aug_full side by side; matched token centres are dots of one
colour joined by a line, unmatched ones grey crosses. Lines must join the same anatomy.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from anatssl.views.inspect import INSPECTORS

    p = command_parser(
        sub,
        "views",
        help="draw a method's training views (correspondences, pairs) to PNG files",
        description="Cut a method's views from the first scans of a dataset exactly as pretraining "
        "would (same config resolution, same preprocessing) and draw them, one PNG per scan.",
        epilog=EPILOG,
    )
    p.add_argument("--method", required=True, choices=INSPECTORS.names(), help="the SSL method to inspect")
    add_scan_data(p)
    p.add_argument("--out", required=True, help="output folder for the PNG files (created)")
    add_config_layers(
        p, "configs/pretrain/<method>_<preset>.yaml (default tiny)", "config overrides, e.g. s2dc.grid=2"
    )
    p.add_argument("--n", type=int, default=4, help="number of scans to draw (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the view randomness (default 0)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from anatssl.data.layouts import discover
    from anatssl.errors import ConfigError
    from anatssl.methods import build_method
    from anatssl.runs import load_pretrain_config
    from anatssl.runs.prestep import training_source
    from anatssl.views.inspect import INSPECTORS

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    cfg = load_pretrain_config(args.method, args.preset, args.config, args.overrides)
    torch.manual_seed(cfg.seed)
    method = build_method(cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    items = None if args.format is None else discover(args.data, args.format)
    source = training_source(cfg, args.data, out, items)  # as pretraining cuts them: same channels, cache
    inspector = INSPECTORS.get(args.method)
    for i in range(min(args.n, len(source))):
        volume = source.load(i)
        rng = np.random.default_rng([args.seed, i])
        path = inspector(method, volume, rng, source, out / f"{args.method}_{i:03d}.png")
        print(path)
    return 0
