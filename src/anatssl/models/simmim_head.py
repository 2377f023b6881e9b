"""SimMIM's one-layer prediction head (Xie et al., CVPR 2022), in 3D."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class PixelShuffleHead(nn.Module):
    """(B, C_f, x, y, z) -> (B, C_out, s*x, s*y, s*z): a 1x1x1 conv to ``s^3 * C_out`` then a 3D shuffle."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.out_ch = out_ch
        self.proj = nn.Conv3d(in_ch, stride**3 * out_ch, kernel_size=1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        s = self.stride
        return rearrange(self.proj(feat), "b (c p q r) x y z -> b c (x p) (y q) (z r)", p=s, q=s, r=s)
