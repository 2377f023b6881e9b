"""Self-distillation cross-entropy with a centred, sharpened teacher (DINO / iBOT / Alice).

``H(t, s) = - sum_k softmax((t - c) / tau_t)_k * log softmax(s / tau_s)_k`` over the last dimension
(Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, eq. 2-4;
Zhou et al., "iBOT", ICLR 2022; Jiang et al., "Alice", ICCV 2023, eq. 1-3).

Centring (subtracting ``c``) and sharpening (a low teacher temperature ``tau_t``) together prevent
collapse: centring alone pushes towards the uniform distribution, sharpening alone towards one
prototype. The centre is an EMA of the teacher's batch means (momentum 0.9, DINO's default), computed
over all ranks when a process group exists so that every rank centres with the same vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anatssl.engine.distributed import all_reduce_mean


def distillation_cross_entropy(
    teacher: torch.Tensor,
    student: torch.Tensor,
    center: torch.Tensor | float,
    teacher_temp: float,
    student_temp: float,
) -> torch.Tensor:
    """``(..., K)`` teacher and student logits -> ``(...)`` cross-entropy ``H(t, s)``.

    The teacher side is detached (no gradient flows into the teacher or the centre). Computed in float32
    whatever the autocast dtype: with tau_t = 0.008 the teacher logits are scaled by 125, beyond what
    bf16's 8-bit mantissa resolves.
    """
    if teacher.shape != student.shape:
        raise ValueError(
            f"teacher logits {tuple(teacher.shape)} and student logits {tuple(student.shape)} "
            "must have the same shape"
        )
    t = F.softmax((teacher.detach().float() - center) / teacher_temp, dim=-1)
    log_s = F.log_softmax(student.float() / student_temp, dim=-1)
    return -(t * log_s).sum(dim=-1)


class CenteredDistillation(nn.Module):
    """Cross-entropy to a centred teacher, holding the centre ``(1, K)`` as a buffer (so it is checkpointed).

    ``student_temp`` = 0.1 (DINO / iBOT / Alice). The teacher temperature varies with the step and is
    passed in each call (see ``anatssl.methods.alice.teacher_temperature``).
    """

    center: torch.Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim}")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum}")
        if student_temp <= 0:
            raise ValueError(f"student_temp must be > 0, got {student_temp}")
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, teacher: torch.Tensor, student: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """``(..., K)`` logits -> ``(...)`` per-row cross-entropy with the current centre."""
        return distillation_cross_entropy(teacher, student, self.center, teacher_temp, self.student_temp)

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """``c <- m c + (1 - m) mean(teacher)``, the mean over every row of ``(..., K)`` and all ranks."""
        batch_center = teacher.detach().reshape(-1, teacher.shape[-1]).float().mean(dim=0, keepdim=True)
        batch_center = all_reduce_mean(batch_center)
        self.center.mul_(self.center_momentum).add_(
            batch_center.to(self.center.dtype), alpha=1.0 - self.center_momentum
        )
