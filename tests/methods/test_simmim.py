"""simmim: masks, masked L1 by hand, pixel shuffle layout, gradients, config errors, a training step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anatssl.data.volume import Volume
from anatssl.errors import ConfigError
from anatssl.methods import build_method
from anatssl.methods.simmim import PixelShuffleHead, SimMIMViews, masked_l1
from anatssl.runs import load_pretrain_config

CONV = ["model.backbone=conv", "model.feature_size=4", "simmim.crop_size=[64,64,64]"]


def test_masked_l1_hand_computed() -> None:
    pred = torch.zeros(1, 1, 2, 1, 1)
    target = torch.tensor([3.0, 5.0]).view(1, 1, 2, 1, 1)
    mask = torch.tensor([1.0, 0.0]).view(1, 1, 2, 1, 1)
    assert float(masked_l1(pred, target, mask)) == pytest.approx(3.0)  # the unmasked error 5 is ignored
    two = torch.zeros(1, 2, 2, 1, 1)
    t2 = torch.stack([target[0, 0], 2 * target[0, 0]])[None]
    assert float(masked_l1(two, t2, mask)) == pytest.approx((3.0 + 6.0) / 2)


def test_views_mask_blocks_and_ratio() -> None:
    vol = Volume(image=np.random.default_rng(0).random((1, 80, 70, 64), dtype=np.float32), affine=np.eye(4))
    views = SimMIMViews((64, 64, 64), mask_patch=16, ratio_min=0.6, ratio_max=0.75)
    a = views(vol, np.random.default_rng(1))
    b = views(vol, np.random.default_rng(1))
    assert np.array_equal(a["mask"], b["mask"]) and np.array_equal(a["x"], b["x"])  # all randomness from rng
    m = a["mask"][0]
    assert a["x"].shape == (1, 64, 64, 64) and m.shape == (64, 64, 64)
    blocks = m.reshape(4, 16, 4, 16, 4, 16)
    assert np.all(blocks.min(axis=(1, 3, 5)) == blocks.max(axis=(1, 3, 5)))  # constant per 16^3 block
    assert 0.6 * 64 - 1 <= blocks[:, 0, :, 0, :, 0].sum() <= 0.75 * 64 + 1


def test_pixel_shuffle_places_channels_as_voxels() -> None:
    head = PixelShuffleHead(1, 1, stride=2)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.copy_(torch.arange(8.0))
    out = head(torch.zeros(1, 1, 1, 1, 1))
    assert out.shape == (1, 1, 2, 2, 2)
    assert out[0, 0, 1, 0, 0] == 4.0 and out[0, 0, 0, 1, 0] == 2.0 and out[0, 0, 0, 0, 1] == 1.0


@pytest.mark.parametrize("head", ["linear", pytest.param("backbone", marks=pytest.mark.slow)])
def test_training_step_loss_and_gradients(head: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = load_pretrain_config("simmim", "tiny", overrides=[*CONV, f"simmim.head={head}"])
    m = build_method(cfg)
    vol = Volume(image=np.random.default_rng(0).random((1, 64, 64, 64), dtype=np.float32), affine=np.eye(4))
    samples = [m.views(vol, np.random.default_rng(i), None) for i in range(1)]
    batch = {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in samples[0]}
    out = m.training_step(batch, 0)
    assert set(out) == {"loss", "l1_masked", "mask_ratio"} and torch.isfinite(out["loss"])
    assert 0.55 <= float(out["mask_ratio"]) <= 0.8
    out["loss"].backward()
    enc = [p for n, p in m.named_parameters() if n.startswith("backbone.down.")]
    assert enc and all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc)
    if head == "backbone":
        dec = [p for n, p in m.named_parameters() if n.startswith("backbone.up.")]
        assert all(p.grad is not None for p in dec)
    assert m.encoder() is m.backbone


def test_masked_voxels_do_not_leak_into_the_input() -> None:
    torch.manual_seed(0)
    m = build_method(load_pretrain_config("simmim", "tiny", overrides=CONV))
    m.eval()
    x = torch.rand(1, 1, 64, 64, 64)
    mask = torch.zeros(1, 1, 64, 64, 64)
    mask[..., :32, :, :] = 1.0
    x2 = x.clone()
    x2[..., :32, :, :] = torch.rand(1, 1, 32, 64, 64)  # change only masked voxels
    with torch.no_grad():
        r1 = m.reconstruct(x * (1 - mask))
        r2 = m.reconstruct(x2 * (1 - mask))
    assert torch.equal(r1, r2)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="need 0 < min <= max < 1"):
        build_method(load_pretrain_config("simmim", "tiny", overrides=[*CONV, "simmim.mask_ratio_min=0.8"]))
    with pytest.raises(ConfigError, match="simmim.head = 'mlp'; valid values: linear, backbone"):
        build_method(load_pretrain_config("simmim", "tiny", overrides=[*CONV, "simmim.head=mlp"]))
    with pytest.raises(ConfigError, match="multiple of simmim.mask_patch"):
        build_method(load_pretrain_config("simmim", "tiny", overrides=[*CONV, "simmim.mask_patch=24"]))
