"""Swin transformer encoder with MONAI's ``SwinTransformer`` parameter names.

Placeholder: MONAI's implementation; replaced by the fused-attention encoder (issue: fast Swin).
"""

from __future__ import annotations

from monai.networks.nets.swin_unetr import SwinTransformer


class SwinViT(SwinTransformer):
    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        window_size: tuple[int, int, int],
        depths: tuple[int, ...],
        num_heads: tuple[int, ...],
        drop_path_rate: float = 0.0,
        use_checkpoint: bool = False,
        use_v2: bool = False,
    ) -> None:
        super().__init__(
            in_chans=in_chans,
            embed_dim=embed_dim,
            window_size=window_size,
            patch_size=(2, 2, 2),
            depths=depths,
            num_heads=num_heads,
            drop_path_rate=drop_path_rate,
            use_checkpoint=use_checkpoint,
            spatial_dims=3,
            use_v2=use_v2,
        )
