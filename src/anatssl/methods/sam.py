"""``sam``: self-supervised anatomical embeddings (Yan et al., "SAM: Self-supervised Learning of
Pixel-wise Anatomical Embeddings in Radiological Images", IEEE TMI 2022).

What one step computes (per volume of the batch; views from :class:`~anatssl.views.sam.SAMViews`):

1. both crops through :class:`~anatssl.anatomy.sam_model.SAMNet` -> fine (stride 2) and coarse
   (stride ``2**S``) unit-norm embeddings;
2. N positive pairs (known correspondence) sampled trilinearly on both grids and re-normalised;
3. coarse loss: InfoNCE (tau 0.5) against ``num_coarse_negatives`` random positions of the other crop;
4. fine loss: InfoNCE (tau 0.5) against ``num_hard_negatives`` hard negatives = the positions of the
   other crop most similar to the anchor under the *coarse* embedding (or the combined score) among
   those farther than ``radius_mm`` from the true partner (coarse-to-fine mining), plus
   ``num_fine_random_negatives`` random ones;
5. loss = fine + coarse.

SAM trains its own CNN, not the shared backbone: the config's ``model`` section is ignored except for
``model.in_channels``; the width/depth are ``sam.width`` / ``sam.blocks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from anatssl.anatomy.sam_model import SAMNet
from anatssl.config.schema import PretrainConfig
from anatssl.errors import ConfigError
from anatssl.losses.sam import fine_to_coarse, sam_pair_losses, sample_at
from anatssl.methods.base import SSLMethod, ViewFn, register_method
from anatssl.views.intensity import mri_intensity
from anatssl.views.sam import TISSUE_BANDS, SAMViews

__all__ = ["SAM", "SAMConfig", "fine_to_coarse", "sample_at"]


@dataclass
class SAMConfig:
    """The ``sam:`` section of a preset."""

    width: int = 16
    blocks: tuple[int, ...] = (1, 1, 1)
    """Residual blocks per stage; 3 stages -> coarse stride 8 (public SAM: ResNet-18, stride 16)."""
    embed_dim: int = 128
    fpn_dim: int = 0
    """0: 2 * width."""
    crop_size: tuple[int, int, int] = (48, 48, 48)
    num_pairs: int = 100
    """Positive pairs per volume (SAM: 100)."""
    temperature: float = 0.5
    """SAM's InfoNCE temperature, both heads."""
    num_coarse_negatives: int = 500
    num_hard_negatives: int = 100
    num_fine_random_negatives: int = 32
    """A few random negatives next to the hard ones so that far-away look-alikes stay apart."""
    radius_mm: float = 8.0
    """Fine head: candidates closer than this to the true partner are not negatives."""
    coarse_radius_mm: float = 16.0
    """Coarse head: the same exclusion, wider because the coarse grid is coarser."""
    mining_score: Literal["coarse", "combined"] = "coarse"
    """``coarse`` (SAM's coarse-to-fine) or ``combined`` (½(fine + coarse), detached)."""
    scale_range: tuple[float, float] = (0.8, 1.2)
    rotate_deg: float = 10.0
    max_shift: float = 0.5
    contrast_range: tuple[float, float] = (0.85, 1.15)
    brightness: float = 0.1
    noise_std: float = 0.03
    blur_sigma: tuple[float, float] = (0.0, 0.0)
    """Per-view Gaussian blur sigma range (voxels); breaks the shared-texture shortcut (see SAMViews)."""
    tissue_shift: float = 0.0
    """Per-view random non-monotone intensity remap (see ``views.sam.tissue_remap``), 0 = off."""
    tissue_bands: int = 3
    tissue_range: tuple[float, float] | None = None
    """Normalised intensities where the remap's bands are centred; null = the modality's
    (``views.sam.TISSUE_BANDS``: CT soft tissue 0.45-0.65 = -100..300 HU; MRI 0.15-0.9)."""
    tissue_width: tuple[float, float] | None = None
    """Range of the bands' widths (normalised); null = the modality's (CT 0.01-0.04, MRI 0.03-0.1)."""
    fov_cut: float = 0.0
    """Per-view random field-of-view cut, as a fraction of the crop (see ``views.sam.SAMViews``), 0 = off."""
    fg_threshold: float = 0.05
    """Foreground = normalised intensity above this, both modalities (CT [-1000, 1000] HU window: -900 HU;
    MRI: 5 % of the way from the low to the high percentile of ``data.mri_percentiles``)."""


