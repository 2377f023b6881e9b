"""``alice``: anatomical invariance modelling and semantic alignment (Jiang et al., ICCV 2023).

arXiv 2302.05615.

What one step computes (views from :class:`~anatssl.views.alice.AliceViews`: crops Q of patient A and
K of patient B around SAM-matched points, block masks per crop):

1. student (backbone + :class:`~anatssl.models.ibot_head.AliceHead`) on the masked crops, teacher (its
   EMA) on the unmasked ones. Per view: ``cls`` = global average of the deepest encoder stage,
   ``enc`` = deepest-stage tokens, ``dec`` = tokens of the first decoder stage (``decode()[0]``),
   ``recon`` = ``backbone.reconstruct(decode()[-1])``; all projected to ``out_dim`` prototype logits;
2. ``L_cls = 1/2 [H(t_cls(Q), s_cls(K)) + H(t_cls(K), s_cls(Q))]`` (inter-volume invariance);
3. CASA: ``S_v = CASA(s_enc(v), s_dec(v))``; target ``T_v = CASA(s_enc(v), t_dec(v))`` with the same
   weights, no gradient (``casa_target=teacher_decoder``, the public code), or
   ``T_v = CASA_ema(t_enc(v), t_dec(v))`` with an EMA copy of CASA (``teacher_encoder``, the paper's
   figure: the target branch is wholly the teacher's); ``L_patch = 1/2 sum_v mean_tokens H(T_v, S_v)``;
4. ``L_rec = lambda_rec * MSE(recon, unmasked crop)`` over all voxels (or masked ones only);
   ``lambda_rec = 5`` (the paper's 10, halved as in the public code);
5. ``L = lambda_cls L_cls + lambda_patch L_patch + L_rec``.

``H(t, s)`` is the centred, sharpened cross-entropy of :mod:`anatssl.losses.distillation` with
``tau_s = 0.1`` and ``tau_t`` warmed up linearly 0.008 -> 0.01 (public code; ``tau_preset=dino``:
0.04 -> 0.07). Centres (cls and tokens) are EMAs (0.9) of the teacher batch means. After each
optimizer step the teacher moves by EMA with momentum 0.996 -> 1 (cosine over all steps).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from anatssl.anatomy.pairing import PairMiner
from anatssl.config.schema import PretrainConfig
from anatssl.engine.schedules import cosine_schedule, epoch_linspace, linear_warmup
from anatssl.errors import ConfigError
from anatssl.losses.distillation import CenteredDistillation
from anatssl.losses.reconstruction import masked_or_full_mse
from anatssl.methods.base import SSLMethod, ViewFn, register_method
from anatssl.models.backbones.base import build_backbone
from anatssl.models.casa import CASA
from anatssl.models.ema import ema_update, make_teacher
from anatssl.models.ibot_head import AliceHead, AliceNet
from anatssl.views.alice import AliceViews
from anatssl.views.intensity import mri_intensity

log = logging.getLogger("anatssl")

TAU_PRESETS: dict[str, tuple[float, float]] = {"alice": (0.008, 0.01), "dino": (0.04, 0.07)}
"""Teacher temperature (start, end) of the linear warm-up: the public Alice code, and DINO's."""


