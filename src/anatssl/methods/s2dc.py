"""S2DC: Pan et al., "Structure-aware Semantic Discrepancy and Consistency for 3D Medical Image
Self-supervised Learning", ICCV 2025 (arXiv 2507.02581).

Per sample: a slab of G x G crops (``src``), the slab warped by one known in-plane affine
(``aug_full``) and each crop augmented on its own (``aug_crop``). Student = backbone + patch head +
global head on ``src``; teacher = EMA copy on ``aug_full`` / ``aug_crop``. Loss =
w_p2p L_p2p (Sinkhorn matching of src and aug_full tokens against the exact correspondence)
+ w_p2s L_p2s (peakedness-weighted structure consistency) + w_g L_g (MoCo InfoNCE on crop embeddings).

Fixes to the public code are the defaults; ``s2dc.official: true`` (preset ``official``) restores its
behaviour: tau = 1, unnormalised global vectors, per-axis crop scale factors in U(0, 2), BatchNorm over
the token axis. See docs/methods/s2dc.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import nn

from anatssl.config.loader import derived
from anatssl.config.schema import PretrainConfig
from anatssl.engine.queue import FeatureQueue
from anatssl.errors import ConfigError
from anatssl.losses.infonce import info_nce
from anatssl.losses.patch_discrepancy import patch_discrepancy_loss
from anatssl.losses.structure_consistency import structure_consistency_loss
from anatssl.methods.base import SSLMethod, register_method
from anatssl.models.backbones import Backbone, build_backbone
from anatssl.models.ema import ema_update, make_teacher
from anatssl.models.s2dc_heads import S2DCProjectionHead
from anatssl.views.intensity import mri_intensity
from anatssl.views.s2dc import S2DCViews, match_matrix


@dataclass
class S2DCConfig:
    """S2DC settings (YAML section ``s2dc``). ``tau``, ``normalize_global``, ``crop_scale_mode`` and
    ``bn_axis`` left out (or ``null``) are derived from ``official`` once, here."""

    official: bool = False
    """Reproduce the public code's behaviour for tau, normalize_global, crop_scale_mode and bn_axis."""
    grid: int = 4
    """G: crops per in-plane axis of the slab (paper: 4 -> 16 crops, slab 384 x 384 x 96)."""
    crop: int = 96
    """Crop edge in voxels; a multiple of the backbone's input multiple (32)."""
    token_stage: int = 4
    """Index into ``backbone.encode`` whose tokens are the patches (4 = deepest, stride 32)."""
    patch_hidden: int = 2048
    patch_dim: int = 512
    global_hidden: int = 2048
    global_dim: int = 512
    # -- L_p2p
    matcher: Literal["sinkhorn", "dual_softmax"] = "sinkhorn"
    """``sinkhorn`` (dustbin optimal transport, the paper) or ``dual_softmax`` (ablation)."""
    tau: float = derived()
    """Score temperature; default 0.07 (official: 1.0, which leaves the plan near uniform)."""
    alpha: float = 1.0
    """Dustbin score."""
    learn_alpha: bool = False
    sinkhorn_iters: int = 100
    # -- L_p2s
    detach_p2s_weights: bool = False
    """Stop gradients through the peakedness weights (the public code lets them flow)."""
    # -- L_g
    tau_g: float = 0.9
    queue_size: int = 90
    """Teacher src-crop embeddings kept as negatives, per GPU (the queue holds all ranks' keys)."""
    normalize_global: bool = derived()
    """L2-normalise global vectors in InfoNCE; default true (official: false)."""
    # -- total loss
    w_p2p: float = 0.5
    w_p2s: float = 0.5
    w_g: float = 0.5
    use_p2p: bool = True
    use_p2s: bool = True
    use_g: bool = True
    # -- teacher
    ema_momentum: float = 0.999
    # -- views
    rot_full_deg: float = 30.0
    scale_full: tuple[float, float] = (0.9, 1.2)
    trans_full: float = 24.0
    """Voxels at crop 96; scaled by crop / 96."""
    rot_crop_deg: float = 20.0
    scale_crop: float = 0.1
    trans_crop: float = 24.0
    intensity_shift: float = 0.1
    crop_scale_mode: Literal["fixed", "official"] = derived()
    """``fixed``: isotropic factor within +-scale_crop (default); ``official``: per-axis U(0, 2)."""
    bn_axis: Literal["channels", "tokens"] = derived()
    """Patch-head BatchNorm: ``channels`` (default) or ``tokens`` (official)."""

    def __post_init__(self) -> None:
        if self.tau is None:
            self.tau = 1.0 if self.official else 0.07
        if self.normalize_global is None:
            self.normalize_global = not self.official
        if self.crop_scale_mode is None:
            self.crop_scale_mode = "official" if self.official else "fixed"
        if self.bn_axis is None:
            self.bn_axis = "tokens" if self.official else "channels"
        if self.grid < 1 or self.crop < 1:
            raise ValueError(f"grid and crop must be >= 1, got grid={self.grid}, crop={self.crop}")
        if self.tau <= 0 or self.tau_g <= 0:
            raise ValueError(f"tau and tau_g must be > 0, got tau={self.tau}, tau_g={self.tau_g}")
        if self.sinkhorn_iters < 1:
            raise ValueError(f"sinkhorn_iters must be >= 1, got {self.sinkhorn_iters}")
        if not 0.0 <= self.ema_momentum <= 1.0:
            raise ValueError(f"ema_momentum must be in [0, 1], got {self.ema_momentum}")
        if self.queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {self.queue_size}")
        if not (self.use_p2p or self.use_p2s or self.use_g):
            raise ValueError("use_p2p, use_p2s and use_g are all false: there is nothing to train")


