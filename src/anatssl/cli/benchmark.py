"""``anatssl benchmark``: pretrain every method of a suite, fine-tune each (and scratch), tabulate."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from anatssl.cli.args import add_format, command_parser

EPILOG = """\
examples:
  anatssl benchmark --suite smoke --out bench/smoke
  anatssl benchmark --suite synthetic-small --out bench/small --jobs 2     # hours on a 2-core CPU
  anatssl benchmark --suite synthetic-small --out bench/small --seeds 0 --labeled 2   # a first look
  anatssl benchmark --suite synthetic-small --out bench/small --methods swinssl,simmim
  anatssl benchmark --suite real-mri --out bench/mri --methods sam   # the SAM arm only (needs .[mri])

Suites:
{suites}

Rerunning with the same --out resumes: finished cells (DIR/cells/*.json) are not recomputed, an
interrupted pretraining continues from its last checkpoint. Writes DIR/results.json, DIR/results.md
(methods x metrics, mean +- std over seeds) and DIR/plots/ (Dice vs labelled volumes, pretraining loss
curves, landmark correspondence error).
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from anatssl.bench.suites import SUITES

    listing = "\n".join(f"  {s.name}: {s.description}" for s in SUITES.values())
    p = command_parser(
        sub,
        "benchmark",
        help="run a benchmark suite: methods x seeds x labelled volumes -> table + plots",
        description="Pretrain each method of a suite with the same budget and seeds, fine-tune each "
        "pretrained encoder and a scratch baseline with few labelled volumes, evaluate held-out "
        "segmentation and landmark correspondence, and write a results table and plots.",
        epilog=EPILOG.format(suites=listing),
    )
    p.add_argument("--suite", required=True, choices=sorted(SUITES), help="which suite (see below)")
    p.add_argument("--out", required=True, help="benchmark directory (created; reuse it to resume)")
    p.add_argument("--methods", help="comma-separated subset of the suite's methods (default: all)")
    p.add_argument("--seeds", help="comma-separated seeds overriding the suite's (e.g. 0 for a first look)")
    p.add_argument("--labeled", help="comma-separated labelled-volume counts overriding the suite's")
    p.add_argument(
        "--data",
        help="use this labelled dataset (an MSD dataset.json or its folder, or a downloaded layout: "
        "docs/layouts.md) instead of generating the suite's synthetic data",
    )
    add_format(p)
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="cells run at once, each in its own process with cpu_count / JOBS torch threads (default 1); "
        "the numbers do not depend on it beyond floating-point rounding",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from anatssl.bench.runner import run_suite
    from anatssl.bench.suites import get_suite
    from anatssl.engine.logger import setup_console_logging
    from anatssl.errors import ConfigError

    setup_console_logging()
    if args.format is not None:
        check_data_format(args.data, args.format)
    suite = get_suite(args.suite)
    methods = None
    arms = (*suite.methods, "sam") if suite.sam is not None else suite.methods
    if args.methods:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in methods if m not in arms]
        if unknown:
            raise ConfigError(
                f"--methods {','.join(unknown)}: not in suite {suite.name!r} ({', '.join(arms)})"
            )
    try:
        if args.seeds:
            suite = dataclasses.replace(
                suite, seeds=tuple(int(x) for x in args.seeds.split(",") if x.strip())
            )
        if args.labeled:
            suite = dataclasses.replace(
                suite, labeled=tuple(int(x) for x in args.labeled.split(",") if x.strip())
            )
    except ValueError as e:
        raise ConfigError(f"--seeds / --labeled take comma-separated integers: {e}") from e
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    data = args.data
    if data is None and (suite.sam is not None or suite.data.get("kind", "torso") != "torso"):
        from anatssl.bench.sam_arm import suite_data  # brains are not anatssl synth's default kind

        data = suite_data(suite, Path(args.out))
    if suite.sam is not None and (methods is None or "sam" in methods):
        from anatssl.bench.sam_arm import run_sam_arm

        run_sam_arm(suite, Path(data), Path(args.out), args.format)
        print((Path(args.out) / "sam.md").read_text())
        if methods == ["sam"]:
            return 0
        methods = [m for m in methods if m != "sam"] if methods else None
    results = run_suite(suite, args.out, methods=methods, data=data, jobs=args.jobs, data_format=args.format)
    print((Path(args.out) / "results.md").read_text())
    return 1 if results.get("failures") else 0


def check_data_format(data: str | None, fmt: str) -> None:
    """``--format``: ``--data`` must read as that layout (else the layout reader's message) before any
    cell starts; every cell then reads it as that layout too (a folder that detection would read as
    another layout is fine)."""
    from anatssl.data.layouts import read_dataset
    from anatssl.errors import ConfigError

    if data is None:
        raise ConfigError(f"--format {fmt} names the layout of --data; give --data too")
    read_dataset(data, fmt)
