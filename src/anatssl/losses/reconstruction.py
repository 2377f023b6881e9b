"""Reconstruction losses: the masked-image-modelling terms (SimMIM, Alice's L_rec) and Models Genesis'
restoration loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over masked voxels: sum(|d| * m) / (sum(m) * C). (B,C,...) x (B,1,...)."""
    diff = (pred.float() - target.float()).abs() * mask
    return diff.sum() / (mask.sum() * pred.shape[1]).clamp_min(1.0)


def masked_or_full_mse(
    recon: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, masked_only: bool
) -> torch.Tensor:
    """Alice's L_rec before its weight: MSE over all voxels (the public code), or over the masked voxels
    only (``masked_only``, SimMIM's choice). ``mask``: (B, 1, ...) bool, True = masked."""
    if masked_only:
        m = mask.expand_as(target).to(target.dtype)
        return ((recon - target) ** 2 * m).sum() / m.sum().clamp_min(1.0)
    return F.mse_loss(recon, target)


def restoration_mse(restored: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Models Genesis' restoration loss (Zhou et al., MICCAI 2019 / MedIA 2021; the public code's
    ``nn.MSELoss``): mean over every voxel and channel of ``(restored - original)^2``, in float32 whatever
    the autocast dtype. (B, C, X, Y, Z) x (B, C, X, Y, Z) -> scalar. Every voxel counts, corrupted or not:
    the network must undo the corruptions and also leave the untouched voxels alone."""
    if restored.shape != original.shape:
        raise ValueError(
            f"restored {tuple(restored.shape)} and original {tuple(original.shape)} must have the same shape"
        )
    return F.mse_loss(restored.float(), original.float())
