"""``resenc``: nnU-Net's residual encoder U-Net (Isensee et al. 2024, *nnU-Net Revisited*, arXiv:2404.09556).

Built from ``dynamic-network-architectures`` (the package nnU-Net v2 builds its networks with): our
``encoder`` is its ``ResidualEncoder`` and our ``decoder`` its ``UNetDecoder`` without the segmentation
layers, so **our state dict is a** ``ResidualEncoderUNet`` **state dict minus** ``decoder.seg_layers.*``
(plus ``recon_head.*``, the SSL reconstruction conv). nnU-Net's ``load_pretrained_weights`` skips exactly
the ``.seg_layers.`` keys, so an export loads into an nnU-Net ResEnc plan with the same ``arch_kwargs``
(:func:`arch_kwargs` writes them; ``anatssl export --format nnunet``).

Variants (``model.variant``) are table entries (:data:`RESENC_VARIANTS`). nnU-Net's ResEnc M and L
presets build the *same* network for an isotropic 3D plan with 5 poolings (features 32..320, blocks
(1, 3, 4, 6, 6, 6)): the presets differ in the GPU-memory target, i.e. the patch and batch size the
planner picks, so here they differ only in the plan fragment's patch size and plans name. ``tiny`` is
ours, for CPU runs and tests (not an nnU-Net preset).

Contract mapping (6 stages, strides 1, 2, 4, 8, 16, 32): :meth:`encode` returns stages 1..5 (strides
2..32); stage 0 (full resolution, the stem + first residual stage) is the full-resolution skip that
:meth:`decode` needs. ``encode`` attaches it to its first output (``feats[0]``) so ``decode(x, feats)``
reuses it; given features that did not come from ``encode`` it recomputes stage 0 from ``x`` (the same
function). :meth:`decode` returns nnU-Net's 5 decoder stage outputs (strides 16, 8, 4, 2, 1).

InstanceNorm (nnU-Net's norm) needs more than one voxel per channel, so the deepest (stride-32) map of
every input must have at least 2 voxels: :meth:`check_input` asks for multiples of 32 whose product
over 32^3 is at least 2 (e.g. 32 x 64 x 32; 64^3 and above always).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn
from torch.utils.checkpoint import checkpoint

from anatssl.config.schema import ModelConfig
from anatssl.errors import ConfigError
from anatssl.models.backbones.base import Backbone, register_backbone

NETWORK_CLASS = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
STRIDES = (1, 2, 2, 2, 2, 2)
_STAGE0_ATTR = "_anatssl_resenc_stage0"


@dataclass(frozen=True)
class ResEncVariant:
    features_per_stage: tuple[int, ...]
    n_blocks_per_stage: tuple[int, ...]
    planner: str
    """nnU-Net planner whose plans the fragment is merged into (``-pl``)."""
    plans_name: str
    """nnU-Net plans identifier that planner writes (``-p``)."""
    patch_size: tuple[int, int, int]
    """Default patch size of the plan fragment: one that yields this 6-stage topology at isotropic
    spacing (each axis a multiple of 32 in [128, 224] gives 5 poolings in nnU-Net's planner; 64 for
    tiny). nnU-Net's own planner picks the patch size from the dataset; this is not its value."""


RESENC_VARIANTS: dict[str, ResEncVariant] = {
    # nnU-Net's ResEnc presets: UNet_base_num_features 32, max 320, blocks (1, 3, 4, 6, 6, 6, ...)
    "L": ResEncVariant(
        (32, 64, 128, 256, 320, 320),
        (1, 3, 4, 6, 6, 6),
        "nnUNetPlannerResEncL",
        "nnUNetResEncUNetLPlans",
        (160, 160, 160),
    ),
    "M": ResEncVariant(
        (32, 64, 128, 256, 320, 320),
        (1, 3, 4, 6, 6, 6),
        "nnUNetPlannerResEncM",
        "nnUNetResEncUNetMPlans",
        (128, 128, 128),
    ),
    # ours: a quarter of the widths (max 10x the base, as 320 = 10 x 32), one block per stage
    "tiny": ResEncVariant(
        (8, 16, 32, 64, 80, 80),
        (1, 1, 1, 1, 1, 1),
        "nnUNetPlannerResEncM",
        "nnUNetResEncUNetMPlans",
        (64, 64, 64),
    ),
}
DEFAULT_VARIANT = "L"


