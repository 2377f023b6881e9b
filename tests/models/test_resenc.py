"""``resenc``: nnU-Net's ResidualEncoderUNet as a backbone. Shapes at every stage computed by hand from
the strides (1, 2, 2, 2, 2, 2) and the variant's widths; the same weights give the same decoder and
segmentation output as a ``ResidualEncoderUNet`` built the way nnU-Net builds it from a plan."""

from __future__ import annotations

import pydoc
from typing import Any

import pytest
import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

from anatssl.config.schema import ModelConfig
from anatssl.errors import ConfigError
from anatssl.models.backbones import build_backbone
from anatssl.models.backbones.resenc import NETWORK_CLASS, arch_kwargs


def nnunet_network(arch: dict[str, Any], in_channels: int, num_classes: int) -> torch.nn.Module:
    """A network from a plan's ``architecture`` entry as nnU-Net's ``get_network_from_plans`` does:
    import the class and the ``_kw_requires_import`` names, call with ``deep_supervision``."""
    kwargs = dict(arch["arch_kwargs"])
    for key in arch["_kw_requires_import"]:
        if kwargs[key] is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    cls: Any = pydoc.locate(arch["network_class_name"])
    assert cls is ResidualEncoderUNet
    return cls(input_channels=in_channels, num_classes=num_classes, deep_supervision=True, **kwargs)


def test_tiny_shapes_at_every_stage_by_hand() -> None:
    torch.manual_seed(0)
    net = build_backbone(ModelConfig(backbone="resenc", variant="tiny"))
    x = torch.randn(2, 1, 64, 96, 32)
    feats = net.encode(x)
    # stage widths (8, 16, 32, 64, 80, 80); encode = stages 1..5 at strides 2, 4, 8, 16, 32
    assert [tuple(f.shape) for f in feats] == [
        (2, 16, 32, 48, 16),
        (2, 32, 16, 24, 8),
        (2, 64, 8, 12, 4),
        (2, 80, 4, 6, 2),
        (2, 80, 2, 3, 1),
    ]
    dec = net.decode(x, feats)
    # decoder stage s upsamples to stage 4-s's grid and has that stage's width
    assert [tuple(d.shape) for d in dec] == [
        (2, 80, 4, 6, 2),
        (2, 64, 8, 12, 4),
        (2, 32, 16, 24, 8),
        (2, 16, 32, 48, 16),
        (2, 8, 64, 96, 32),
    ]
    assert net.reconstruct(dec[-1]).shape == x.shape
    assert net.feature_channels == [16, 32, 64, 80, 80] and net.decoder_channels == [80, 64, 32, 16, 8]


def test_default_is_resenc_l_with_nnunets_widths_and_blocks() -> None:
    """ResEnc L (and M: the same network) = nnU-Net's ResEnc planner for 6 isotropic stages."""
    cfg = ModelConfig(backbone="resenc")
    kw = arch_kwargs(cfg)
    assert kw["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert kw["n_blocks_per_stage"] == [1, 3, 4, 6, 6, 6]
    assert kw["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 5
    assert kw["n_conv_per_stage_decoder"] == [1] * 5
    assert arch_kwargs(ModelConfig(backbone="resenc", variant="M")) == kw
    net = build_backbone(cfg)
    assert net.feature_channels == [64, 128, 256, 320, 320]
    assert net.decoder_channels == [320, 256, 128, 64, 32]
    n = sum(p.numel() for p in net.parameters())
    assert n == 102_348_193  # docs/backbones.md; recon_head (33) included, no segmentation layers


def test_same_function_as_nnunets_network_with_the_same_weights() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resenc", variant="tiny")
    ours = build_backbone(cfg)
    arch = {
        "network_class_name": NETWORK_CLASS,
        "arch_kwargs": arch_kwargs(cfg),
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    ref = nnunet_network(arch, 1, 3)
    sd = {k: v for k, v in ours.state_dict().items() if not k.startswith("recon_head.")}
    seg = {k: v for k, v in ref.state_dict().items() if ".seg_layers." in k}
    assert set(ref.state_dict()) == set(sd) | set(seg)
    ref.load_state_dict({**sd, **seg}, strict=True)
    ours.eval()
    ref.eval()
    x = torch.randn(1, 1, 64, 32, 64)
    with torch.no_grad():
        skips = ref.encoder(x)
        feats = ours.encode(x)
        for a, b in zip(feats, skips[1:]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        dec = ours.decode(x, feats)
        outs = ref(x)  # deep supervision: full resolution first, one per decoder stage
        for d, o, layer in zip(reversed(dec), outs, reversed(ref.decoder.seg_layers)):
            torch.testing.assert_close(layer(d), o, rtol=1e-5, atol=1e-5)
        # features that lost the stage-0 attachment: decode recomputes stage 0 from x, same result
        again = ours.decode(x, [f.clone() for f in feats])
        for a, b in zip(again, dec):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_grad_checkpoint_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    a = build_backbone(ModelConfig(backbone="resenc", variant="tiny"))
    b = build_backbone(ModelConfig(backbone="resenc", variant="tiny", grad_checkpoint=True))
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 1, 64, 64, 32)
    for net in (a, b):
        feats = net.encode(x)
        net.reconstruct(net.decode(x, feats)[-1]).square().mean().backward()
    for (k, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-5, atol=1e-7, msg=k)


def test_rejects_one_voxel_bottlenecks_and_unknown_variants() -> None:
    net = build_backbone(ModelConfig(backbone="resenc", variant="tiny"))
    net.check_input((32, 64, 32))
    with pytest.raises(ConfigError, match=r"simmim.crop_size size \(32, 32, 32\).*InstanceNorm"):
        net.check_input((32, 32, 32), where="simmim.crop_size")
    with pytest.raises(ConfigError, match="multiple of 32"):
        net.check_input((64, 48, 64))
    with pytest.raises(ConfigError, match="'XL'.*L, M, tiny"):
        build_backbone(ModelConfig(backbone="resenc", variant="XL"))
