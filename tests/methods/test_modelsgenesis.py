"""modelsgenesis: the restoration MSE by hand, a step through the backbone's decoder, config errors, and
``anatssl synth`` -> ``anatssl pretrain --method modelsgenesis`` through the CLI, resumed exactly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from anatssl.cli.main import main
from anatssl.errors import ConfigError
from anatssl.losses.reconstruction import restoration_mse
from anatssl.methods import build_method
from anatssl.methods.modelsgenesis import ModelsGenesis
from anatssl.runs import load_pretrain_config
from engine_fixtures import check_cli_resume, metrics_rows

FAST = [
    "model.backbone=conv",
    "model.feature_size=4",
    "modelsgenesis.crop_size=[32,32,32]",
    "modelsgenesis.shuffle_blocks=200",
    "train.progress=false",
    "train.tensorboard=false",
    "optim.warmup_steps=1",
]
TERMS = ("loss", "mse", "p_local", "p_nonlinear", "p_inpaint", "p_outpaint")


def test_restoration_mse_hand_computed() -> None:
    restored = torch.tensor([0.0, 1.0, 0.5, 0.25]).view(1, 1, 4, 1, 1)
    original = torch.tensor([1.0, 1.0, 0.0, 0.25]).view(1, 1, 4, 1, 1)
    assert float(restored_loss := restoration_mse(restored, original)) == pytest.approx(
        (1 + 0 + 0.25 + 0) / 4
    )
    assert restored_loss.dtype == torch.float32
    two = torch.stack([restored[0], 2 * restored[0]])  # batch of 2: mean over every voxel of both
    assert float(restoration_mse(two, torch.zeros_like(two))) == pytest.approx((1.3125 + 4 * 1.3125) / 8)
    with pytest.raises(ValueError, match="same shape"):
        restoration_mse(restored, original[..., :1, :, :])


def _method(*overrides: str) -> ModelsGenesis:
    torch.manual_seed(0)
    m = build_method(load_pretrain_config("modelsgenesis", "tiny", overrides=[*FAST, *overrides]))
    assert isinstance(m, ModelsGenesis)
    return m


def test_step_restores_through_the_decoder_and_trains_encoder_and_decoder() -> None:
    m = _method()
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 32, 32, 32, generator=g)
    batch = {
        "x": torch.rand(2, 1, 32, 32, 32, generator=g),
        "target": target,
        "applied": torch.tensor([[1.0, 1, 0, 1], [0.0, 1, 1, 0]]),
    }
    out = m.training_step(batch, 0)
    assert set(out) == set(TERMS)
    with torch.no_grad():
        restored = m.restore(batch["x"])
    assert (
        restored.shape == target.shape and 0 < float(restored.min()) and float(restored.max()) < 1
    )  # sigmoid
    assert float(out["mse"]) == pytest.approx(float(((restored - target) ** 2).mean()), rel=1e-6)
    assert [float(out[k]) for k in TERMS[2:]] == [0.5, 1.0, 0.5, 0.5]
    out["loss"].backward()
    for prefix in ("backbone.down.", "backbone.up."):  # encoder and decoder both learn
        params = [p for n, p in m.named_parameters() if n.startswith(prefix)]
        assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params), prefix
    assert m.untrained_parameters() == () and m.encoder() is m.backbone
    raw = _method("modelsgenesis.output_sigmoid=false")
    with torch.no_grad():
        assert torch.equal(torch.sigmoid(raw.restore(batch["x"])), m.restore(batch["x"]).detach())


@pytest.mark.parametrize(
    ("override", "msg"),
    [
        ("modelsgenesis.paint_rate=1.5", "paint_rate = 1.5; must be a probability"),
        ("modelsgenesis.inpaint_rate=-0.1", "inpaint_rate"),
        ("modelsgenesis.shuffle_blocks=-1", "shuffle_blocks"),
        ("modelsgenesis.crop_size=[32,32,8]", "at least 10 voxels"),
        ("modelsgenesis.crop_size=[48,48,48]", "divisible by"),
    ],
)
def test_config_errors(override: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        _method(override)


def test_presets_are_the_public_rates() -> None:
    for preset in ("tiny", "base"):
        hp = load_pretrain_config("modelsgenesis", preset).params
        rates = (hp.flip_rate, hp.local_rate, hp.nonlinear_rate, hp.paint_rate, hp.inpaint_rate)
        assert rates == (0.4, 0.5, 0.9, 0.9, 0.2) and hp.shuffle_blocks == 10_000
        assert tuple(hp.crop_size) == (64, 64, 32) and hp.output_sigmoid


# -- through the CLI on `anatssl synth` data --------------------------------------------------------------


def test_cli_pretrain_runs_and_resumes_exactly(synth_data: Path, tmp_path: Path) -> None:
    """4 steps in one go == 2 steps, pause, ``--resume`` to 4: same losses and bit-identical weights."""
    base = ["pretrain", "--method", "modelsgenesis", "--preset", "tiny", "--data", str(synth_data)]
    a, wa = check_cli_resume(base, [*FAST, "train.batch_size=2"], tmp_path, TERMS)
    assert 0 < a[0]["mse"] < 1  # sigmoid output against [0, 1] intensities
    assert any(k.startswith("backbone.up.") for k in wa)


@pytest.mark.slow
def test_cli_pretrain_tiny_preset_as_shipped(synth_data: Path, tmp_path: Path) -> None:
    """The tiny preset unchanged (Swin fs 12, 64 x 64 x 32 crops, 10,000 shuffled blocks): 3 finite steps."""
    run = tmp_path / "run"
    args = ["pretrain", "--method", "modelsgenesis", "--preset", "tiny", "--data", str(synth_data)]
    quiet = ["train.progress=false", "train.tensorboard=false", "train.max_steps=3"]
    assert main([*args, "--out", str(run), *quiet]) == 0
    rows = metrics_rows(run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r[k]) for r in rows for k in TERMS)
    assert "backbone: swin" in (run / "config.yaml").read_text()