@dataclass
class AliceConfig:
    """The ``alice:`` section of a preset. Defaults are the paper's / public code's numbers."""

    pairing: Literal["sam", "random", "same"] = "sam"
    """``sam`` (SAM-matched cross-patient pairs), ``random`` (random point of a random partner),
    ``same`` (B = A, p' = p: ordinary two-augmentation pairs). Ablation switch."""
    embeddings_dir: str | None = None
    """SAM embedding cache (``anatssl embed``); set by ``--embeddings`` / ``--sam`` / stage 0."""
    crop_size: int = 64
    similarity_threshold: float = 0.7
    max_tries: int = 100
    border_margin: int = 16
    """Query points stay this many voxels away from the scan border."""
    foreground_threshold: float = 0.05
    """Query points have normalised intensity above this (0 = the CT window floor)."""
    augment: bool = True
    mask_patch: int = 16
    mask_ratio: float = 0.75
    mask_shape: Literal["cube", "tube"] = "cube"
    """``cube`` (3D blocks) or ``tube`` (2D blocks through the Z depth, the public code)."""
    out_dim: int = 512
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    casa_heads: int = 8
    casa_ffn_dim: int = 2048
    casa_dropout: float = 0.1
    casa_target: Literal["teacher_decoder", "teacher_encoder"] = "teacher_decoder"
    student_temp: float = 0.1
    tau_preset: Literal["alice", "dino"] = "alice"
    """``alice`` (0.008 -> 0.01) or ``dino`` (0.04 -> 0.07) teacher temperatures."""
    teacher_temp_start: float | None = None
    """Overrides the preset's start value."""
    teacher_temp_end: float | None = None
    teacher_temp_warmup_steps: int = 1000
    """Linear warm-up of the teacher temperature (the paper: 30 epochs)."""
    teacher_temp_schedule: Literal["step", "epoch"] = "step"
    """``step`` (default): linear in the global step, ``end`` reached at ``teacher_temp_warmup_steps``.
    ``epoch`` (the public code, preset ``official``): ``np.linspace(start, end, W)[epoch]`` with
    ``W = teacher_temp_warmup_steps / teacher_temp_epoch_steps`` epochs, constant within an epoch,
    ``end`` reached at epoch ``W - 1``. The default does not depend on how many steps make an epoch
    (dataset size, GPUs, batch), see docs/methods/alice.md."""
    teacher_temp_epoch_steps: int = 250
    """Steps per epoch for ``teacher_temp_schedule: epoch`` (base preset: ~2,000 CTs at batch 8)."""
    center_momentum: float = 0.9
    momentum_teacher: float = 0.996
    """EMA momentum at step 0; cosine to 1 at the last step."""
    freeze_last_layer_steps: int = 100
    """The heads' last layers get no update for this many steps (DINO / Alice: the first epoch)."""
    lambda_cls: float = 1.0
    lambda_patch: float = 1.0
    lambda_rec: float = 5.0
    rec_masked_only: bool = False
    """Reconstruction loss over masked voxels only (SimMIM) instead of all voxels (public code)."""
    sam_steps: int = 300
    """Stage 0 (no ``--embeddings`` / ``--sam``): SAM training steps before Alice starts."""
    sam_preset: str = "tiny"

    def __post_init__(self) -> None:
        def bad(key: str, value: Any, valid: str) -> ConfigError:
            return ConfigError(f"alice.{key} = {value!r}; {valid}")

        if self.crop_size < 1 or self.mask_patch < 1 or self.crop_size % self.mask_patch:
            raise ConfigError(
                f"alice.crop_size ({self.crop_size}) must be a positive multiple of "
                f"alice.mask_patch ({self.mask_patch})"
            )
        if not 0.0 <= self.mask_ratio <= 1.0:
            raise bad("mask_ratio", self.mask_ratio, "must be in [0, 1]")
        if self.max_tries < 1:
            raise bad("max_tries", self.max_tries, "must be >= 1")
        if self.out_dim % self.casa_heads:
            raise ConfigError(
                f"alice.out_dim ({self.out_dim}) must be divisible by alice.casa_heads "
                f"({self.casa_heads}): CASA runs on the out_dim prototype logits"
            )
        if not 0.0 <= self.momentum_teacher <= 1.0 or not 0.0 <= self.center_momentum <= 1.0:
            raise ConfigError("alice.momentum_teacher and alice.center_momentum must be in [0, 1]")
        if self.student_temp <= 0:
            raise bad("student_temp", self.student_temp, "must be > 0")
        if self.teacher_temp_schedule == "epoch" and (
            self.teacher_temp_epoch_steps < 1
            or self.teacher_temp_warmup_steps % self.teacher_temp_epoch_steps
        ):
            raise ConfigError(
                f"alice.teacher_temp_warmup_steps ({self.teacher_temp_warmup_steps}) must be a multiple of "
                f"alice.teacher_temp_epoch_steps ({self.teacher_temp_epoch_steps}) with "
                "teacher_temp_schedule=epoch: the warm-up is a whole number of epochs"
            )

    def teacher_temps(self) -> tuple[float, float]:
        start, end = TAU_PRESETS[self.tau_preset]
        return (
            start if self.teacher_temp_start is None else self.teacher_temp_start,
            end if self.teacher_temp_end is None else self.teacher_temp_end,
        )


