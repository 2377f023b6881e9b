"""``anatssl finetune``: fine-tune (or probe) an encoder on a labelled dataset and score held-out volumes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from anatssl.cli.args import add_config_layers, add_labelled_data, command_parser

EPILOG = """\
examples:
  anatssl finetune --task segmentation --data data --init runs/swinssl --out ft/swinssl --labeled 4
  anatssl finetune --task segmentation --data data --init scratch --out ft/scratch --labeled 4
  anatssl finetune --task segmentation --data data --init model_swinvit.pt --out ft/tang model.feature_size=48
  anatssl finetune --task classification --data lesions --init runs/swinssl --out ft/cls
  anatssl finetune --task probe --data lesions --init runs/swinssl --out ft/probe classification.probe=svm
  anatssl finetune --task segmentation-probe --data data --init runs/s2dc --out ft/probe --labeled 1
  anatssl finetune --task segmentation-probe --data data --init scratch --out ft/probe0 --labeled 1 seed=0

--init takes `scratch`, a pretraining run directory (its model and intensity settings are used), or a
weights file (.pt / .safetensors: an `anatssl export`, or Tang et al. / MONAI Swin weights, whose keys are
mapped and reported). key=value overrides address the resolved config (see OUT/config.yaml), e.g.
train.max_steps=300, optim.lr=1e-4, segmentation.roi_size=[96,96,96], split.n_test=6.

Writes OUT/config.yaml, OUT/metrics.jsonl (loss per step), OUT/metrics.json (per-structure Dice and
HD95 in mm for segmentation; accuracy and AUC for classification / probe), OUT/predictions/*.nii.gz,
OUT/report/*.png and OUT/model.pt.

segmentation under torchrun (one process per GPU; gloo on CPU): each process trains on its share of
the training volumes, DDP averages the gradients, rank 0 validates, evaluates and writes (docs/scaling.md):
  torchrun --nproc_per_node 8 -m anatssl.cli.main finetune --task segmentation --data d --init r --out ft
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = command_parser(
        sub,
        "finetune",
        help="fine-tune a pretrained (or scratch) encoder: segmentation, classification, linear probe",
        description="Fine-tune an encoder on a labelled MSD-style dataset.json with a fixed held-out test "
        "split, then evaluate the held-out volumes.",
        epilog=EPILOG,
    )
    p.add_argument(
        "--task",
        required=True,
        choices=["segmentation", "classification", "probe", "segmentation-probe", "label-transfer"],
        help="segmentation: Swin-UNETR with DiceCE, sliding-window Dice/HD95; classification: "
        "encoder + linear head fine-tuned end to end; probe: frozen pooled features + scikit-learn "
        "logistic regression or linear SVM (S2DC's protocol); segmentation-probe: a linear 1x1x1 head "
        "on frozen multi-scale encoder features (dense.*); label-transfer: no training, each voxel "
        "takes the label of its nearest labelled voxel in feature space",
    )
    add_labelled_data(p)
    p.add_argument(
        "--init",
        required=True,
        help="'scratch', a pretraining run directory, or a weights file (.pt / .safetensors)",
    )
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument(
        "--labeled",
        type=int,
        default=None,
        help="train on the first N volumes of the labelled pool (few-shot; the held-out test "
        "split does not change); default: the whole pool",
    )
    add_config_layers(
        p,
        "configs/finetune/<task>_<preset>.yaml: tiny (CPU scale), cpu (segmentation: the CPU "
        "recipe with validation and class-aware crops, docs/downstream.md) or base; default tiny",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from anatssl.downstream.config import load_finetune_config
    from anatssl.downstream.runner import run_finetune
    from anatssl.downstream.weights import resolve_init
    from anatssl.engine import distributed as D
    from anatssl.engine.logger import setup_console_logging

    setup_console_logging()
    init = resolve_init(args.init)
    overrides = list(args.overrides)
    if args.labeled is not None:
        overrides.append(f"split.labeled={args.labeled}")
    from_init = {"model": init.model_section, "data": init.data_section} if init.kind != "scratch" else None
    cfg = load_finetune_config(args.task, args.preset, args.config, overrides, from_init=from_init)
    metrics = run_finetune(cfg, args.data, init, args.out, data_format=args.format)
    if D.is_main():  # under torchrun rank 0 evaluates and writes
        print(json.dumps(summary(metrics), indent=2))
        print(f"wrote {Path(args.out) / 'metrics.json'}")
    return 0


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "task",
        "labeled",
        "precision",
        "selection",
        "mean_dice",
        "mean_hd95_mm",
        "dice",
        "accuracy",
        "auc",
        "train_seconds",
    )
    return {k: metrics[k] for k in keep if k in metrics}
