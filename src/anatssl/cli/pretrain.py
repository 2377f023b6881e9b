"""``anatssl pretrain``: self-supervised pretraining of one method on a folder / manifest of scans.

Exit status: 0 finished (or paused by ``train.stop_after`` / ``train.max_minutes``), 2 an error with
a one-line message, 130 / 143 / 138 stopped by Ctrl-C / SIGTERM / SIGUSR1 after saving ``last.pt``
(128 + the signal number; a requeue script reruns the same command with ``--resume auto``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from anatssl.cli.args import add_config_layers, add_scan_data, command_parser
from anatssl.engine.signals import RunInterrupted
from anatssl.errors import ConfigError
from anatssl.runs import RunDir, load_pretrain_config, resume_pretrain_config

log = logging.getLogger("anatssl")

EPILOG = """\
examples:
  anatssl synth --out data --n 8 --seed 0
  anatssl pretrain --method swinssl --preset tiny --data data --out runs/swinssl train.max_steps=20
  anatssl pretrain --method swinssl --data data --out runs/swinssl --resume train.max_steps=40
  anatssl pretrain --method swinssl --data data --out runs/swinssl --resume auto   # first run and requeues
  torchrun --nproc_per_node 2 -m anatssl.cli.main pretrain --method swinssl --data data --out runs/ddp

key=value overrides address the resolved config (see RUN/config.yaml), e.g. seed=1,
train.batch_size=4, optim.lr=1e-4, model.backbone=conv, swinssl.temperature=0.2.

exit status: 0 done, 2 error, 130 / 143 / 138 stopped by Ctrl-C / SIGTERM / SIGUSR1 after saving
RUN/checkpoints/last.pt (rerun with --resume auto). One process per RUN (RUN/run.lock).
"""


class ResumeAction(argparse.Action):
    """``--resume`` / ``--resume auto``. A ``key=value`` right after ``--resume`` is an override that
    argparse handed to the optional value: it goes back among the overrides at its place in the
    command line (after the ones before ``--resume``, which argparse has already stored)."""

    def __call__(self, parser: Any, ns: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        if isinstance(values, str) and "=" in values:
            before = getattr(ns, "overrides", None) is not None
            ns.resume_override = (values, before)
            values = True
        setattr(ns, self.dest, values)


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
        nargs="?",
        const=True,
        default=False,
        action=ResumeAction,
        metavar="auto",
        help="continue RUN from checkpoints/last.pt with RUN/config.yaml (+ overrides, "
        "e.g. a larger train.max_steps); `--resume auto` resumes if RUN has a checkpoint and starts "
        "the run otherwise (one command for the first job and every requeued one)",
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


def resume_mode(args: argparse.Namespace) -> bool:
    """Whether to resume: ``--resume`` yes, ``--resume auto`` if RUN has ``checkpoints/last.pt``."""
    moved = getattr(args, "resume_override", None)
    if moved is not None:  # see ResumeAction
        value, after = moved
        args.overrides = [*args.overrides, value] if after else [value, *args.overrides]
        args.resume_override = None
    value = args.resume
    if isinstance(value, bool):  # absent, or plain --resume
        return value
    if value != "auto":
        raise ConfigError(f"--resume takes no value or `auto`, got {value!r}")
    if RunDir(args.out).has_checkpoint():
        log.info("--resume auto: %s has a checkpoint; resuming", args.out)
        return True
    log.info("--resume auto: %s has no checkpoint; starting the run", args.out)
    return False


def resolve_config(args: argparse.Namespace, resume: bool | None = None) -> Any:
    if resume is None:
        resume = resume_mode(args)
    overrides = list(args.overrides)
    if getattr(args, "pairing", None):
        overrides.append(f"alice.pairing={args.pairing}")
    if getattr(args, "casa_target", None):
        overrides.append(f"alice.casa_target={args.casa_target}")
    if resume:
        return resume_pretrain_config(args.out, args.method, args.config, overrides)
    return load_pretrain_config(args.method, args.preset, args.config, overrides)


def run(args: argparse.Namespace) -> int:
    from anatssl.engine.logger import setup_console_logging
    from anatssl.runs.pretraining import run_pretraining

    setup_console_logging()
    resume = resume_mode(args)
    cfg = resolve_config(args, resume)
    try:
        run_pretraining(
            cfg,
            args.data,
            args.out,
            resume=resume,
            data_format=args.format,
            embeddings=args.embeddings,
            sam_run=args.sam,
        )
    except RunInterrupted as e:  # last.pt is saved: one line, and a status a requeue script can act on
        if int(os.environ.get("RANK", "0") or 0) == 0:
            print(f"anatssl pretrain: {e}", file=sys.stderr)
        return e.exit_code
    return 0
