"""``anatssl export --format nnunet``: the file nnU-Net v2's ``-pretrained_weights`` reads, checked the way
nnU-Net's ``load_pretrained_weights`` checks it, on a ``ResidualEncoderUNet`` built from the exported plan
fragment as nnU-Net's ``get_network_from_plans`` builds it (nnU-Net itself is not installed: the network
class is dynamic-network-architectures', which nnU-Net uses)."""

from __future__ import annotations

import json
import pydoc
from pathlib import Path
from typing import Any

import pytest
import torch

from anatssl.cli.main import main
from anatssl.downstream.nnunet import fragment_path, merge_fragment, plan_fragment
from anatssl.downstream.weights import export_state_dict, load_run_encoder, read_weights_file
from anatssl.errors import CheckpointError
from anatssl.models.backbones.resenc import NETWORK_CLASS


def network_from_fragment(fragment: dict[str, Any], num_classes: int) -> torch.nn.Module:
    arch = fragment["configurations"]["3d_fullres"]["architecture"]
    kwargs = dict(arch["arch_kwargs"])
    for key in arch["_kw_requires_import"]:
        if kwargs[key] is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    cls: Any = pydoc.locate(arch["network_class_name"])
    in_channels = len(fragment["configurations"]["3d_fullres"]["normalization_schemes"])
    return cls(input_channels=in_channels, num_classes=num_classes, deep_supervision=True, **kwargs)


def nnunet_load_pretrained_weights(network: torch.nn.Module, fname: Path) -> None:
    """What nnU-Net's ``load_pretrained_weights`` does (re-stated, not copied): every key of the network
    except ``.seg_layers.`` must be in the file with the same shape; those are loaded."""
    pretrained = torch.load(fname)["network_weights"]  # torch's default: weights_only
    model_dict = network.state_dict()
    for k, v in model_dict.items():
        if ".seg_layers." not in k:
            assert k in pretrained, f"{k} missing in the export"
            assert pretrained[k].shape == v.shape, k
    model_dict.update({k: v for k, v in pretrained.items() if k in model_dict and ".seg_layers." not in k})
    network.load_state_dict(model_dict, strict=True)


@pytest.fixture(scope="module")
def resenc_run(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nnunet") / "simmim_resenc"
    code = main(
        [
            "pretrain", "--method", "simmim", "--preset", "tiny", "--data", str(synthetic_dataset),
            "--out", str(out), "model.backbone=resenc", "model.variant=tiny", "train.max_steps=1",
            "train.batch_size=1", "train.progress=false", "train.tensorboard=false",
            "simmim.crop_size=[64,64,64]",
        ]
    )  # fmt: skip
    assert code == 0
    return out


def test_export_loads_into_resencunet_from_its_fragment(resenc_run: Path, tmp_path: Path) -> None:
    f = tmp_path / "resenc_tiny.pt"
    assert main(["export", "--run", str(resenc_run), "--format", "nnunet", "--out", str(f)]) == 0
    frag = json.loads(fragment_path(f).read_text())
    conf = frag["configurations"]["3d_fullres"]
    assert conf["architecture"]["network_class_name"] == NETWORK_CLASS
    assert conf["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 16, 32, 64, 80, 80]
    assert conf["patch_size"] == [64, 64, 64] and conf["normalization_schemes"] == ["CTNormalization"]
    assert frag["planner"] == "nnUNetPlannerResEncM" and frag["plans_name"] == "nnUNetResEncUNetMPlans"
    assert frag["anatssl"]["method"] == "simmim" and frag["anatssl"]["step"] == 1

    net = network_from_fragment(frag, num_classes=4)
    nnunet_load_pretrained_weights(net, f)
    exported = torch.load(f, weights_only=True)["network_weights"]
    seg = {k for k in net.state_dict() if ".seg_layers." in k}
    assert seg and set(exported) == set(net.state_dict()) - seg  # nothing else: no recon_head
    enc, _ = load_run_encoder(resenc_run)
    for k, v in net.state_dict().items():
        if k not in seg:
            assert torch.equal(v, enc[k]), k  # the run's weights, key for key
    sd, meta = read_weights_file(f)  # and --init FILE reads it back (finetune)
    assert set(sd) == set(exported) and meta["model"]["variant"] == "tiny"
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 64, 64, 64))
    assert [tuple(o.shape) for o in out][:2] == [(1, 4, 64, 64, 64), (1, 4, 32, 32, 32)]


def test_patch_size_option_and_its_checks(resenc_run: Path, tmp_path: Path) -> None:
    f = tmp_path / "p.pt"
    argv = ["export", "--run", str(resenc_run), "--format", "nnunet", "--out", str(f)]
    assert main([*argv, "--patch-size", "96", "128", "64"]) == 0
    assert json.loads(fragment_path(f).read_text())["configurations"]["3d_fullres"]["patch_size"] == [
        96,
        128,
        64,
    ]
    g = tmp_path / "bad.pt"
    bad = ["export", "--run", str(resenc_run), "--format", "nnunet", "--out", str(g), "--patch-size"]
    assert main([*bad, "48", "64", "64"]) == 2
    assert not g.exists() and not fragment_path(g).exists()
    assert main([*argv, "--encoder-only"]) == 2


def test_nnunet_format_refuses_other_backbones_and_merges_into_plans() -> None:
    with pytest.raises(CheckpointError, match="'conv'.*safetensors"):
        plan_fragment({"backbone": "conv"}, {})
    frag = plan_fragment({"backbone": "resenc"}, {"modality": "mri", "spacing": [1.5, 1.5, 2.0]})
    conf = frag["configurations"]["3d_fullres"]
    assert conf["patch_size"] == [160, 160, 160] and frag["plans_name"] == "nnUNetResEncUNetLPlans"
    assert conf["normalization_schemes"] == ["ZScoreNormalization"] and conf["spacing"] == [1.5, 1.5, 2.0]
    assert conf["architecture"]["arch_kwargs"]["n_blocks_per_stage"] == [1, 3, 4, 6, 6, 6]
    plans = {
        "plans_name": "nnUNetResEncUNetLPlans",
        "configurations": {
            "2d": {"patch_size": [512, 512]},
            "3d_fullres": {"batch_size": 2, "patch_size": [128, 192, 160], "architecture": {"x": 1}},
        },
    }
    merged = merge_fragment(plans, frag)
    assert merged["configurations"]["2d"] == {"patch_size": [512, 512]}
    full = merged["configurations"]["3d_fullres"]
    assert full["batch_size"] == 2 and full["patch_size"] == [160, 160, 160]
    assert full["architecture"]["network_class_name"] == NETWORK_CLASS
    assert plans["configurations"]["3d_fullres"]["architecture"] == {"x": 1}  # input not modified


def test_resenc_state_dict_exports_to_safetensors() -> None:
    """resenc names tensors twice (``conv`` / ``all_modules.0``, ``decoder.encoder``): export copies them,
    so safetensors (which refuses shared memory) writes them."""
    from safetensors.torch import load, save

    from anatssl.config.schema import ModelConfig
    from anatssl.models.backbones import build_backbone

    sd = build_backbone(ModelConfig(backbone="resenc", variant="tiny")).state_dict()
    tensors = export_state_dict(sd)
    back = load(save(tensors))
    assert set(back) == {k for k in sd if not k.startswith("recon_head.")}
    assert all(torch.equal(back[k], sd[k]) for k in back)
