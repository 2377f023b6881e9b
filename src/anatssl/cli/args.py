"""Argument blocks that several commands share, written once so that their names, defaults and help
read the same on every ``--help`` page: the command parser itself (examples kept as written), the
unlabelled ``--data`` of pretraining-side commands, the labelled ``--data`` of fine-tuning-side ones,
and the config layers (``--preset`` <- ``--config`` <- ``key=value``) of every command that resolves a
config."""

from __future__ import annotations

import argparse
from typing import Any

SCAN_DATA_HELP = (
    "dataset.json, a folder of NIfTI files / DICOM series, a CSV, or a downloaded layout as it comes "
    "(nnU-Net v2 raw, MSD, BTCV, TotalSegmentator, AbdomenAtlas; docs/layouts.md)"
)
LABELLED_DATA_HELP = (
    "a labelled dataset: an MSD dataset.json (or its folder), or a downloaded layout as it comes "
    "(nnU-Net v2 raw, BTCV, TotalSegmentator, AbdomenAtlas; docs/layouts.md)"
)
FORMATS = ("nnunet", "msd", "btcv", "totalsegmentator", "abdomenatlas", "folder", "dicom", "csv", "file")
"""``--format`` choices: :data:`anatssl.data.layouts.KNOWN_FORMATS` (a test keeps them equal; not
imported here so that ``--help`` stays fast)."""


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
    """``--data``: the scans of a pretraining-side command (no labels needed), and ``--format``."""
    p.add_argument("--data", required=True, help=SCAN_DATA_HELP + extra)
    add_format(p)


def add_labelled_data(p: argparse.ArgumentParser) -> None:
    """``--data``: the labelled dataset of a fine-tuning-side command, and ``--format``."""
    p.add_argument("--data", required=True, help=LABELLED_DATA_HELP)
    add_format(p)


def add_format(p: argparse.ArgumentParser) -> None:
    """``--format``: the layout of ``--data`` when detection should not decide."""
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="the layout of --data (default: detected from the files; docs/layouts.md)",
    )


def scan_items(args: argparse.Namespace) -> Any:
    """``args.data`` as given when ``--format`` is absent (detected later), else its scans read as
    that layout (a list of :class:`~anatssl.data.manifest.DataItem`)."""
    if getattr(args, "format", None) is None:
        return args.data
    from anatssl.data.layouts import discover

    return discover(args.data, args.format)


def add_config_layers(
    p: argparse.ArgumentParser, preset_help: str, overrides_help: str = "config overrides"
) -> None:
    """``--preset NAME``, ``--config YAML`` and the trailing ``key=value`` overrides, merged in that
    order by :mod:`anatssl.runs.resolve`."""
    p.add_argument("--preset", default="tiny", help=preset_help)
    p.add_argument("--config", help="a YAML file merged over the preset")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)


def add_match_prior(p: argparse.ArgumentParser) -> None:
    """``--prior`` / ``--window-mm``: SAM matching with the affine consistency prior
    (:func:`anatssl.anatomy.matching.fit_affine_prior`)."""
    p.add_argument(
        "--prior",
        choices=["none", "affine"],
        default="none",
        help="affine: fit an affine A -> B to the model's own matches of 400 body cells of A (RANSAC, no "
        "landmark used) and take the argmax only within --window-mm of its prediction; none (default): "
        "the argmax over all of B",
    )
    p.add_argument(
        "--window-mm",
        type=float,
        default=20.0,
        metavar="MM",
        help="--prior affine: radius of the search window around the affine's prediction (default 20)",
    )


def match_prior(args: argparse.Namespace) -> str | None:
    """``--prior`` as the matching functions take it (``None`` or ``"affine"``); a bad window is a
    :class:`~anatssl.errors.ConfigError`."""
    from anatssl.errors import ConfigError

    if args.window_mm <= 0:
        raise ConfigError(f"--window-mm must be > 0, got {args.window_mm}")
    return None if args.prior == "none" else str(args.prior)
