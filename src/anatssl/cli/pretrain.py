"""``anatssl pretrain``: self-supervised pretraining of one method on a folder / manifest of scans."""

from __future__ import annotations

import argparse
from typing import Any

from anatssl.cli.args import add_config_layers, add_scan_data, command_parser
from anatssl.runs import load_pretrain_config, resume_pretrain_config

EPILOG = """\
examples:
  anatssl synth --out data --n 8 --seed 0
  anatssl pretrain --method swinssl --preset tiny --data data --out runs/swinssl train.max_steps=20
  anatssl pretrain --method swinssl --data data --out runs/swinssl --resume train.max_steps=40
  torchrun --nproc_per_node 2 -m anatssl.cli.main pretrain --method swinssl --data data --out runs/ddp

key=value overrides address the resolved config (see RUN/config.yaml), e.g. seed=1,
train.batch_size=4, optim.lr=1e-4, model.backbone=conv, swinssl.temperature=0.2.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from anatssl.methods import METHODS

    p = command_parser(
        sub,
        "pretrain",
        help="self-supervised pretraining (swinssl, alice, s2dc, sam, ...)",
        description="Pretrain an encoder with a self-supervised method. Writes RUN/config.yaml, "
        "RUN/metrics.jsonl, RUN/checkpoints/last.pt and TensorBoard events.",
        epilog=EPILOG,
    )
    p.add_argument("--method", required=True, choices=METHODS.names(), help="the SSL method")
    add_scan_data(p)
    p.add_argument("--out", required=True, help="run directory (created)")
    add_config_layers(
        p, "configs/pretrain/<method>_<preset>.yaml: tiny (CPU scale) or base (paper scale); default tiny"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue RUN from checkpoints/last.pt with RUN/config.yaml (+ overrides, "
        "e.g. a larger train.max_steps)",
    )
    p.add_argument("--embeddings", help="alice: a SAM embedding cache made by `anatssl embed`")
    p.add_argument("--sam", help="alice: a SAM run (`anatssl pretrain --method sam`) to embed the data with")
    p.add_argument("--pairing", choices=["sam", "random", "same"], help="alice: shortcut for alice.pairing")
    p.add_argument(
        "--casa-target",
        choices=["teacher_decoder", "teacher_encoder"],
        help="alice: shortcut for alice.casa_target",
    )
    p.set_defaults(func=run)
    return p


def resolve_config(args: argparse.Namespace) -> Any:
    overrides = list(args.overrides)
    if getattr(args, "pairing", None):
        overrides.append(f"alice.pairing={args.pairing}")
    if getattr(args, "casa_target", None):
        overrides.append(f"alice.casa_target={args.casa_target}")
    if args.resume:
        return resume_pretrain_config(args.out, args.method, args.config, overrides)
    return load_pretrain_config(args.method, args.preset, args.config, overrides)


def run(args: argparse.Namespace) -> int:
    from anatssl.runs.pretraining import run_pretraining

    cfg = resolve_config(args)
    run_pretraining(
        cfg, args.data, args.out, resume=args.resume, embeddings=args.embeddings, sam_run=args.sam
    )
    return 0
