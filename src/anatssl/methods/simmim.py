"""simmim: masked image modelling on the shared backbone (Xie et al., "SimMIM: A Simple Framework for
Masked Image Modeling", CVPR 2022), in 3D.

A random crop is cut into ``mask_patch^3`` blocks (16^3 voxels) and a fraction of them, drawn
uniformly in ``[mask_ratio_min, mask_ratio_max]`` (0.6-0.75), is masked: those voxels are set to 0
(the CT window floor; SimMIM's mask token at the patch embedding is replaced by zeroed voxels so that
any registered backbone works unchanged). The encoder sees the masked crop; a light head reconstructs
the voxels and the loss is L1 on the masked voxels only (SimMIM's choice: predicting visible voxels
adds nothing but a copy task).

Heads (``simmim.head``):

* ``linear`` (default, SimMIM's one-layer prediction head): a 1x1x1 conv on the deepest encoder
  feature (stride 32) predicting ``32^3 * C`` values per token, rearranged into voxels (3D pixel
  shuffle). Only the encoder is trained, as for swinssl.
* ``backbone``: the backbone's own UNETR decoder and 1x1x1 reconstruction conv, so the whole
  Swin-UNETR (decoder included) is pretrained. Heavier than SimMIM's head; offered for segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from anatssl.config.schema import PretrainConfig
from anatssl.errors import ConfigError
from anatssl.losses.reconstruction import masked_l1
from anatssl.methods.base import SSLMethod, register_method
from anatssl.models.backbones import build_backbone
from anatssl.models.simmim_head import PixelShuffleHead
from anatssl.views.intensity import mri_intensity
from anatssl.views.simmim import SimMIMViews

__all__ = ["PixelShuffleHead", "SimMIM", "SimMIMConfig", "SimMIMViews", "masked_l1"]


@dataclass
class SimMIMConfig:
    crop_size: tuple[int, int, int] = (96, 96, 96)
    """Swin-UNETR's crop; the tiny preset uses 64^3."""
    mask_patch: int = 16
    """Mask block edge in voxels (baselines spec: 16^3 blocks)."""
    mask_ratio_min: float = 0.6
    mask_ratio_max: float = 0.75
    """Per-sample ratio drawn uniformly in [min, max] (spec: 0.6-0.75; SimMIM's best is 0.6 for Swin)."""
    mask_shape: Literal["cube", "tube"] = "cube"
    """``cube`` (mask_patch^3 blocks) or ``tube`` (blocks through the whole Z depth)."""
    head: Literal["linear", "backbone"] = "linear"
    """``linear`` (SimMIM's one-layer head on the stride-32 feature) or ``backbone`` (UNETR decoder)."""


@register_method("simmim")
class SimMIM(SSLMethod):
    config_cls = SimMIMConfig

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__(cfg)
        hp: SimMIMConfig = cfg.params
        if not 0.0 < hp.mask_ratio_min <= hp.mask_ratio_max < 1.0:
            raise ConfigError(
                f"simmim.mask_ratio_min/max = {hp.mask_ratio_min}/{hp.mask_ratio_max}: "
                "need 0 < min <= max < 1"
            )
        if any(s % hp.mask_patch for s in hp.crop_size):
            raise ConfigError(
                f"simmim.crop_size {tuple(hp.crop_size)} must be a multiple of simmim.mask_patch "
                f"({hp.mask_patch})"
            )
        self.hp = hp
        self.backbone = build_backbone(cfg.model)
        self.backbone.check_input(hp.crop_size, "simmim.crop_size")
        self.head = (
            PixelShuffleHead(
                self.backbone.feature_channels[-1], cfg.model.in_channels, self.backbone.feature_strides[-1]
            )
            if hp.head == "linear"
            else None
        )
        self._views = SimMIMViews(
            hp.crop_size,
            hp.mask_patch,
            hp.mask_ratio_min,
            hp.mask_ratio_max,
            hp.mask_shape,
            mri_intensity(cfg.data),
        )
        self.min_volume_shape = hp.crop_size

    @property
    def views(self) -> SimMIMViews:
        return self._views

    def untrained_parameters(self) -> tuple[str, ...]:
        """With the ``linear`` head only the encoder is trained: the backbone's decoder gets no gradient."""
        if self.head is None:
            return ()
        return tuple(f"backbone.{p}" for p in self.backbone.decoder_prefixes)

    def encoder(self) -> nn.Module:
        return self.backbone

    def reconstruct(self, x_masked: torch.Tensor) -> torch.Tensor:
        """(B, C, X, Y, Z) masked input -> (B, C, X, Y, Z) reconstruction."""
        feats = self.backbone.encode(x_masked)
        if self.head is not None:
            return self.head(feats[-1])
        return self.backbone.reconstruct(self.backbone.decode(x_masked, feats)[-1])

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        x, mask = batch["x"], batch["mask"]
        recon = self.reconstruct(x * (1.0 - mask))
        loss = masked_l1(recon, x, mask)
        return {"loss": loss, "l1_masked": loss.detach(), "mask_ratio": mask.mean().detach()}
