"""``sam``: self-supervised anatomical embeddings (Yan et al., "SAM: Self-supervised Learning of
Pixel-wise Anatomical Embeddings in Radiological Images", IEEE TMI 2022).

What one step computes (per volume of the batch; views from :class:`~anatssl.anatomy.sam_views.SAMViews`):

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

import torch
import torch.nn.functional as F
from torch import nn

from anatssl.anatomy.sam_model import SAMNet
from anatssl.anatomy.sam_views import FINE_STRIDE, SAMViews
from anatssl.config.schema import PretrainConfig
from anatssl.errors import ConfigError
from anatssl.losses.infonce_dense import dense_info_nce, hard_negative_indices
from anatssl.methods.base import SSLMethod, ViewFn, register_method


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
    mining_score: str = "coarse"
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
    """Per-view random non-monotone intensity remap (see ``sam_views.tissue_remap``), 0 = off."""
    tissue_bands: int = 3
    tissue_range: tuple[float, float] = (0.45, 0.65)
    fov_cut: float = 0.0
    """Per-view random field-of-view cut, as a fraction of the crop (see ``sam_views.SAMViews``), 0 = off."""
    fg_threshold: float = 0.05
    """Foreground = normalised intensity above this (CT preset [-1000, 1000] HU -> -900 HU)."""


def sample_at(emb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(D, X, Y, Z) map, (N, 3) fractional grid indices -> (N, D) trilinear samples (border-clamped)."""
    size = torch.tensor(emb.shape[1:], dtype=idx.dtype, device=idx.device)
    norm = 2 * idx / (size - 1).clamp_min(1) - 1  # align_corners=True: index 0 -> -1, n-1 -> 1
    grid = norm.flip(-1).view(1, -1, 1, 1, 3).to(emb.dtype)  # grid_sample wants (z, y, x) = (W, H, D) order
    out = F.grid_sample(emb[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(emb.shape[0], -1).t()


def fine_to_coarse(idx: torch.Tensor, coarse_stride: int) -> torch.Tensor:
    """Fine-grid indices -> fractional coarse-grid indices (both block-centred, see ``sam_model``)."""
    vox = FINE_STRIDE * idx + (FINE_STRIDE - 1) / 2
    return (vox - (coarse_stride - 1) / 2) / coarse_stride


@register_method("sam")
class SAM(SSLMethod):
    config_cls = SAMConfig

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__(cfg)
        p: SAMConfig = cfg.params if cfg.params is not None else SAMConfig()
        if p.mining_score not in ("coarse", "combined"):
            raise ConfigError(f"sam.mining_score = {p.mining_score!r}; valid values: coarse, combined")
        self.p = p
        self.net = SAMNet(cfg.model.in_channels, p.width, tuple(p.blocks), p.embed_dim, p.fpn_dim or None)
        bad = [c for c in p.crop_size if c % self.net.input_multiple]
        if bad:
            raise ConfigError(
                f"sam.crop_size {tuple(p.crop_size)} must be divisible by "
                f"{self.net.input_multiple} (2 ** len(sam.blocks))"
            )
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
            tissue_range=tuple(p.tissue_range),  # type: ignore[arg-type]
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
        """Losses of one crop pair. f*: (D, F...) fine maps, c*: (D, C...) coarse maps, pts*: (N, 3) fine
        indices, valid: (N,), grid2mm: (3, 3) view-2 fine step -> mm."""
        p = self.p
        cs = self.net.coarse_stride
        w = valid.float()

        q_f = F.normalize(sample_at(f1, pts1), dim=1)
        pos_f = F.normalize(sample_at(f2, pts2), dim=1)
        q_c = F.normalize(sample_at(c1, fine_to_coarse(pts1, cs)), dim=1)
        pos_c = F.normalize(sample_at(c2, fine_to_coarse(pts2, cs)), dim=1)

        # every fine-grid position of view 2 is a candidate
        fshape = f2.shape[1:]
        axes = [torch.arange(n, device=f2.device) for n in fshape]
        cand = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).view(-1, 3).float()  # (M, 3)
        dist = torch.linalg.norm((cand[None] - pts2[:, None]) @ grid2mm.t(), dim=-1)  # (N, M) mm

        # coarse head: random negatives of the other crop
        m = cand.shape[0]
        ridx = torch.randint(0, m, (p.num_coarse_negatives,), device=f2.device)
        neg_c = F.normalize(sample_at(c2, fine_to_coarse(cand[ridx], cs)), dim=1)  # (K, D)
        mask_c = dist[:, ridx] >= p.coarse_radius_mm
        loss_c = dense_info_nce(q_c, pos_c, neg_c[None].expand(len(q_c), -1, -1), p.temperature, mask_c, w)

        # fine head: coarse-to-fine hard negatives + a few random ones
        f2_flat = f2.reshape(f2.shape[0], -1).t()  # (M, D)
        with torch.no_grad():
            c2_up = F.normalize(sample_at(c2, fine_to_coarse(cand, cs)), dim=1)  # (M, D)
            score = q_c @ c2_up.t()
            if p.mining_score == "combined":
                score = 0.5 * (score + q_f @ f2_flat.t())
            hidx, hvalid = hard_negative_indices(score, dist < p.radius_mm, p.num_hard_negatives)
            if p.num_fine_random_negatives > 0:
                r = torch.randint(0, m, (len(q_f), p.num_fine_random_negatives), device=f2.device)
                hidx = torch.cat([hidx, r], 1)
                hvalid = torch.cat([hvalid, torch.gather(dist, 1, r) >= p.radius_mm], 1)
        neg_f = f2_flat[hidx]  # (N, K, D)
        loss_f = dense_info_nce(q_f, pos_f, neg_f, p.temperature, hvalid, w)
        pos_sim = ((q_f * pos_f).sum(1) * w).sum() / w.sum().clamp_min(1)
        return {"loss_fine": loss_f, "loss_coarse": loss_c, "pos_sim_fine": pos_sim.detach()}
