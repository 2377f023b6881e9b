"""``anatssl evaluate label-transfer``: the task entry for ``cli/evaluate.py``'s TASKS table."""

from __future__ import annotations

import argparse

from anatssl.cli.args import add_config_layers, add_labelled_data

HELP = (
    "few-shot segmentation with no training: each held-out voxel takes the label of its nearest labelled "
    "voxel in the encoder's feature space (also a linear probe with --probe)"
)

EPILOG = """\
examples:
  anatssl evaluate label-transfer --init runs/s2dc --data data --out eval/lt_s2dc --labeled 1,2,4
  anatssl evaluate label-transfer --init scratch --data data --out eval/lt_random --labeled 1,2,4 \\
      model.backbone=conv model.feature_size=12          # the random-init control (seed=0)
  anatssl evaluate label-transfer --init runs/s2dc --data data --out eval/all --labeled 1 --probe --landmarks

Features: the encoder's five maps upsampled to stride dense.stride (2) plus the input, standardised;
cosine nearest neighbour among dense.reference_voxels (2048) class-balanced cells per labelled volume.
The labelled and held-out volumes are the fine-tuning split (split.n_test, split.split_seed): the first
N of the pool. --probe adds the linear probe (dense.steps, dense.lr), --landmarks landmark matching
across the held-out volumes with the same features. Writes OUT/metrics.json (label_transfer / probe ->
{N: mean_dice, per-structure dice, per-case Dice}, landmarks) and OUT/config.yaml.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--init",
        required=True,
        help="'scratch' (random init with seed=S: the control), a pretraining run directory or checkpoint, "
        "or a weights file (.pt / .safetensors)",
    )
    add_labelled_data(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--labeled",
        default=None,
        help="comma-separated labelled-volume counts, e.g. 1,2,4 (features are computed once); "
        "default: the whole pool",
    )
    p.add_argument("--probe", action="store_true", help="also train and score the linear probe")
    p.add_argument("--landmarks", action="store_true", help="also match landmarks across held-out volumes")
    add_config_layers(
        p,
        "configs/finetune/segmentation_<preset>.yaml (default tiny)",
        "config overrides (dense.*, split.*, ...)",
    )


def run(args: argparse.Namespace) -> int:
    from anatssl.downstream.config import load_finetune_config
    from anatssl.downstream.dense_probe import dense_evaluation
    from anatssl.downstream.weights import resolve_init
    from anatssl.engine.logger import setup_console_logging
    from anatssl.errors import ConfigError

    setup_console_logging()
    try:
        counts = [int(x) for x in args.labeled.split(",") if x.strip()] if args.labeled else None
    except ValueError as e:
        raise ConfigError(f"--labeled takes comma-separated integers, got {args.labeled!r}") from e
    init = resolve_init(args.init)
    from_init = {"model": init.model_section, "data": init.data_section} if init.kind != "scratch" else None
    cfg = load_finetune_config(
        "label-transfer", args.preset, args.config, args.overrides, from_init=from_init
    )
    m = dense_evaluation(
        cfg,
        args.data,
        init,
        args.out,
        counts,
        probe=args.probe,
        landmarks=args.landmarks,
        data_format=args.format,
    )
    for key in ("label_transfer", "probe"):
        for n, r in m.get(key, {}).items():
            name = key.replace("_", " ")
            print(f"{name:14s} @{n}: mean Dice {r['mean_dice']:.4f} on {len(m['test_cases'])} volumes")
    lm = m.get("landmarks") or {}
    if lm.get("available"):
        print(
            f"landmarks: {lm['model']['mre_mm']:.1f} mm mean radial error "
            f"(same voxel {lm['same_voxel']['mre_mm']:.1f} mm, "
            f"chance {lm['random_foreground']['mre_mm']:.1f} mm)"
        )
    print(f"-> {args.out}/metrics.json")
    return 0
