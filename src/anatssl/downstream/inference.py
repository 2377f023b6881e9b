"""Whole-volume prediction with MONAI's sliding-window inference (Swin-UNETR's evaluation protocol)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import nn


@torch.no_grad()
def predict_volume(
    net: nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    sw_batch_size: int = 2,
    overlap: float = 0.5,
    mode: str = "gaussian",
) -> torch.Tensor:
    """(1, C, X, Y, Z) image of any size -> (1, K, X, Y, Z) logits.

    Windows of ``roi_size`` overlap by ``overlap`` (0.5 as in Swin-UNETR / MONAI's BTCV tutorial) and
    are blended with Gaussian weights, so predictions near window borders count less. Volumes smaller
    than the window are padded by MONAI and cropped back.
    """
    was_training = net.training
    net.eval()
    try:
        out = sliding_window_inference(
            image,
            roi_size=tuple(roi_size),
            sw_batch_size=sw_batch_size,
            predictor=net,
            overlap=overlap,
            mode=mode,
        )
    finally:
        net.train(was_training)
    return out  # type: ignore[return-value]
