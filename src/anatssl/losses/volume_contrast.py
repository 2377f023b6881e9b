"""VoCo's volume-contrast loss and its base-crop regulariser (Wu, Zhuang, Chen, "VoCo: A Simple-yet-
Effective Volume Contrastive Learning Framework for 3D Medical Image Analysis", CVPR 2024, Sec. 3.3).

* Logits (Eq. 2): ``l_ik = max(0, cos(p_i, q_k))`` between the projection ``p_i`` of random crop i and
  ``q_k`` of base crop k. The clamp at 0 is the public code's ``F.relu``; it keeps ``|y - l| <= 1`` so
  that the log below stays finite.
* Prediction loss (Eq. 3): ``L_pred = -1/K sum_k log(1 - |y_ik - l_ik|)`` with ``y_ik`` the overlap of
  crop i with base crop k (``views.voco.overlap_fractions``), averaged over the random crops and the
  batch. The same term for every base crop, overlapping or not (the public code splits it into a
  positive and a squared negative part; see docs/methods/voco.md).
* Regulariser (Eq. 4-5): ``L_reg = 2 / (K (K - 1)) sum_{k < m} |cos(q_k, q_m)|``: base crops of
  different regions should be orthogonal, so that they can act as class centres. ``form="code"`` is
  the public code's variant, ``max(0, cos)^2`` with the second crop of each pair detached.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

_EPS = 1e-6
"""Inside the log, as the public code: ``log(1 - |y - l| + 1e-6)``."""


def volume_contrast_logits(crops: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """(B, N, D) random-crop and (B, K, D) base-crop projections -> (B, N, K) ``max(0, cos)``, float32."""
    p = F.normalize(crops.float(), dim=-1)
    q = F.normalize(bases.float(), dim=-1)
    return torch.einsum("bnd,bkd->bnk", p, q).clamp_min(0.0)


def position_prediction_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """(B, N, K) logits in [0, 1] and overlap targets -> scalar ``mean(-log(1 - |y - l| + eps))``."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    return -torch.log(1.0 - (targets.float() - logits.float()).abs() + eps).mean()


def base_regularization_loss(bases: torch.Tensor, form: Literal["paper", "code"] = "paper") -> torch.Tensor:
    """(B, K, D) base-crop projections -> scalar: the mean over the K (K - 1) / 2 pairs k < m of
    ``|cos(q_k, q_m)|`` (``paper``) or ``max(0, cos(q_k, sg(q_m)))^2`` (``code``), then over the batch."""
    k = bases.shape[1]
    if k < 2:
        raise ValueError(f"the regulariser needs at least 2 base crops, got {k}")
    q = F.normalize(bases.float(), dim=-1)
    if form == "paper":
        sim = (q @ q.transpose(1, 2)).abs()
    elif form == "code":
        sim = (q @ q.detach().transpose(1, 2)).clamp_min(0.0) ** 2
    else:
        raise ValueError(f"form = {form!r}; valid values: 'paper', 'code'")
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=bases.device), diagonal=1)
    return sim[:, upper].mean()
