"""``conv``: a small 3D U-Net-style CNN encoder-decoder for fast CPU runs and tests.

Same interface and strides as ``swin`` (encoder features at strides 2..32, widths
``feature_size * (1, 2, 4, 8, 16)``, a full-resolution skip computed from the input in ``decode``),
so every method runs on either.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import UnetrBasicBlock, UnetrUpBlock
from torch import nn

from anatssl.config.schema import ModelConfig
from anatssl.models.backbones.base import Backbone, register_backbone


class _Down(nn.Sequential):
    """Strided 2x2x2 conv (the analogue of patch embedding / patch merging) + a 3x3x3 conv.

    GroupNorm rather than InstanceNorm: the deepest map of a small crop can be 1x1x1, where
    instance statistics are undefined.
    """

    def __init__(self, cin: int, cout: int) -> None:
        groups = 4 if cout % 4 == 0 else 1
        super().__init__(
            nn.Conv3d(cin, cout, kernel_size=2, stride=2),
            nn.GroupNorm(groups, cout),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(cout, cout, kernel_size=3, padding=1),
            nn.GroupNorm(groups, cout),
            nn.LeakyReLU(0.01, inplace=True),
        )


class ConvBackbone(Backbone):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        fs = cfg.feature_size
        ch = [fs, 2 * fs, 4 * fs, 8 * fs, 16 * fs]
        self.down = nn.ModuleList([_Down(cfg.in_channels if i == 0 else ch[i - 1], ch[i]) for i in range(5)])
        self.skip0 = UnetrBasicBlock(
            3, cfg.in_channels, fs, kernel_size=3, stride=1, norm_name="instance", res_block=True
        )
        # up[k] takes the deeper map (ch[4-k]) and the skip at the next finer level
        self.up = nn.ModuleList(
            [
                UnetrUpBlock(
                    3,
                    ch[i],
                    ch[i - 1] if i > 0 else fs,
                    kernel_size=3,
                    upsample_kernel_size=2,
                    norm_name="instance",
                    res_block=True,
                )
                for i in reversed(range(5))
            ]
        )
        self.recon_head = nn.Conv3d(fs, cfg.in_channels, kernel_size=1)
        self.feature_channels = ch
        self.feature_strides = [2, 4, 8, 16, 32]
        self.decoder_channels = [ch[3], ch[2], ch[1], ch[0], fs]
        self.decoder_strides = [16, 8, 4, 2, 1]
        self.input_multiple = 32
        self.decoder_prefixes = ("skip0.", "up.", "recon_head.")

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        h = x
        for block in self.down:
            h = block(h)
            feats.append(h)
        return feats

    def decode(self, x: torch.Tensor, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        skips = [self.skip0(x), *feats[:-1]]
        out = []
        h = feats[-1]
        for k, block in enumerate(self.up):
            h = block(h, skips[len(skips) - 1 - k])
            out.append(h)
        return out


@register_backbone("conv")
def build_conv(cfg: ModelConfig) -> Backbone:
    return ConvBackbone(cfg)
