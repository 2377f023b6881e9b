"""``anatssl synth``: write a synthetic dataset: CT torso phantoms (organ labels, landmarks), or with
``--kind mri-brain`` warped copies of the MNI152 T1 brain (atlas labels, their centroids as landmarks).

Example: ``anatssl synth --out data/synth --n 16 --seed 0 --size 96 --region both --lesions 0.5``;
``anatssl synth --kind mri-brain --out data/brain --n 32`` (needs ``pip install -e ".[mri]"`` and
``apt-get install mricron-data``).
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

KINDS = ("torso", "mri-brain")
BRAIN_SIZE = (64, 76, 64)
"""``mri_brain.DEFAULT_SIZE`` (not imported here: that module is only loaded for --kind mri-brain)."""


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
        "--kind",
        choices=KINDS,
        default="torso",
        help="torso: procedural CT phantoms (default); mri-brain: the MNI152 T1 template (nilearn) under a "
        "known random affine + elastic warp and MRI-like intensity changes, Harvard-Oxford cortical + JHU "
        "white-matter labels (Debian mricron-data) and their centroids as landmarks; default grid 64 x 76 x "
        "64 at 3 mm (src/anatssl/data/synthetic/mri_brain.py, docs/results/real-mri.md)",
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
        default=None,
        metavar="N",
        help=f"grid size in voxels: one value (a cube) or three (X Y Z), each >= {MIN_SIZE}; "
        f"default {DEFAULT_SIZE} (mri-brain: {' '.join(map(str, BRAIN_SIZE))})",
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
        default=None,
        help="scan range along the body: chest (lung apices to upper abdomen), abdomen (diaphragm to "
        "pubis), both (heart to the aortic bifurcation; the default), or random (drawn per subject); "
        "torso only",
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
    if args.kind == "mri-brain":
        return run_brain(args)
    if args.region is None:
        args.region = "both"
    if args.size is None:
        args.size = [DEFAULT_SIZE]
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


def run_brain(args: argparse.Namespace) -> int:
    """``--kind mri-brain``: :func:`anatssl.data.synthetic.mri_brain.write_brain_dataset`."""
    from anatssl.data.synthetic.mri_brain import DEFAULT_SIZE as SIZE
    from anatssl.data.synthetic.mri_brain import DEFAULT_SPACING, write_brain_dataset

    if args.region is not None or args.lesions is not None:
        raise ConfigError("--region and --lesions are torso options; --kind mri-brain takes neither")
    for name in ("size", "spacing"):
        v = getattr(args, name)
        if v is not None and len(v) not in (1, 3):
            raise ConfigError(f"--{name} takes one value or three (X Y Z), got {v}")
    size = SIZE if args.size is None else (args.size * 3 if len(args.size) == 1 else args.size)
    spacing = DEFAULT_SPACING if args.spacing is None else args.spacing * (3 // len(args.spacing))
    t0 = time.perf_counter()
    try:
        dataset = write_brain_dataset(
            args.out, n=args.n, seed=args.seed, size=size, spacing=spacing, overwrite=args.overwrite
        )
    except AnatsslError as e:
        msg = str(e)
        for name in ("size", "spacing", "n", "seed"):
            msg = msg.replace(f"{name} ", f"--{name} ", 1) if msg.startswith(name) else msg
        raise type(e)(msg) from e
    syn = dataset["synthetic"]
    assert isinstance(syn, dict)
    print(
        f"wrote {args.n} mri-brain subjects to {args.out} (size {syn['size']}, spacing {syn['spacing']} mm, "
        f"{len(dataset['labels']) - 1} labels) in {time.perf_counter() - t0:.1f} s"  # type: ignore[arg-type]
    )
    return 0