def variant_name(cfg: ModelConfig) -> str:
    """``model.variant`` for resenc (``""`` = the default, ``L``); ConfigError for an unknown one."""
    name = getattr(cfg, "variant", "") or DEFAULT_VARIANT
    if name not in RESENC_VARIANTS:
        raise ConfigError(
            f"model.variant {name!r} is not a resenc variant; choose one of {', '.join(RESENC_VARIANTS)}"
        )
    return name


def arch_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """nnU-Net's ``architecture.arch_kwargs`` for this backbone (JSON types; class names as strings,
    as nnU-Net's ResEnc planner writes them). The backbone is built from exactly these."""
    v = RESENC_VARIANTS[variant_name(cfg)]
    n = len(v.features_per_stage)
    return {
        "n_stages": n,
        "features_per_stage": list(v.features_per_stage),
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * n,
        "strides": [[s, s, s] for s in STRIDES],
        "n_blocks_per_stage": list(v.n_blocks_per_stage),
        "n_conv_per_stage_decoder": [1] * (n - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


class ResEncBackbone(Backbone):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.variant = variant_name(cfg)
        kw = arch_kwargs(cfg)
        feats = kw["features_per_stage"]
        self.encoder = ResidualEncoder(
            cfg.in_channels,
            kw["n_stages"],
            feats,
            nn.Conv3d,
            kw["kernel_sizes"],
            kw["strides"],
            kw["n_blocks_per_stage"],
            conv_bias=kw["conv_bias"],
            norm_op=nn.InstanceNorm3d,
            norm_op_kwargs=kw["norm_op_kwargs"],
            nonlin=nn.LeakyReLU,
            nonlin_kwargs=kw["nonlin_kwargs"],
            return_skips=True,
        )
        self.decoder = UNetDecoder(self.encoder, 1, kw["n_conv_per_stage_decoder"], deep_supervision=False)
        self.decoder.seg_layers = nn.ModuleList()  # the segmentation heads are the downstream task's
        self.recon_head = nn.Conv3d(feats[0], cfg.in_channels, kernel_size=1)
        # nnU-Net's He init (a=0.01, zero biases); not its zero-init of each block's last norm, which
        # would leave conv2 of every block without gradient on the first step
        self.apply(InitWeights_He(1e-2))
        self.grad_checkpoint = cfg.grad_checkpoint
        self.feature_channels = list(feats[1:])
        self.feature_strides = [2, 4, 8, 16, 32]
        self.decoder_channels = list(reversed(feats[:-1]))
        self.decoder_strides = [16, 8, 4, 2, 1]
        self.input_multiple = 32
        self.decoder_prefixes = ("decoder.", "recon_head.")

    def _run(self, module: nn.Module, h: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpoint and torch.is_grad_enabled():
            return checkpoint(module, h, use_reentrant=False)
        return module(h)

    def _stage0(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.encoder.stages[0], self._run(self.encoder.stem, x))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """-> encoder stages 1..5 [(B, f1, X/2, ...), ..., (B, f5, X/32, ...)]."""
        h = self._stage0(x)
        s0 = h
        out = []
        for stage in self.encoder.stages[1:]:
            h = self._run(stage, h)
            out.append(h)
        setattr(out[0], _STAGE0_ATTR, s0)
        return out

    def decode(self, x: torch.Tensor, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """nnU-Net's decoder path -> 5 stage outputs, strides 16, 8, 4, 2, 1, before any seg layer."""
        s0 = getattr(feats[0], _STAGE0_ATTR, None)
        if s0 is None or s0.shape[2:] != x.shape[2:]:
            s0 = self._stage0(x)
        skips = [s0, *feats]
        h = skips[-1]
        out = []
        for s, (up, stage) in enumerate(zip(self.decoder.transpconvs, self.decoder.stages)):
            h = stage(torch.cat((up(h), skips[-(s + 2)]), 1))
            out.append(h)
        return out

    def check_input(self, shape: tuple[int, ...], where: str = "input") -> None:
        super().check_input(shape, where)
        deepest = 1
        for s in shape:
            deepest *= s // 32
        if deepest < 2:
            raise ConfigError(
                f"{where} size {tuple(shape)} leaves 1 voxel at the resenc bottleneck (stride 32), where "
                "InstanceNorm is undefined; use at least 64 along one axis (a multiple of 32)"
            )


@register_backbone("resenc")
def build_resenc(cfg: ModelConfig) -> Backbone:
    return ResEncBackbone(cfg)
