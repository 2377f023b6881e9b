"""VoCo's projector (Wu et al., CVPR 2024; public code ``models/voco_head.py``): every encoder stage
globally average-pooled and concatenated, then ``Linear -> BN -> ReLU -> Linear -> BN -> ReLU -> Linear``
(2048 -> 2048 -> 2048 in the public code). BatchNorm without affine parameters and without running
statistics, as the public code: it always normalises with the statistics of the current batch (all
base and random crops of the step together), in training and in evaluation alike.
"""

from __future__ import annotations

import torch
from torch import nn


class VoCoProjectionHead(nn.Module):
    """list of (M, C_s, ...) encoder stages -> (M, out_dim) crop projections."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 2048) -> None:
        super().__init__()

        def bn() -> nn.BatchNorm1d:
            return nn.BatchNorm1d(hidden_dim, affine=False, track_running_stats=False)

        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            bn(),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            bn(),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    @staticmethod
    def pool(stages: list[torch.Tensor]) -> torch.Tensor:
        """Global average of every stage, concatenated: (M, sum C_s)."""
        return torch.cat([s.flatten(2).mean(dim=2) for s in stages], dim=1)

    def forward(self, stages: list[torch.Tensor]) -> torch.Tensor:
        return self.mlp(self.pool(stages))