def teacher_temperature(p: AliceConfig, step: int) -> float:
    """tau_t at the global step: linear ``start -> end`` over ``teacher_temp_warmup_steps``, then ``end``
    (``step``); or the public code's per-epoch ``linspace`` (``epoch``, see ``teacher_temp_schedule``)."""
    start, end = p.teacher_temps()
    if p.teacher_temp_schedule == "epoch":
        epochs = p.teacher_temp_warmup_steps // p.teacher_temp_epoch_steps
        return epoch_linspace(step, p.teacher_temp_epoch_steps, epochs, start, end)
    return linear_warmup(step, p.teacher_temp_warmup_steps, start, end)


def distillation_terms(
    cls_loss: CenteredDistillation,
    patch_loss: CenteredDistillation,
    t_cls: torch.Tensor,
    s_cls: torch.Tensor,
    target: torch.Tensor,
    online: torch.Tensor,
    tau_t: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alice's ``(L_cls, L_patch)`` with the current centres (not updated here).

    ``t_cls``, ``s_cls``: (2B, K) teacher / student prototype logits, rows = view Q (batch) then view K;
    ``target``, ``online``: (2B, N, K) CASA outputs T and S. ``L_cls = 1/2 [H(t(Q), s(K)) + H(t(K), s(Q))]``
    (inter-volume: the teacher of one view teaches the student of the other),
    ``L_patch = 1/2 [mean H(T_Q, S_Q) + mean H(T_K, S_K)]``.
    """
    b = t_cls.shape[0] // 2
    q_to_k = cls_loss(t_cls[:b], s_cls[b:], tau_t).mean()
    k_to_q = cls_loss(t_cls[b:], s_cls[:b], tau_t).mean()
    l_cls = 0.5 * (q_to_k + k_to_q)
    h = patch_loss(target, online, tau_t)  # (2B, N)
    return l_cls, 0.5 * (h[:b].mean() + h[b:].mean())


def teacher_momentum(p: AliceConfig, step: int, max_steps: int) -> float:
    """EMA momentum at the global step: cosine ``momentum_teacher -> 1`` over all steps (DINO)."""
    return cosine_schedule(step, max_steps, p.momentum_teacher, 1.0)


@register_method("alice")
class Alice(SSLMethod):
    config_cls = AliceConfig

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__(cfg)
        p: AliceConfig = cfg.params
        self.p = p
        backbone = build_backbone(cfg.model)
        backbone.check_input((p.crop_size,) * 3, where="alice.crop_size")
        deep, dec0 = backbone.feature_channels[-1], backbone.decoder_channels[0]
        head = AliceHead(deep, deep, dec0, p.out_dim, p.head_hidden_dim, p.head_bottleneck_dim)
        self.student = AliceNet(backbone, head)
        self.teacher = make_teacher(self.student)
        self.casa = CASA(p.out_dim, p.casa_heads, p.casa_ffn_dim, p.casa_dropout)
        self.casa_teacher: nn.Module | None = (
            make_teacher(self.casa) if p.casa_target == "teacher_encoder" else None
        )
        self.cls_loss = CenteredDistillation(p.out_dim, p.student_temp, p.center_momentum)
        self.patch_loss = CenteredDistillation(p.out_dim, p.student_temp, p.center_momentum)
        self.min_volume_shape = (p.crop_size,) * 3
        self.teacher.eval()
        if self.casa_teacher is not None:
            self.casa_teacher.eval()

    def train(self, mode: bool = True) -> Alice:
        """Teachers stay in eval mode (no dropout / drop-path in the target branch, as DINO's teacher)."""
        super().train(mode)
        self.teacher.eval()
        if self.casa_teacher is not None:
            self.casa_teacher.eval()
        return self

    # -- data side ----------------------------------------------------------------------------
    @property
    def views(self) -> ViewFn:
        p = self.p
        if p.pairing == "sam" and not p.embeddings_dir:
            raise ConfigError(
                "alice.pairing=sam needs SAM embeddings: pass --embeddings DIR (from `anatssl embed`) or "
                "--sam RUN, set alice.embeddings_dir, or let `anatssl pretrain --method alice` train SAM "
                "first (stage 0, no flag); alice.pairing=random needs none"
            )
        miner = PairMiner(p.similarity_threshold, p.max_tries, p.border_margin, p.foreground_threshold)
        return AliceViews(
            p.crop_size,
            p.pairing,
            p.embeddings_dir,
            miner,
            p.mask_patch,
            p.mask_ratio,
            p.mask_shape,
            p.augment,
            mri_intensity(self.cfg.data),
        )

    def encoder(self) -> nn.Module:
        return self.student.backbone

    # -- model side ---------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        p = self.p
        q, k = batch["q"], batch["k"]
        x_t = torch.cat([q, k])  # (2B, C, S, S, S): views Q then K
        mask = torch.cat([batch["q_mask"], batch["k_mask"]]).to(torch.bool).unsqueeze(1)  # (2B, 1, S, S, S)
        x_s = x_t.masked_fill(mask, 0.0)
        tau_t = teacher_temperature(p, step)
        freeze = step < p.freeze_last_layer_steps

        s = self.student(x_s, freeze_last=freeze)
        with torch.no_grad():
            t = self.teacher(x_t, with_recon=False)

        # intra-volume token alignment through CASA
        online = self.casa(s["enc"], s["dec"])
        with torch.no_grad():
            if self.casa_teacher is None:
                target = self.casa(s["enc"].detach(), t["dec"], dropout=False)
            else:
                target = self.casa_teacher(t["enc"], t["dec"])
        # inter-volume global distillation (teacher of Q teaches student of K and vice versa) + tokens
        l_cls, l_patch = distillation_terms(
            self.cls_loss, self.patch_loss, t["cls"], s["cls"], target, online, tau_t
        )

        # reconstruction of the unmasked crop
        l_rec = p.lambda_rec * masked_or_full_mse(s["recon"], x_t, mask, p.rec_masked_only)

        loss = p.lambda_cls * l_cls + p.lambda_patch * l_patch + l_rec
        if self.training:
            self.cls_loss.update_center(t["cls"])
            self.patch_loss.update_center(target)
        out = {
            "loss": loss,
            "loss_cls": l_cls.detach(),
            "loss_patch": l_patch.detach(),
            "loss_rec": l_rec.detach(),
            "teacher_temp": torch.tensor(tau_t),
        }
        if "pair_score" in batch:
            score = batch["pair_score"].float()
            out["pair_accepted"] = batch["pair_accepted"].float().mean()
            if torch.isfinite(score).all():
                out["pair_score"] = score.mean()
        return out

    def on_step_end(self, step: int) -> None:
        m = teacher_momentum(self.p, step, self.max_steps)
        ema_update(self.teacher, self.student, m)
        if self.casa_teacher is not None:
            ema_update(self.casa_teacher, self.casa, m)

    def clip_gradients(self, max_norm: float) -> float:
        """Per-parameter clipping (DINO's ``clip_gradients``): each grad is scaled to norm <= max_norm.

        Returns the global norm before clipping, for logging.
        """
        sq = 0.0
        for prm in self.parameters():
            if prm.grad is None:
                continue
            norm = prm.grad.detach().norm(2)
            sq += float(norm) ** 2
            coef = max_norm / (norm + 1e-6)
            if coef < 1:
                prm.grad.mul_(coef)
        return sq**0.5
