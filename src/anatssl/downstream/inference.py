"""Whole-volume prediction with MONAI's sliding-window inference (Swin-UNETR's evaluation protocol)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from anatssl.engine.device import autocast
from anatssl.models.boundary import plain


@torch.no_grad()
def predict_volume(
    net: nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    sw_batch_size: int = 2,
    overlap: float = 0.5,
    mode: str = "gaussian",
    amp: str = "none",
    channels_last: bool = False,
) -> torch.Tensor:
    """(1, C, X, Y, Z) image of any size -> (1, K, X, Y, Z) fp32 logits.

    Windows of ``roi_size`` overlap by ``overlap`` (0.5 as in Swin-UNETR / MONAI's BTCV tutorial) and
    are blended with Gaussian weights, so predictions near window borders count less. Volumes smaller
    than the window are padded by MONAI and cropped back. ``amp`` (resolved: ``none``, ``bf16``,
    ``fp16``): the network runs under autocast, each window's logits are cast to fp32 before MONAI
    blends them, so the Gaussian-weighted sum and the later softmax/argmax are fp32.
    """
    device = next(net.parameters()).device

    def predictor(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with autocast(device, amp):
            y = net(x)
        return y.float()

    was_training = net.training
    net.eval()
    try:
        out = sliding_window_inference(
            plain(image),  # the network gets plain tensors; the caller keeps the affine
            roi_size=tuple(roi_size),
            sw_batch_size=sw_batch_size,
            predictor=predictor,
            overlap=overlap,
            mode=mode,
        )
    finally:
        net.train(was_training)
    return out  # type: ignore[return-value]
