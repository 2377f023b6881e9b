"""``voco``: volume contrast (Wu, Zhuang, Chen, "VoCo: A Simple-yet-Effective Volume Contrastive Learning
Framework for 3D Medical Image Analysis", CVPR 2024, arXiv 2402.17300; public code Luffy03/VoCo).

Views (:class:`~anatssl.views.voco.VoCoViews`): a region of ``grid x grid`` base crops tiling it in the
axial plane, ``n_random`` random crops inside it, and each random crop's overlap fraction with every
base crop as its target. One step: the backbone encodes all crops of the batch at once; the projector
(:class:`~anatssl.models.voco_head.VoCoProjectionHead`) maps the pooled encoder stages to ``p`` (random
crops) and ``q`` (base crops); ``l = max(0, cos(p, sg(q)))`` predicts the overlaps
(``L_pred``, Eq. 3), and ``L_reg`` (Eq. 5) pushes the base crops of one volume towards orthogonality.
``L = L_pred + lambda_reg L_reg`` (lambda_reg = 1). The base crops get their gradient from ``L_reg``
only: ``L_pred`` treats them as fixed class centres (stop-gradient). Encoder-only: the backbone's
decoder is not trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from anatssl.config.schema import PretrainConfig
from anatssl.errors import ConfigError
from anatssl.losses.volume_contrast import (
    base_regularization_loss,
    position_prediction_loss,
    volume_contrast_logits,
)
from anatssl.methods.base import SSLMethod, register_method
from anatssl.models.backbones import build_backbone
from anatssl.models.voco_head import VoCoProjectionHead
from anatssl.views.intensity import mri_intensity
from anatssl.views.voco import VoCoViews


@dataclass
class VoCoConfig:
    """The ``voco:`` section of a preset."""

    grid: int = 4
    """Base crops per axial axis (paper: 4 x 4 = 16)."""
    crop_size: tuple[int, int, int] = (64, 64, 64)
    """Edge of base and random crops (X, Y, Z); the region is (grid X, grid Y, Z). The public code cuts
    96^3 crops of a 384 x 384 x 96 region and resizes them to 64^3; here 64^3 crops are cut directly."""
    n_random: int = 2
    """Random crops per volume (public code: ``sw_batch_size`` 2)."""
    proj_hidden: int = 2048
    proj_dim: int = 2048
    lambda_reg: float = 1.0
    reg_form: Literal["paper", "code"] = "paper"
    """``paper``: mean |cos| over base pairs (Eq. 5); ``code``: the public code's mean relu(cos)^2."""

    def __post_init__(self) -> None:
        if self.grid < 2:
            raise ConfigError(f"voco.grid = {self.grid}; need >= 2 (the regulariser contrasts base crops)")
        if self.n_random < 1:
            raise ConfigError(f"voco.n_random = {self.n_random}; need >= 1")
        if self.lambda_reg < 0:
            raise ConfigError(f"voco.lambda_reg = {self.lambda_reg}; need >= 0")


@register_method("voco")
class VoCo(SSLMethod):
    config_cls = VoCoConfig

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__(cfg)
        hp: VoCoConfig = cfg.params
        self.hp = hp
        self.backbone = build_backbone(cfg.model)
        self.backbone.check_input(tuple(hp.crop_size), "voco.crop_size")
        self.head = VoCoProjectionHead(sum(self.backbone.feature_channels), hp.proj_hidden, hp.proj_dim)
        self._views = VoCoViews(hp.grid, tuple(hp.crop_size), hp.n_random, mri_intensity(cfg.data))  # type: ignore[arg-type]
        self.min_volume_shape = self._views.region_shape

    @property
    def views(self) -> VoCoViews:
        return self._views

    def untrained_parameters(self) -> tuple[str, ...]:
        """VoCo trains the encoder (and the projector) only: the backbone's decoder gets no gradient."""
        return tuple(f"backbone.{p}" for p in self.backbone.decoder_prefixes)

    def encoder(self) -> nn.Module:
        return self.backbone

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(M, C, X, Y, Z) crops -> (M, proj_dim)."""
        return self.head(self.backbone.encode(x))

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        bases, crops, targets = batch["bases"], batch["crops"], batch["targets"]
        b, k, n = bases.shape[0], bases.shape[1], crops.shape[1]
        z = self.project(torch.cat([bases.flatten(0, 1), crops.flatten(0, 1)]))  # one BatchNorm batch
        q = z[: b * k].reshape(b, k, -1)
        p = z[b * k :].reshape(b, n, -1)
        logits = volume_contrast_logits(p, q.detach())
        l_pred = position_prediction_loss(logits, targets)
        l_reg = base_regularization_loss(q, self.hp.reg_form)
        loss = l_pred + self.hp.lambda_reg * l_reg
        with torch.no_grad():
            err = (logits - targets.float()).abs().mean()
        return {"loss": loss, "pred": l_pred.detach(), "reg": l_reg.detach(), "overlap_error": err}
