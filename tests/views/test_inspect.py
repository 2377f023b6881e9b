"""View inspectors and ``anatssl views``: PNGs are written from real NIfTI files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from anatssl.cli import views as views_cli
from anatssl.data.volume import Volume
from anatssl.errors import ConfigError
from anatssl.methods import build_method
from anatssl.runs import load_pretrain_config
from anatssl.views.inspect import INSPECTORS

FAST = ["model.backbone=conv", "model.feature_size=4", "s2dc.grid=2", "s2dc.crop=32", "s2dc.token_stage=2"]


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_s2dc_inspector_writes_a_png(tmp_path: Path) -> None:
    method = build_method(load_pretrain_config("s2dc", "tiny", overrides=FAST))
    vol = Volume(np.random.default_rng(0).random((1, 70, 70, 40), dtype=np.float32), np.eye(4), "v.nii.gz")
    out = INSPECTORS.get("s2dc")(method, vol, np.random.default_rng(0), None, tmp_path / "a" / "s2dc.png")  # type: ignore[arg-type]
    assert _is_png(out)
    assert "alice" in INSPECTORS and "s2dc" in INSPECTORS


def _write_scans(folder: Path, n: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        hu = (rng.random((72, 72, 40)) * 1600 - 900).astype(np.int16)
        nib.save(nib.Nifti1Image(hu, np.diag([1.5, 1.5, 2.0, 1.0])), str(folder / f"case_{i}.nii.gz"))


def _parse(argv: list[str]):  # type: ignore[no-untyped-def]
    import argparse

    parser = argparse.ArgumentParser()
    views_cli.add_parser(parser.add_subparsers())
    return parser.parse_args(argv)


@pytest.mark.slow
def test_views_command_on_nifti_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_scans(tmp_path / "data", 2)
    data, out = str(tmp_path / "data"), str(tmp_path / "v")
    args = _parse(["views", "--method", "s2dc", "--data", data, "--out", out, "--n", "3", *FAST])
    assert args.func(args) == 0
    pngs = sorted((tmp_path / "v").glob("s2dc_*.png"))
    assert [p.name for p in pngs] == ["s2dc_000.png", "s2dc_001.png"]  # --n is capped at the dataset size
    assert all(_is_png(p) for p in pngs)
    assert "s2dc_001.png" in capsys.readouterr().out


def test_views_command_rejects_bad_n(tmp_path: Path) -> None:
    out = str(tmp_path / "v")
    args = _parse(["views", "--method", "s2dc", "--data", str(tmp_path), "--out", out, "--n", "0"])
    with pytest.raises(ConfigError, match="--n"):
        args.func(args)
