"""``anatssl evaluate <task>``: score a pretrained or fine-tuned model. One entry per task in ``TASKS``.

A task is a pair ``(add_arguments(parser), run(args) -> int)``; adding one (e.g. ``segmentation``) is one
function pair and one line in ``TASKS``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anatssl.cli.args import SCAN_DATA_HELP, add_format, add_match_prior, match_prior

CORRESPONDENCE_EPILOG = """\
examples:
  anatssl synth --out data --n 24
  anatssl pretrain --method sam --data data --out runs/sam
  anatssl evaluate correspondence --model runs/sam --data data --out eval/sam
  anatssl evaluate correspondence --model runs/swinssl --data data --out eval/swinssl

Every landmark of each subject (dataset.json entries with `landmarks`) is matched into every other
subject; OUT/metrics.json holds the mean radial error (mm), the median and the share within 10 mm of the
model and of two baselines: `same_voxel` (identical voxel indices of the preprocessed grids, no learning)
and `random_foreground` (a random body voxel, chance), plus the model's mean error per landmark.
A SAM run matches with 1/2 (fine cos + coarse cos); a run of any other method with cosine nearest
neighbour on its backbone's stride-2 dense features (--features). Scans are preprocessed with the run's
data preset.
"""


def add_correspondence_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        metavar="RUN",
        help="a pretraining run (SAM or any other method) or its checkpoint file",
    )
    p.add_argument(
        "--data", required=True, help=SCAN_DATA_HELP + "; the cases with landmarks are the subjects"
    )
    add_format(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory; writes DIR/metrics.json")
    p.add_argument(
        "--features",
        choices=["decoder", "encoder"],
        default="decoder",
        help="non-SAM runs: the backbone's stride-2 decoder output (default) or first encoder "
        "stage, L2-normalised",
    )
    p.add_argument(
        "--max-subjects",
        type=int,
        default=None,
        help="use only the first N subjects with landmarks (N (N-1) ordered pairs); default all",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random-foreground baseline (default 0)")
    p.add_argument(
        "--cell-centre",
        action="store_true",
        help="SAM's matching rule: the centre of the best fine cell (default: sub-cell refined matches)",
    )
    add_match_prior(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_correspondence(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from anatssl.anatomy.correspondence import evaluate_correspondence, write_metrics
    from anatssl.cli.args import scan_items
    from anatssl.data.source import VolumeSource
    from anatssl.runs.embedding import model_embedder

    prior = match_prior(args)
    embed, cfg = model_embedder(args.model, args.features)
    out = Path(args.out)
    source = VolumeSource(
        scan_items(args), cfg.data, fallback_cache_dir=out / "cache", channels=cfg.model.in_channels
    )
    vols = [source.load(i) for i in range(len(source))]
    cols = (TextColumn("correspondence"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*cols, disable=args.no_progress) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        metrics = evaluate_correspondence(
            vols,
            embed,
            seed=args.seed,
            max_subjects=args.max_subjects,
            progress=progress,
            subcell=not args.cell_centre,
            prior=prior,
            window_mm=args.window_mm,
        )
    metrics["model_run"] = str(args.model)
    metrics["method"] = cfg.method
    metrics["features"] = "sam" if cfg.method == "sam" else args.features
    path = write_metrics(metrics, out)
    for name in ("model", "same_voxel", "random_foreground", "affine_fit"):
        if name not in metrics:
            continue
        m = metrics[name]
        print(
            f"{name:18s} MRE {m['mre_mm']:7.2f} mm  median {m['median_mm']:7.2f} mm  "
            f"within 10 mm {100 * m['within_10mm']:5.1f} %  (n={m['n']})"
        )
    for name, d in metrics["vs_baselines"].items():
        lo, hi = d["ci95_mm"]
        print(
            f"model vs {name}: closer in {100 * d['model_closer']:.1f} % of the matches, mean difference "
            f"{d['mean_difference_mm']:+.2f} mm (95 % interval {lo:+.2f} to {hi:+.2f}, "
            "bootstrap over subjects)"
        )
    print(f"-> {path}")
    return 0


from anatssl.cli import evaluate_label_transfer as _lt  # noqa: E402
from anatssl.cli import evaluate_segmentation as _seg  # noqa: E402

Task = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str, str]
"""(add its arguments, run it, help line, epilog)."""

TASKS: dict[str, Task] = {
    "correspondence": (
        add_correspondence_args,
        run_correspondence,
        "landmark matching across subjects (mean radial error) vs. no-learning and chance baselines",
        CORRESPONDENCE_EPILOG,
    ),
    "segmentation": (_seg.add_arguments, _seg.run, _seg.HELP, _seg.EPILOG),
    "label-transfer": (_lt.add_arguments, _lt.run, _lt.HELP, _lt.EPILOG),
}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate",
        help="score a model: " + ", ".join(TASKS),
        description="Evaluate a pretrained or fine-tuned model on one task.",
    )
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    for name, (add_args, run_task, help_line, epilog) in TASKS.items():
        tp = tasks.add_parser(
            name,
            help=help_line,
            description=help_line,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_args(tp)
        tp.set_defaults(func=run_task)
    p.set_defaults(func=run, _evaluate_parser=p)
    return p


def run(args: argparse.Namespace) -> int:
    """Reached only without a task: show the tasks."""
    args._evaluate_parser.print_help()
    return 2
