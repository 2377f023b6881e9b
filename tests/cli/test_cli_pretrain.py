"""``anatssl synth`` -> ``anatssl pretrain`` through the real CLI entry point, on real NIfTI files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from anatssl.cli.main import main
from engine_fixtures import FAST_SWINSSL, check_cli_resume, metrics_rows


def test_pretrain_pause_and_resume_through_the_cli(synth_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["pretrain", "--method", "swinssl", "--data", str(synth_data), "--out", str(run), *FAST_SWINSSL]
    assert main([*args, "train.max_steps=4", "train.stop_after=2"]) == 0
    assert [r["step"] for r in metrics_rows(run)] == [1, 2]
    assert (
        main(["pretrain", "--method", "swinssl", "--data", str(synth_data), "--out", str(run), "--resume"])
        == 0
    )
    rows = metrics_rows(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in rows)
    saved = (run / "config.yaml").read_text()
    assert "max_steps: 4" in saved and "backbone: conv" in saved


def test_cli_errors_are_one_clear_line(
    synth_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "pretrain",
            "--method",
            "swinssl",
            "--data",
            str(synth_data),
            "--out",
            str(tmp_path / "r"),
            "train.batch_sz=2",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown config key" in err and "batch_size" in err and "Traceback" not in err

    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(
        [
            "pretrain",
            "--method",
            "swinssl",
            "--data",
            str(empty),
            "--out",
            str(tmp_path / "r2"),
            *FAST_SWINSSL,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "empty" in err and "no scans" in err.lower()

    code = main(
        [
            "pretrain",
            "--method",
            "swinssl",
            "--data",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "r3"),
            *FAST_SWINSSL,
        ]
    )
    assert code == 2 and "nowhere" in capsys.readouterr().err

    code = main(
        [
            "pretrain",
            "--method",
            "swinssl",
            "--data",
            str(synth_data),
            "--out",
            str(tmp_path / "r4"),
            "--resume",
        ]
    )
    assert code == 2 and "config.yaml does not exist" in capsys.readouterr().err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    from anatssl.cli.main import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "usage: anatssl" in out and len(out) > 200, name


def test_benchmark_cli_rejects_bad_seed_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["benchmark", "--suite", "smoke", "--out", str(tmp_path / "b"), "--seeds", "zero"])
    assert code == 2 and "--seeds / --labeled take comma-separated integers" in capsys.readouterr().err
    code = main(["benchmark", "--suite", "smoke", "--out", str(tmp_path / "b"), "--methods", "mae"])
    assert code == 2 and "not in suite 'smoke'" in capsys.readouterr().err
    code = main(["benchmark", "--suite", "smoke", "--out", str(tmp_path / "b"), "--jobs", "0"])
    assert code == 2 and "--jobs must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # refused before anything was written


def test_resenc_backbone_pretrains_and_resumes_exactly(synth_data: Path, tmp_path: Path) -> None:
    """``model.backbone=resenc`` (nnU-Net's ResidualEncoderUNet, tiny variant) through the CLI: 4 steps in
    one go == 2 steps, pause, ``--resume`` to 4: same losses and bit-identical weights (issue 17)."""
    base = ["pretrain", "--method", "simmim", "--preset", "tiny", "--data", str(synth_data)]
    opts = [
        "model.backbone=resenc",
        "model.variant=tiny",
        "simmim.crop_size=[64,64,64]",
        "train.progress=false",
        "train.tensorboard=false",
        "optim.warmup_steps=1",
        "train.batch_size=1",
    ]
    _, wa = check_cli_resume(base, opts, tmp_path, ("loss",))
    assert "backbone: resenc" in (tmp_path / "part" / "config.yaml").read_text()
    assert any(k.startswith("backbone.") for k in wa)
