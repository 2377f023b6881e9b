"""Tang et al.'s (CVPR 2022) reconstruction head of the Swin-UNETR pretraining."""

from __future__ import annotations

from torch import nn


class UpsampleReconHead(nn.Sequential):
    """Tang et al.'s light decoder: per level x2 trilinear upsampling -> conv3x3 -> IN -> LeakyReLU.

    (Upsampling first so that instance norm never sees a 1x1x1 map from a small crop.)
    """

    def __init__(self, in_ch: int, out_ch: int, levels: int = 5) -> None:
        layers: list[nn.Module] = []
        ch = in_ch
        for _ in range(levels):
            nxt = max(ch // 2, 8)
            layers += [
                nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
                nn.Conv3d(ch, nxt, kernel_size=3, padding=1),
                nn.InstanceNorm3d(nxt),
                nn.LeakyReLU(inplace=True),
            ]
            ch = nxt
        layers.append(nn.Conv3d(ch, out_ch, kernel_size=1))
        super().__init__(*layers)
