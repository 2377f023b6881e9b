"""``anatssl <command>``: thin entry points; each command lives in ``anatssl/cli/<command>.py``.

A command module defines ``add_parser(subparsers) -> argparse.ArgumentParser`` (which sets
``func=run``) and ``run(args) -> int``. Add a command = one file + one line in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from anatssl import __version__
from anatssl.errors import AnatsslError

COMMANDS = [
    "synth",
    "pretrain",
    "finetune",
    "export",
    "benchmark",
    "views",
    "embed",
    "match",
    "evaluate",
    "quickstart",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anatssl",
        description="Anatomy-aware self-supervised pretraining of 3D medical image encoders.",
    )
    parser.add_argument("--version", action="version", version=f"anatssl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"anatssl.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from anatssl.engine.logger import quiet_library_warnings

    quiet_library_warnings()  # library deprecation notices are not the user's to act on
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AnatsslError as e:
        print(f"anatssl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