@register_method("sam")
class SAM(SSLMethod):
    config_cls = SAMConfig

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__(cfg)
        p: SAMConfig = cfg.params if cfg.params is not None else SAMConfig()
        self.p = p
        self.net = SAMNet(cfg.model.in_channels, p.width, tuple(p.blocks), p.embed_dim, p.fpn_dim or None)
        bad = [c for c in p.crop_size if c % self.net.input_multiple]
        if bad:
            raise ConfigError(
                f"sam.crop_size {tuple(p.crop_size)} must be divisible by "
                f"{self.net.input_multiple} (2 ** len(sam.blocks))"
            )
        bands = TISSUE_BANDS[cfg.data.modality]  # no HU band when data.modality=mri
        self._views = SAMViews(
            crop_size=tuple(p.crop_size),  # type: ignore[arg-type]
            num_pairs=p.num_pairs,
            scale_range=p.scale_range,
            rotate_deg=p.rotate_deg,
            max_shift=p.max_shift,
            contrast_range=p.contrast_range,
            brightness=p.brightness,
            noise_std=p.noise_std,
            blur_sigma=p.blur_sigma,
            fg_threshold=p.fg_threshold,
            tissue_shift=p.tissue_shift,
            fov_cut=p.fov_cut,
            tissue_bands=p.tissue_bands,
            tissue_range=tuple(p.tissue_range or bands[0]),  # type: ignore[arg-type]
            tissue_width=tuple(p.tissue_width or bands[1]),  # type: ignore[arg-type]
            mri=mri_intensity(cfg.data),
        )

    @property
    def views(self) -> ViewFn:
        return self._views

    def encoder(self) -> nn.Module:
        return self.net

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        v1, v2 = batch["view1"], batch["view2"]
        b = v1.shape[0]
        out = self.net(torch.cat([v1, v2]).float())
        fine, coarse = out["fine"], out["coarse"]
        lf, lc, pos_sim = [], [], []
        for i in range(b):
            terms = self.pair_losses(
                fine[i],
                fine[b + i],
                coarse[i],
                coarse[b + i],
                batch["pts1"][i].float(),
                batch["pts2"][i].float(),
                batch["valid"][i].bool(),
                batch["grid2mm"][i].float(),
            )
            lf.append(terms["loss_fine"])
            lc.append(terms["loss_coarse"])
            pos_sim.append(terms["pos_sim_fine"])
        loss_fine, loss_coarse = torch.stack(lf).mean(), torch.stack(lc).mean()
        return {
            "loss": loss_fine + loss_coarse,
            "loss_fine": loss_fine.detach(),
            "loss_coarse": loss_coarse.detach(),
            "pos_sim_fine": torch.stack(pos_sim).mean(),
        }

    def pair_losses(
        self,
        f1: torch.Tensor,
        f2: torch.Tensor,
        c1: torch.Tensor,
        c2: torch.Tensor,
        pts1: torch.Tensor,
        pts2: torch.Tensor,
        valid: torch.Tensor,
        grid2mm: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Losses of one crop pair (:func:`anatssl.losses.sam.sam_pair_losses` with this run's settings)."""
        p = self.p
        return sam_pair_losses(
            f1,
            f2,
            c1,
            c2,
            pts1,
            pts2,
            valid,
            grid2mm,
            coarse_stride=self.net.coarse_stride,
            temperature=p.temperature,
            num_coarse_negatives=p.num_coarse_negatives,
            coarse_radius_mm=p.coarse_radius_mm,
            num_hard_negatives=p.num_hard_negatives,
            num_fine_random_negatives=p.num_fine_random_negatives,
            radius_mm=p.radius_mm,
            mining_score=p.mining_score,
        )
