"""swinssl: Tang et al., "Self-Supervised Pre-Training of Swin Transformers for 3D Medical Image
Analysis", CVPR 2022 (the standard Swin-UNETR pretraining).

Two crops per volume, each rotated by 0/90/180/270 degrees about the slice axis and corrupted by
in-painting cut-outs. The encoder's deepest feature feeds a 4-way rotation classifier (CE), a 512-d
projection (NT-Xent between the two crops of a volume, temperature 0.5; under DDP its negatives come
from every rank, ``swinssl.gather_negatives``) and a light upsampling decoder
that reconstructs the uncorrupted crop (L1). Loss = L_rot + L_contrast + L_inpaint (weights 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from anatssl.config.schema import PretrainConfig
from anatssl.engine import distributed as D
from anatssl.losses.ntxent import nt_xent
from anatssl.methods.base import SSLMethod, register_method
from anatssl.models.backbones import build_backbone
from anatssl.models.swinssl_head import UpsampleReconHead
from anatssl.views.intensity import mri_intensity
from anatssl.views.swinssl import SwinSSLViews

log = logging.getLogger("anatssl")


@dataclass
class SwinSSLConfig:
    crop_size: tuple[int, int, int] = (96, 96, 96)
    """Tang et al. use 96^3 crops."""
    proj_dim: int = 512
    temperature: float = 0.5
    max_boxes: int = 4
    min_box_frac: float = 0.1
    max_box_frac: float = 0.3
    noise_prob: float = 0.5
    rot_weight: float = 1.0
    contrast_weight: float = 1.0
    inpaint_weight: float = 1.0
    gather_negatives: bool = True
    """Under DDP, NT-Xent's negatives come from every rank (a gather with a backward; ``false``: the
    per-GPU batch only). With 8 GPUs x batch 4 an anchor sees 62 negatives instead of
    6, and the loss and gradients are those of one process on the whole batch. No effect on one
    process."""


@register_method("swinssl")
class SwinSSL(SSLMethod):
    config_cls = SwinSSLConfig

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__(cfg)
        hp: SwinSSLConfig = cfg.params
        self.hp = hp
        self.backbone = build_backbone(cfg.model)
        self.backbone.check_input(hp.crop_size, "swinssl.crop_size")
        if cfg.train.batch_size == 1 and hp.contrast_weight > 0 and not (hp.gather_negatives and D.is_dist()):
            log.warning(
                "swinssl with train.batch_size=1: the NT-Xent term has no negatives in the batch and is "
                "identically 0 on one process; use train.batch_size >= 2 (Tang et al. use 4 per GPU)"
            )
        c = self.backbone.feature_channels[-1]
        self.rotation_head = nn.Linear(c, 4)
        self.contrastive_head = nn.Linear(c, hp.proj_dim)
        self.recon_head = UpsampleReconHead(c, cfg.model.in_channels, levels=5)
        self._views = SwinSSLViews(
            hp.crop_size,
            hp.max_boxes,
            hp.min_box_frac,
            hp.max_box_frac,
            hp.noise_prob,
            mri_intensity(cfg.data),
        )
        self.min_volume_shape = hp.crop_size

    @property
    def views(self) -> SwinSSLViews:
        return self._views

    def untrained_parameters(self) -> tuple[str, ...]:
        """Tang et al. train the encoder (and their own heads): the backbone's decoder gets no gradient."""
        return tuple(f"backbone.{p}" for p in self.backbone.decoder_prefixes)

    def encoder(self) -> nn.Module:
        return self.backbone

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        x = torch.cat([batch["x1"], batch["x2"]])
        target = torch.cat([batch["target1"], batch["target2"]])
        rot = torch.cat([batch["rot1"], batch["rot2"]]).long()
        deep = self.backbone.encode(x)[-1]
        pooled = deep.mean(dim=(2, 3, 4))
        l_rot = F.cross_entropy(self.rotation_head(pooled).float(), rot)
        z = self.contrastive_head(pooled)
        b = batch["x1"].shape[0]
        l_con = nt_xent(z[:b], z[b:], self.hp.temperature, all_ranks=self.hp.gather_negatives)
        recon = self.recon_head(deep)
        l_rec = F.l1_loss(recon.float(), target.float())
        loss = self.hp.rot_weight * l_rot + self.hp.contrast_weight * l_con + self.hp.inpaint_weight * l_rec
        return {"loss": loss, "rot": l_rot.detach(), "contrast": l_con.detach(), "inpaint": l_rec.detach()}
