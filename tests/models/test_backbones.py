"""Every registered backbone honours the contract of ``anatssl.models.backbones.base``; ``swin`` is
weight-compatible with MONAI's ``SwinUNETR`` (strict key match both for the whole network minus its
``out`` layer and for the encoder alone)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SwinUNETR

from anatssl.config.schema import ModelConfig
from anatssl.errors import ConfigError
from anatssl.models.backbones import BACKBONES, build_backbone, tokens

NAMES = BACKBONES.names()
SMALL_VARIANT = {"resenc": "tiny"}
"""Backbones whose widths come from a named variant (``model.variant``), not from ``feature_size``."""


def small(name: str, **kw: object) -> ModelConfig:
    return ModelConfig(backbone=name, feature_size=12, variant=SMALL_VARIANT.get(name, ""), **kw)  # type: ignore[arg-type]


def test_registry_has_the_documented_backbones() -> None:
    assert {"swin", "conv", "resenc"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_channels_and_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    fs = 12
    net = build_backbone(small(name))
    if name not in SMALL_VARIANT:  # widths from feature_size (resenc's: tests/models/test_resenc.py)
        assert net.feature_channels == [fs, 2 * fs, 4 * fs, 8 * fs, 16 * fs]
        assert net.decoder_channels == [8 * fs, 4 * fs, 2 * fs, fs, fs]
    assert len(net.feature_channels) == len(net.decoder_channels) == 5
    assert net.feature_strides == [2, 4, 8, 16, 32]
    assert net.decoder_strides == [16, 8, 4, 2, 1]
    assert net.input_multiple == 32
    shape = (32, 64, 32)
    x = torch.randn(2, 1, *shape)
    feats = net.encode(x)
    assert len(feats) == 5
    for f, c, s in zip(feats, net.feature_channels, net.feature_strides):
        assert f.shape == (2, c, *(n // s for n in shape))
    dec = net.decode(x, feats)
    assert len(dec) == 5
    for f, c, s in zip(dec, net.decoder_channels, net.decoder_strides):
        assert f.shape == (2, c, *(n // s for n in shape))
    rec = net.reconstruct(dec[-1])
    assert rec.shape == x.shape
    tok = tokens(feats[2])
    assert tok.shape == (2, feats[2].shape[2:].numel(), net.feature_channels[2])
    assert torch.equal(tok[:, 1], feats[2][:, :, 0, 0, 1])  # x-major flattening: last axis fastest
    loss = rec.square().mean() + sum(f.square().mean() for f in feats) + sum(d.square().mean() for d in dec)
    loss.backward()
    missing = [k for k, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no gradient: {missing}"
    zero = [k for k, p in net.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    assert not zero, f"all-zero gradient: {zero}"


@pytest.mark.parametrize("name", NAMES)
def test_check_input_rejects_sizes_off_the_stride(name: str) -> None:
    net = build_backbone(small(name))
    net.check_input((64, 96, 32))
    with pytest.raises(ConfigError, match=r"\(64, 90, 32\).*multiple of 32"):
        net.check_input((64, 90, 32), where="data.crop_size")
    with pytest.raises(ConfigError, match="data.crop_size"):
        net.check_input((48, 64, 64), where="data.crop_size")


def test_unknown_backbone_lists_the_registered_names() -> None:
    with pytest.raises(ConfigError, match="conv.*resenc.*swin"):
        build_backbone(ModelConfig(backbone="vit_huge"))


def test_swin_rejects_bad_config() -> None:
    with pytest.raises(ConfigError, match="multiple of 12"):
        build_backbone(ModelConfig(backbone="swin", feature_size=16))
    with pytest.raises(ConfigError, match="4 entries"):
        build_backbone(ModelConfig(backbone="swin", feature_size=12, depths=(2, 2, 2)))


@pytest.mark.parametrize("use_v2", [False, True], ids=["v1", "v2"])
def test_swin_state_dict_loads_into_monai_swinunetr_strict(use_v2: bool) -> None:
    """Our whole ``swin`` backbone is a SwinUNETR minus ``out`` (plus our ``recon_head``), key for key,
    and the same weights give the same decoder output through MONAI's network."""
    torch.manual_seed(0)
    ours = build_backbone(ModelConfig(backbone="swin", feature_size=12, use_v2=use_v2))
    monai_net = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, use_v2=use_v2)
    sd = {k: v for k, v in ours.state_dict().items() if not k.startswith("recon_head.")}
    target = {k: v for k, v in monai_net.state_dict().items() if not k.startswith("out.")}
    assert set(sd) == set(target)
    missing, unexpected = monai_net.load_state_dict(sd, strict=False)
    assert unexpected == [] and sorted(missing) == ["out.conv.conv.bias", "out.conv.conv.weight"]
    monai_net.swinViT.load_state_dict(ours.swinViT.state_dict(), strict=True)
    # and back: MONAI's encoder weights into ours, strict
    ours.swinViT.load_state_dict(monai_net.swinViT.state_dict(), strict=True)
    ours.eval()
    monai_net.eval()
    x = torch.randn(1, 1, 32, 64, 32)
    with torch.no_grad():
        feats_monai = monai_net.swinViT(x, True)
        feats = ours.encode(x)
        for a, b in zip(feats, feats_monai):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        dec = ours.decode(x, feats)[-1]
        ref = monai_net.decoder1(
            monai_net.decoder2(
                monai_net.decoder3(
                    monai_net.decoder4(
                        monai_net.decoder5(monai_net.encoder10(feats_monai[4]), feats_monai[3]),
                        monai_net.encoder4(feats_monai[2]),
                    ),
                    monai_net.encoder3(feats_monai[1]),
                ),
                monai_net.encoder2(feats_monai[0]),
            ),
            monai_net.encoder1(x),
        )
        torch.testing.assert_close(dec, ref, atol=1e-4, rtol=1e-4)


def test_swin_grad_checkpoint_switch() -> None:
    net = build_backbone(ModelConfig(backbone="swin", feature_size=12, grad_checkpoint=True))
    blocks = [b for layer in net.swinViT.stages() for b in layer.blocks]  # type: ignore[operator,union-attr]
    assert blocks and all(b.use_checkpoint for b in blocks)
