"""``swin``: the Swin-UNETR encoder-decoder (Hatamizadeh et al. 2022), the framework's default backbone.

Submodule names follow MONAI's ``SwinUNETR`` exactly (``swinViT``, ``encoder1..4``, ``encoder10``,
``decoder1..5``) so that our state dict *is* a SwinUNETR state dict minus its ``out`` layer: an
exported encoder loads into ``SwinUNETR(...).swinViT`` with a strict key match, and Tang et al.'s
weights load back into ours.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import UnetrBasicBlock, UnetrUpBlock
from torch import nn

from anatssl.config.schema import ModelConfig
from anatssl.errors import ConfigError
from anatssl.models.backbones.base import Backbone, register_backbone
from anatssl.models.backbones.swin_vit import SwinViT


class SwinBackbone(Backbone):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if len(cfg.depths) != 4 or len(cfg.num_heads) != 4:
            raise ConfigError(
                f"model.depths and model.num_heads need 4 entries for swin, "
                f"got {cfg.depths} / {cfg.num_heads}"
            )
        fs = cfg.feature_size
        if fs % 12:
            raise ConfigError(f"model.feature_size must be a multiple of 12 for swin, got {fs}")
        self.swinViT = SwinViT(
            in_chans=cfg.in_channels,
            embed_dim=fs,
            window_size=(cfg.window_size,) * 3,
            depths=tuple(cfg.depths),
            num_heads=tuple(cfg.num_heads),
            drop_path_rate=cfg.drop_path_rate,
            use_checkpoint=cfg.grad_checkpoint,
            use_v2=cfg.use_v2,
        )

        def enc(cin: int, cout: int) -> UnetrBasicBlock:
            return UnetrBasicBlock(
                3, cin, cout, kernel_size=3, stride=1, norm_name="instance", res_block=True
            )

        def up(cin: int, cout: int) -> UnetrUpBlock:
            return UnetrUpBlock(
                3, cin, cout, kernel_size=3, upsample_kernel_size=2, norm_name="instance", res_block=True
            )

        self.encoder1 = enc(cfg.in_channels, fs)
        self.encoder2 = enc(fs, fs)
        self.encoder3 = enc(2 * fs, 2 * fs)
        self.encoder4 = enc(4 * fs, 4 * fs)
        self.encoder10 = enc(16 * fs, 16 * fs)
        self.decoder5 = up(16 * fs, 8 * fs)
        self.decoder4 = up(8 * fs, 4 * fs)
        self.decoder3 = up(4 * fs, 2 * fs)
        self.decoder2 = up(2 * fs, fs)
        self.decoder1 = up(fs, fs)
        self.recon_head = nn.Conv3d(fs, cfg.in_channels, kernel_size=1)
        self.feature_channels = [fs, 2 * fs, 4 * fs, 8 * fs, 16 * fs]
        self.feature_strides = [2, 4, 8, 16, 32]
        self.decoder_channels = [8 * fs, 4 * fs, 2 * fs, fs, fs]
        self.decoder_strides = [16, 8, 4, 2, 1]
        self.input_multiple = 32
        self.decoder_prefixes = (
            "encoder1.",
            "encoder2.",
            "encoder3.",
            "encoder4.",
            "encoder10.",
            "decoder",
            "recon_head.",
        )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """-> swinViT's 5 layer-normalised outputs [h0 (s2), h1 (s4), h2 (s8), h3 (s16), h4 (s32)]."""
        return list(self.swinViT(x, normalize=True))

    def decode(self, x: torch.Tensor, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """SwinUNETR's decoder path -> [dec3 (s16), dec2 (s8), dec1 (s4), dec0 (s2), out (s1)]."""
        hs = feats
        enc0 = self.encoder1(x)
        enc1 = self.encoder2(hs[0])
        enc2 = self.encoder3(hs[1])
        enc3 = self.encoder4(hs[2])
        dec4 = self.encoder10(hs[4])
        dec3 = self.decoder5(dec4, hs[3])
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        dec0 = self.decoder2(dec1, enc1)
        out = self.decoder1(dec0, enc0)
        return [dec3, dec2, dec1, dec0, out]


@register_backbone("swin")
def build_swin(cfg: ModelConfig) -> Backbone:
    return SwinBackbone(cfg)