@register_method("s2dc")
class S2DC(SSLMethod):
    config_cls = S2DCConfig

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__(cfg)
        hp: S2DCConfig = cfg.params
        self.hp = hp
        backbone = build_backbone(cfg.model)
        n_stages = len(backbone.feature_strides)
        if not 0 <= hp.token_stage < n_stages:
            raise ConfigError(
                f"s2dc.token_stage = {hp.token_stage} does not exist: backbone {cfg.model.backbone!r} has "
                f"stages 0..{n_stages - 1} (strides {backbone.feature_strides}); 4 is the deepest"
            )
        backbone.check_input((hp.crop,) * 3, "s2dc.crop")
        self.stride = backbone.feature_strides[hp.token_stage]
        if hp.crop % self.stride:
            raise ConfigError(f"s2dc.crop = {hp.crop} is not a multiple of the token stride {self.stride}")
        self.t = hp.crop // self.stride
        student: dict[str, nn.Module] = {"backbone": backbone}
        if hp.use_p2p or hp.use_p2s:
            student["patch_head"] = S2DCProjectionHead(
                backbone.feature_channels[hp.token_stage],
                hp.patch_hidden,
                hp.patch_dim,
                normalize=True,
                bn_axis=hp.bn_axis,
                num_tokens=self.t**3,
            )
        if hp.use_g:
            student["global_head"] = S2DCProjectionHead(
                backbone.feature_channels[-1], hp.global_hidden, hp.global_dim, normalize=False
            )
        self.student = nn.ModuleDict(student)
        self.teacher: nn.ModuleDict = make_teacher(self.student)  # type: ignore[assignment]
        self.queue = FeatureQueue(hp.queue_size if hp.use_g else 0, hp.global_dim)
        if hp.learn_alpha and hp.matcher == "sinkhorn" and hp.use_p2p:
            self.alpha: nn.Parameter | float = nn.Parameter(torch.tensor(float(hp.alpha)))
        else:
            self.alpha = float(hp.alpha)
        self._views = S2DCViews(
            hp.grid,
            hp.crop,
            self.stride,
            hp.rot_full_deg,
            hp.scale_full,
            hp.trans_full,
            hp.rot_crop_deg,
            hp.scale_crop,
            hp.trans_crop,
            hp.intensity_shift,
            hp.crop_scale_mode,
            mri_intensity(cfg.data),
        )
        self.min_volume_shape = self._views.slab_shape
        self._ema_step = -1

    @property
    def views(self) -> S2DCViews:
        return self._views

    def untrained_parameters(self) -> tuple[str, ...]:
        """S2DC trains the encoder only: the backbone's decoder gets no gradient."""
        prefixes = cast(Backbone, self.student["backbone"]).decoder_prefixes
        return tuple(f"student.backbone.{p}" for p in prefixes)

    def encoder(self) -> nn.Module:
        return self.student["backbone"]

    # -- helpers --------------------------------------------------------------------------------------
    @staticmethod
    def _encode(net: nn.ModuleDict, x: torch.Tensor) -> list[torch.Tensor]:
        return cast(Backbone, net["backbone"]).encode(x)

    def _layer_tokens(self, z: torch.Tensor, batch: int) -> torch.Tensor:
        """(B * G * G, t^3, D) per-crop tokens -> (B * t, (G t)^2, D) slab token layers (index x * Ty + y)."""
        g, t = self.hp.grid, self.t
        d = z.shape[-1]
        z = z.reshape(batch, g, g, t, t, t, d)  # b, gx, gy, a(x), b(y), k(z)
        z = z.permute(0, 5, 1, 3, 2, 4, 6)  # b, z, gx, a, gy, b, d
        return z.reshape(batch * t, (g * t) ** 2, d)

    def _patches(self, head: nn.Module, feat: torch.Tensor, batch: int) -> torch.Tensor:
        tok = feat.flatten(2).transpose(1, 2)  # (M, t^3, C), x-major
        return self._layer_tokens(head(tok), batch)

    # -- training ---------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        hp = self.hp
        if step != self._ema_step:  # teacher update BEFORE its forward, once per optimizer step
            ema_update(self.teacher, self.student, hp.ema_momentum)
            self._ema_step = step
        src, aug_full, aug_crop = batch["src"], batch["aug_full"], batch["aug_crop"]
        b, k = src.shape[0], src.shape[1]
        crop_k = batch["crop_k"].long().to(src.device)
        rows = torch.arange(b, device=src.device)
        use_patch = hp.use_p2p or hp.use_p2s

        feats = self._encode(self.student, src.flatten(0, 1))
        with torch.no_grad():
            t_in = [aug_full.flatten(0, 1)] if use_patch else []
            if hp.use_g:
                t_in += [aug_crop.flatten(0, 1), src[rows, crop_k]]
            t_feats = self._encode(self.teacher, torch.cat(t_in))

        out: dict[str, torch.Tensor] = {}
        total = src.new_zeros(())
        if use_patch:
            z_s = self._patches(self.student["patch_head"], feats[hp.token_stage], b)
            with torch.no_grad():
                z_t = self._patches(self.teacher["patch_head"], t_feats[hp.token_stage][: b * k], b)
            n = z_s.shape[1]
            g_mat = match_matrix(batch["match"].long().to(src.device).reshape(-1, n), n)
            if hp.use_p2p:
                l_p2p, prob = patch_discrepancy_loss(
                    z_s,
                    z_t,
                    g_mat,
                    hp.tau,
                    self.alpha,
                    hp.matcher,
                    hp.sinkhorn_iters,
                )
                total = total + hp.w_p2p * l_p2p
                out["p2p"] = l_p2p.detach()
                with torch.no_grad():
                    out["p_match"] = (prob * g_mat).sum() / g_mat.sum().clamp_min(1.0)
            if hp.use_p2s:
                l_p2s = structure_consistency_loss(z_s, z_t, g_mat, hp.detach_p2s_weights)
                total = total + hp.w_p2s * l_p2s
                out["p2s"] = l_p2s.detach()
        if hp.use_g:
            pooled = feats[-1].mean(dim=(2, 3, 4))  # (B * K, C): the head's BatchNorm sees all crops
            q = self.student["global_head"](pooled).reshape(b, k, -1)[rows, crop_k]
            with torch.no_grad():
                off = b * k if use_patch else 0
                t_pooled = t_feats[-1][off:].mean(dim=(2, 3, 4))
                t_glob = self.teacher["global_head"](t_pooled)
                keys = t_glob[: b * k].reshape(b, k, -1)
                src_keys = t_glob[b * k :]
                pos = keys[rows, crop_k]
                others = torch.ones(b, k, dtype=torch.bool, device=src.device)
                others[rows, crop_k] = False
                neg = keys[others].reshape(b, k - 1, -1)
            l_g = info_nce(q, pos, neg, self.queue.features(), hp.tau_g, hp.normalize_global)
            self.queue.enqueue(src_keys)
            total = total + hp.w_g * l_g
            out["g"] = l_g.detach()
        if isinstance(self.alpha, nn.Parameter):
            out["alpha"] = self.alpha.detach()
        out["loss"] = total
        return out
