"""``anatssl synth``: write a synthetic CT dataset (torso phantoms, organ labels, landmarks).

Example: ``anatssl synth --out data/synth --n 16 --seed 0 --size 96 --region both --lesions 0.5``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from anatssl.data.synthetic.subject import DEFAULT_FOV_MM, DEFAULT_SIZE, MIN_SIZE, REGIONS
from anatssl.data.synthetic.writer import check_request, write_dataset
from anatssl.errors import AnatsslError, ConfigError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "synth",
        help="write synthetic CT torso phantoms with organ labels and landmarks",
        description=(
            "Write N procedural CT-like torso phantoms as an MSD-style dataset: DIR/imagesTr/<id>.nii.gz "
            "(int16 HU), DIR/labelsTr/<id>.nii.gz (18 organ labels), DIR/landmarks/<id>.json (named "
            "landmarks, world mm) and DIR/dataset.json. Deterministic: the same --seed gives identical "
            "files, and subject i does not depend on --n. See docs/data.md."
        ),
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (created; must be new or empty)"
    )
    p.add_argument("--n", required=True, type=int, metavar="N", help="number of subjects to write (>= 1)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="dataset seed, default 0 (subject i's seed is derived from (S, i))",
    )
    p.add_argument(
        "--size",
        type=int,
        nargs="+",
        default=[DEFAULT_SIZE],
        metavar="N",
        help=f"grid size in voxels: one value (a cube) or three (X Y Z), each >= {MIN_SIZE}; "
        f"default {DEFAULT_SIZE}",
    )
    p.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        default=None,
        metavar="MM",
        help=f"voxel spacing in mm: one value or three (X Y Z); default {DEFAULT_FOV_MM:.0f} mm / size per "
        "axis, a field of view that holds an adult torso",
    )
    p.add_argument(
        "--region",
        choices=REGIONS,
        default="both",
        help="scan range along the body: chest (lung apices to upper abdomen), abdomen (diaphragm to "
        "pubis), both (heart to the aortic bifurcation; the default), or random (drawn per subject)",
    )
    p.add_argument(
        "--lesions",
        type=float,
        default=None,
        metavar="P",
        help="fraction of subjects (0-1) that get 1-3 lesions in the liver or kidneys; adds a 0/1 'lesion' "
        "field to each dataset.json entry for classification (default: no lesions and no field)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a synthetic dataset already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar (the summary line is still printed)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if len(args.size) not in (1, 3):
        raise ConfigError(f"--size takes one value or three (X Y Z), got {args.size}")
    if args.spacing is not None and len(args.spacing) not in (1, 3):
        raise ConfigError(f"--spacing takes one value or three (X Y Z), got {args.spacing}")
    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    try:
        check_request(
            args.n, args.seed, args.size, args.spacing, args.region, args.lesions, args.out, args.overwrite
        )
    except AnatsslError as e:  # name the command-line options rather than the API arguments
        msg = str(e)
        for name in ("size", "spacing", "lesions", "region"):
            msg = msg.replace(f"{name} ", f"--{name} ", 1) if msg.startswith(name) else msg
        raise type(e)(msg) from e
    console = Console(stderr=True)
    times: list[tuple[float, float]] = []
    t_start = time.perf_counter()
    with Progress(
        TextColumn("[bold]synth[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[speed]}"),
        TimeRemainingColumn(),
        console=console,
        disable=args.quiet,
        transient=False,
    ) as progress:
        task = progress.add_task("subjects", total=args.n, speed="")

        def on_subject(i: int, t_make: float, t_write: float) -> None:
            times.append((t_make, t_write))
            progress.update(task, advance=1, speed=f"{t_make + t_write:.2f} s/subject")

        dataset = write_dataset(
            args.out,
            n=args.n,
            seed=args.seed,
            size=args.size,
            spacing=args.spacing,
            region=args.region,
            lesions=args.lesions,
            overwrite=args.overwrite,
            on_subject=on_subject,
        )
    total = time.perf_counter() - t_start
    make = sum(t[0] for t in times) / len(times)
    write = sum(t[1] for t in times) / len(times)
    syn = dataset["synthetic"]
    assert isinstance(syn, dict)
    extra = ""
    if args.lesions is not None:
        training = dataset["training"]
        assert isinstance(training, list)
        extra = f", {sum(int(e['lesion']) for e in training)} with lesions"
    print(
        f"wrote {args.n} subjects{extra} to {args.out} (size {syn['size']}, spacing "
        f"{[round(v, 3) for v in syn['spacing']]} mm, region {args.region}) in {total:.1f} s: "
        f"{make:.2f} s/subject to generate + {write:.2f} s/subject to write"
    )
    return 0
