"""voco: a step's terms against the loss functions, the stop-gradient on base crops in L_pred, config
errors, presets, and ``anatssl synth`` -> ``anatssl pretrain --method voco`` through the CLI, resumed
exactly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from anatssl.cli.main import main
from anatssl.data.volume import Volume
from anatssl.engine.data import collate
from anatssl.errors import ConfigError
from anatssl.losses.volume_contrast import (
    base_regularization_loss,
    position_prediction_loss,
    volume_contrast_logits,
)
from anatssl.methods import build_method
from anatssl.methods.voco import VoCo
from anatssl.runs import load_pretrain_config
from engine_fixtures import check_cli_resume, metrics_rows

FAST = [
    "model.backbone=conv",
    "model.feature_size=4",
    "voco.grid=2",
    "voco.crop_size=[32,32,32]",
    "voco.proj_hidden=32",
    "voco.proj_dim=16",
    "train.progress=false",
    "train.tensorboard=false",
    "optim.warmup_steps=1",
]
TERMS = ("loss", "pred", "reg", "overlap_error")


def _method(*overrides: str) -> VoCo:
    torch.manual_seed(0)
    m = build_method(load_pretrain_config("voco", "tiny", overrides=[*FAST, *overrides]))
    assert isinstance(m, VoCo)
    return m


def _batch(m: VoCo) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    vols = [Volume(rng.random((1, 70, 70, 36), dtype=np.float32), np.eye(4), f"v{i}") for i in range(2)]
    return collate([m.views(v, np.random.default_rng(i), None) for i, v in enumerate(vols)])  # type: ignore[return-value]


def test_step_terms_are_the_loss_functions_of_the_projections() -> None:
    m = _method("voco.lambda_reg=0.5")
    batch = _batch(m)
    out = m.training_step(batch, 0)
    assert set(out) == set(TERMS)
    with torch.no_grad():
        z = m.project(torch.cat([batch["bases"].flatten(0, 1), batch["crops"].flatten(0, 1)]))
    q, p = z[:8].reshape(2, 4, -1), z[8:].reshape(2, 2, -1)
    pred = position_prediction_loss(volume_contrast_logits(p, q), batch["targets"])
    reg = base_regularization_loss(q)
    torch.testing.assert_close(out["pred"], pred)
    torch.testing.assert_close(out["reg"], reg)
    torch.testing.assert_close(out["loss"].detach(), pred + 0.5 * reg)
    assert all(math.isfinite(float(out[k].detach())) for k in TERMS)


def test_base_crops_get_no_gradient_from_the_prediction_term() -> None:
    """L_pred treats the base crops as fixed centres: with lambda_reg = 0 their projections get exactly
    zero gradient while the random crops' do not; L_reg gives the base crops theirs."""
    for lam, base_grad in (("0", False), ("1", True)):
        m = _method(f"voco.lambda_reg={lam}")
        batch = _batch(m)
        z = torch.randn(12, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
        m.project = lambda x, z=z: z  # type: ignore[method-assign]  # 8 base rows, then 4 crop rows
        m.training_step(batch, 0)["loss"].backward()
        assert z.grad is not None and z.grad[8:].abs().sum() > 0
        assert (z.grad[:8].abs().sum() > 0) == base_grad, lam


def test_regularizer_form_switch() -> None:
    batch = _batch(_method())
    paper = _method().training_step(batch, 0)["reg"]
    code = _method("voco.reg_form=code").training_step(batch, 0)["reg"]
    assert float(paper) != pytest.approx(float(code))


@pytest.mark.parametrize(
    ("override", "msg"),
    [
        ("voco.grid=1", "need >= 2"),
        ("voco.n_random=0", "n_random"),
        ("voco.lambda_reg=-1", "lambda_reg"),
        ("voco.crop_size=[48,48,48]", "divisible by"),
        ("voco.reg_form=cosine", "reg_form"),
    ],
)
def test_config_errors(override: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        _method(override)


def test_presets() -> None:
    base = load_pretrain_config("voco", "base")
    hp = base.params
    assert (hp.grid, tuple(hp.crop_size), hp.n_random, hp.proj_dim, hp.lambda_reg) == (
        4,
        (64, 64, 64),
        2,
        2048,
        1.0,
    )
    assert base.data.hu_window == (-175.0, 250.0) and base.optim.lr == 1e-4
    tiny = load_pretrain_config("voco", "tiny").params
    assert (tiny.grid, tuple(tiny.crop_size)) == (3, (32, 32, 32))


# -- through the CLI on `anatssl synth` data --------------------------------------------------------------


def test_cli_pretrain_runs_and_resumes_exactly(synth_data: Path, tmp_path: Path) -> None:
    """4 steps in one go == 2 steps, pause, ``--resume`` to 4: same losses and bit-identical weights."""
    base = ["pretrain", "--method", "voco", "--preset", "tiny", "--data", str(synth_data)]
    _, wa = check_cli_resume(base, [*FAST, "train.batch_size=2"], tmp_path, TERMS)
    assert any(k.startswith("head.") for k in wa)


@pytest.mark.slow
def test_cli_pretrain_tiny_preset_as_shipped(synth_data: Path, tmp_path: Path) -> None:
    """The tiny preset unchanged (Swin fs 12, 3 x 3 base crops of 32^3 + 2 random crops): 2 finite steps."""
    run = tmp_path / "run"
    args = ["pretrain", "--method", "voco", "--preset", "tiny", "--data", str(synth_data), "--out", str(run)]
    assert main([*args, "train.progress=false", "train.tensorboard=false", "train.max_steps=2"]) == 0
    rows = metrics_rows(run)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r[k]) for r in rows for k in TERMS)
    assert "backbone: swin" in (run / "config.yaml").read_text()
