"""``anatssl evaluate segmentation``: the task entry for ``cli/evaluate.py``'s TASKS table."""

from __future__ import annotations

import argparse

from anatssl.cli.args import add_format

HELP = "Dice / HD95 of a fine-tuned segmentation model on held-out or new labelled volumes"

EPILOG = """\
examples:
  anatssl finetune --task segmentation --data data --init runs/swinssl --out ft/swinssl --labeled 4
  anatssl evaluate segmentation --model ft/swinssl --data data --out eval/swinssl            # held-out split
  anatssl evaluate segmentation --model ft/swinssl --data other_data --cases all --out eval/other

Writes OUT/metrics.json (per-structure and mean Dice and HD95 in mm, per case), OUT/predictions/*.nii.gz
and OUT/report/overlay_*.png, with the fine-tuning run's preprocessing and sliding-window settings.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, metavar="DIR", help="an `anatssl finetune --task segmentation` output"
    )
    p.add_argument(
        "--data",
        required=True,
        help="a labelled dataset.json (or its folder), or a downloaded layout (docs/layouts.md)",
    )
    add_format(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--cases",
        choices=["test", "all"],
        default="test",
        help="test: the fine-tuning run's held-out split of this data (default); all: every case",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")


def run(args: argparse.Namespace) -> int:
    from anatssl.downstream.evaluate import evaluate_finetuned_segmentation

    m = evaluate_finetuned_segmentation(
        args.model, args.data, args.out, args.cases, args.device, data_format=args.format
    )
    print(
        f"mean Dice {m['mean_dice']:.4f}, mean HD95 {m['mean_hd95_mm']:.2f} mm on {len(m['cases'])} volumes "
        f"-> {args.out}/metrics.json"
    )
    return 0
