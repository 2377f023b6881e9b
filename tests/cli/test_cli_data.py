"""``anatssl data``: the command group's parsing (``check`` options anywhere around PATH and the
``key=value`` overrides), its help, and an action-less call."""

from __future__ import annotations

from pathlib import Path

import pytest

from anatssl.cli.main import build_parser, main


def test_check_options_and_overrides_in_any_order() -> None:
    argv = [
        "data",
        "check",
        "--method",
        "s2dc",
        "ds",
        "data.spacing=[2,2,2]",
        "--quiet",
        "model.in_channels=2",
    ]
    args = build_parser().parse_args(argv)
    assert args.command == "data" and args.data_command == "check"
    assert args.path == "ds" and args.method == "s2dc" and args.quiet
    assert args.overrides == ["data.spacing=[2,2,2]", "model.in_channels=2"]
    args = build_parser().parse_args(["data", "check", "ds"])
    assert (args.path, args.overrides, args.method, args.preset, args.workers) == (
        "ds",
        [],
        "swinssl",
        "tiny",
        0,
    )


def test_check_help_says_exit_status_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["data", "check", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for word in ("--format", "--modality", "--workers", "--out", "key=value", ".anatssl_check.json"):
        assert word in text, word
    assert "exit status: 0 nothing would fail a run" in " ".join(text.split())


def test_data_without_action_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data"]) == 2
    assert "check" in capsys.readouterr().out


def test_negative_workers_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(tmp_path), "--workers", "-1"]) == 2
    assert "--workers must be >= 0, got -1" in capsys.readouterr().err
