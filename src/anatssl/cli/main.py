"""``anatssl <command>``: thin entry points; each command lives in ``anatssl/cli/<command>.py``.

A command module defines ``add_parser(subparsers) -> argparse.ArgumentParser`` (which sets
``func=run``) and ``run(args) -> int``. Add a command = one file + one line in ``COMMANDS``.

Failures the user can fix (an :class:`~anatssl.errors.AnatsslError`, a full disk, a permission, a
file that is not what its option expects, memory) print one line, ``anatssl <command>: error: ...``,
and exit with status 2; ``--debug`` anywhere on the command line (or ``ANATSSL_DEBUG=1``) prints the
traceback as well. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from anatssl import __version__
from anatssl.errors import user_message

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
    "preprocess",
    "data",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anatssl",
        description="Anatomy-aware self-supervised pretraining of 3D medical image encoders.",
    )
    parser.add_argument("--version", action="version", version=f"anatssl {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an error as well as its one-line message (anywhere on the command "
        "line; or set ANATSSL_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"anatssl.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from anatssl.engine.logger import quiet_library_warnings

    quiet_library_warnings()  # library deprecation notices are not the user's to act on
    words = list(sys.argv[1:] if argv is None else argv)
    cut = words.index("--") if "--" in words else len(words)
    debug = "--debug" in words[:cut] or os.environ.get("ANATSSL_DEBUG", "") not in ("", "0")
    words = [w for i, w in enumerate(words) if not (w == "--debug" and i < cut)]
    parser = build_parser()
    args = parser.parse_args(words)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Exception as e:
        message = user_message(e, fallback_path=getattr(args, "out", None))
        if message is None:
            raise  # a bug: its traceback is what a report needs
        if debug:
            traceback.print_exc()
        print(f"anatssl {args.command}: error: {message}", file=sys.stderr)
        return int(getattr(e, "exit_code", 2))  # 2, or what the error says (e.g. 128 + a signal)


if __name__ == "__main__":
    sys.exit(main())
