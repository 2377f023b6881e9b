"""Argument blocks that several commands share, written once so that their names, defaults and help
read the same on every ``--help`` page: the command parser itself (examples kept as written), the
unlabelled ``--data`` of pretraining-side commands, and the config layers (``--preset`` <- ``--config``
<- ``key=value``) of every command that resolves a config."""

from __future__ import annotations

import argparse
from typing import Any

SCAN_DATA_HELP = "dataset.json, a folder of NIfTI files / DICOM series, or a CSV"


def command_parser(
    sub: Any, name: str, *, help: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    """A sub-command parser whose epilog (examples, notes) keeps its line breaks."""
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return p


def add_scan_data(p: argparse.ArgumentParser, extra: str = "") -> None:
    """``--data``: the scans of a pretraining-side command (no labels needed)."""
    p.add_argument("--data", required=True, help=SCAN_DATA_HELP + extra)


def add_config_layers(
    p: argparse.ArgumentParser, preset_help: str, overrides_help: str = "config overrides"
) -> None:
    """``--preset NAME``, ``--config YAML`` and the trailing ``key=value`` overrides, merged in that
    order by :mod:`anatssl.runs.resolve`."""
    p.add_argument("--preset", default="tiny", help=preset_help)
    p.add_argument("--config", help="a YAML file merged over the preset")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
