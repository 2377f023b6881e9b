"""Weight import/export: run -> encoder, MONAI strict round trip, Tang-style key mapping, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from downstream_fixtures import fabricate_run
from monai.networks.nets import SwinUNETR

from anatssl.config.schema import ModelConfig
from anatssl.downstream.segmentation import SegmentationNet
from anatssl.downstream.weights import (
    export_run,
    load_backbone_weights,
    load_run_encoder,
    read_weights_file,
    resolve_init,
    swinvit_state_dict,
)
from anatssl.errors import CheckpointError
from anatssl.models.backbones import build_backbone

SWIN12 = ("model.backbone=swin", "model.feature_size=12")


def _seg(fs: int = 12, backbone: str = "swin") -> SegmentationNet:
    torch.manual_seed(1)
    return SegmentationNet(build_backbone(ModelConfig(backbone=backbone, feature_size=fs)), num_classes=3)


def test_run_encoder_has_plain_backbone_keys(tmp_path: Path) -> None:
    run = fabricate_run(tmp_path / "run", overrides=SWIN12)
    sd, meta = load_run_encoder(run)
    assert meta["method"] == "swinssl" and meta["step"] == 3 and meta["model"]["feature_size"] == 12
    own = build_backbone(ModelConfig(backbone="swin", feature_size=12)).state_dict()
    assert set(sd) == set(own)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    key = "swinViT.patch_embed.proj.weight"
    assert any(k.endswith(key) and k != key for k in ckpt)  # prefixed inside the method
    assert torch.equal(sd[key], next(v for k, v in ckpt.items() if k.endswith("." + key)))


@pytest.mark.parametrize("fmt", ["monai-swinunetr", "safetensors"])
def test_export_loads_into_monai_swinvit_strict(tmp_path: Path, fmt: str) -> None:
    torch.set_num_threads(1)
    run = fabricate_run(tmp_path / "run", overrides=SWIN12)
    path, n = export_run(run, fmt, tmp_path / f"enc.{'pt' if fmt != 'safetensors' else 'safetensors'}")
    sd, meta = read_weights_file(path)
    assert n == len(sd) and meta["method"] == "swinssl"
    assert not any(k.startswith("recon_head.") for k in sd)
    net = SwinUNETR(in_channels=1, out_channels=2, feature_size=12)
    net.swinViT.load_state_dict(swinvit_state_dict(sd), strict=True)
    result = net.load_state_dict(sd, strict=False)
    assert sorted(result.missing_keys) == ["out.conv.conv.bias", "out.conv.conv.weight"]
    assert not result.unexpected_keys
    ours, _ = load_run_encoder(run)
    bb = build_backbone(ModelConfig(backbone="swin", feature_size=12))
    bb.load_state_dict(ours)
    bb.eval()
    net.eval()
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mine, theirs = bb.encode(x), net.swinViT(x, normalize=True)
    assert len(mine) == len(theirs) == 5
    for a, b in zip(mine, theirs):  # same weights; the fast attention may differ from MONAI's in rounding
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    for k, v in net.swinViT.state_dict().items():  # the round trip itself is exact
        assert torch.equal(v, ours["swinViT." + k]), k


def test_export_encoder_only_and_conv_refused_for_monai(tmp_path: Path) -> None:
    run = fabricate_run(tmp_path / "run", overrides=SWIN12)
    path, _ = export_run(run, "monai-swinunetr", tmp_path / "e.pt", encoder_only=True)
    sd, _ = read_weights_file(path)
    assert sd and all(k.startswith("swinViT.") for k in sd)
    crun = fabricate_run(tmp_path / "crun", overrides=("model.backbone=conv", "model.feature_size=4"))
    with pytest.raises(
        CheckpointError, match="no MONAI SwinUNETR counterpart; export it with --format safetensors"
    ):
        export_run(crun, "monai-swinunetr", tmp_path / "c.pt")


def test_tang_style_module_prefix_maps_onto_swinvit(tmp_path: Path) -> None:
    src = _seg()
    tang = {  # Tang et al.'s names: DDP prefix, no swinViT., MLP as fc1 / fc2
        "module."
        + k[len("swinViT.") :]
        .replace(".mlp.linear1.", ".mlp.fc1.")
        .replace(".mlp.linear2.", ".mlp.fc2."): v.clone()
        for k, v in src.state_dict().items()
        if k.startswith("swinViT.")
    }
    assert any(".mlp.fc1." in k for k in tang)
    tang["module.rotation_head.weight"] = torch.zeros(4, 3)  # SSL heads: unexpected, ignored
    torch.save({"state_dict": tang, "epoch": 10}, tmp_path / "model_swinvit.pt")
    init = resolve_init(str(tmp_path / "model_swinvit.pt"))
    torch.manual_seed(7)
    dst = SegmentationNet(build_backbone(ModelConfig(backbone="swin", feature_size=12)), num_classes=3)
    rep = load_backbone_weights(dst, init.state_dict or {}, "model_swinvit.pt")
    n_vit = sum(k.startswith("swinViT.") for k in src.state_dict())
    assert len(rep.loaded) == n_vit and rep.renamed == n_vit
    assert rep.unexpected == ["module.rotation_head.weight"]
    assert rep.missing and all(k.startswith(("encoder", "decoder")) for k in rep.missing)
    for k in ("swinViT.layers1.0.blocks.0.attn.qkv.weight", "swinViT.layers2.0.blocks.1.mlp.linear1.weight"):
        assert torch.equal(dst.state_dict()[k], src.state_dict()[k])


def test_encoder_prefix_naming(tmp_path: Path) -> None:
    src = _seg()
    named = {
        "encoder." + k[len("swinViT.") :]: v for k, v in src.state_dict().items() if k.startswith("swinViT.")
    }
    rep = load_backbone_weights(_seg(), named, "enc.pt")
    assert rep.renamed == len(named) and not rep.unexpected


def test_other_size_lists_mismatched_keys() -> None:
    big = _seg(fs=24).state_dict()
    with pytest.raises(
        CheckpointError, match=r"another model size: \d+ tensors differ in shape.*swinViT\.patch_embed"
    ):
        load_backbone_weights(_seg(fs=12), big, "big.pt")


def test_other_backbone_refused() -> None:
    conv = _seg(fs=4, backbone="conv").state_dict()
    with pytest.raises(
        CheckpointError, match=r"no tensor that fits this 'swin' backbone \(0 of \d+ keys matched\)"
    ):
        load_backbone_weights(_seg(), conv, "conv.pt")


def test_decoder_only_file_is_refused_not_silently_empty() -> None:
    dec = {k: v for k, v in _seg().state_dict().items() if k.startswith("decoder")}
    with pytest.raises(CheckpointError, match=r"lacks \d+ of the encoder's tensors.*swinViT"):
        load_backbone_weights(_seg(), dec, "dec.pt")


def test_pickled_object_refused(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"state_dict": object()}))
    with pytest.raises(CheckpointError, match="never unpickles") as e:
        read_weights_file(tmp_path / "evil.pt")
    assert "evil.pt" in str(e.value) and "weights_only=False" not in str(e.value)


def test_missing_run(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"checkpoints/last.pt is missing"):
        resolve_init(str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="no such run directory or weights file"):
        resolve_init(str(tmp_path / "nope"))
