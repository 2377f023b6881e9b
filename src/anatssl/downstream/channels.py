"""Weights of a C_file-channel network into a C_model-channel one (CT weights into a 4-sequence BraTS
network: VoCo #2/#7, research-contributions PR #202, MONAI #391).

Only the input layers differ: their kernels are ``(out, C, k, k, k)`` where the rest of the network is
the same. The ``mean`` policy gives every new input channel the mean of the file's channels, scaled by
``C_file / C_model``::

    W'[:, j] = sum_c W[:, c] / C_model        for j = 1 .. C_model

so a C_model-channel input that repeats one image in every channel produces exactly the response the
file's network gave that image on its C_file channels (``sum_j W'[:, j] x = sum_c W[:, c] x``): the
pretrained features start where they were, and fine-tuning learns what each sequence adds. This is
timm's ``adapt_input_conv`` rule for 3D kernels and any channel counts, written here because timm's
version is 2D-only and RGB-specific (it special-cases 3 input channels).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

from anatssl.errors import CheckpointError

ChannelPolicy = Literal["mean", "refuse"]
CHANNEL_POLICIES: tuple[str, ...] = ("mean", "refuse")


def input_channel_mismatches(
    mapped: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]
) -> dict[str, tuple[int, int]]:
    """``{key: (C_file, C_model)}`` for the kernels that differ from the model's in their input-channel
    axis (dim 1) only: convolution weights (ndim >= 3) whose every other dimension agrees."""
    out: dict[str, tuple[int, int]] = {}
    for k, v in mapped.items():
        m = own.get(k)
        if m is None or v.ndim < 3 or v.ndim != m.ndim or v.shape == m.shape:
            continue
        if v.shape[0] == m.shape[0] and v.shape[2:] == m.shape[2:] and v.shape[1] != m.shape[1]:
            out[k] = (int(v.shape[1]), int(m.shape[1]))
    return out


def adapt_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """(O, C_file, *k) kernel -> (O, ``channels``, *k) by the ``mean`` rule of the module docstring."""
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    summed = weight.sum(dim=1, keepdim=True) / channels
    return summed.expand(weight.shape[0], channels, *weight.shape[2:]).clone().to(weight.dtype)


def adapt_state_dict(
    mapped: dict[str, torch.Tensor],
    own: Mapping[str, torch.Tensor],
    source: str,
    policy: ChannelPolicy = "mean",
) -> tuple[dict[str, torch.Tensor], dict[str, tuple[int, int]]]:
    """Adapt the input-channel mismatches of ``mapped`` to ``own``'s shapes -> (new dict, adapted
    ``{key: (C_file, C_model)}``). The file's channel count must be one number across the adapted keys
    (one input layer may feed several kernels: Swin's patch embedding and UNETR's encoder1 both read the
    image); ``policy="refuse"`` raises instead, naming the keys."""
    if policy not in CHANNEL_POLICIES:
        raise ValueError(f"policy must be one of {CHANNEL_POLICIES}, got {policy!r}")
    found = input_channel_mismatches(mapped, own)
    if not found:
        return mapped, {}
    pairs = sorted(set(found.values()))
    listing = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in found.items())
    if policy == "refuse" or len(pairs) > 1:
        why = (
            "the input-channel policy is 'refuse'"
            if policy == "refuse"
            else f"the kernels disagree on the channel counts ({pairs})"
        )
        raise CheckpointError(
            f"{source} was trained with another number of input channels ({listing}) and {why}; "
            "set model.in_channels to the file's count, or use the 'mean' policy"
        )
    out = dict(mapped)
    for k, (_, c_model) in found.items():
        out[k] = adapt_input_channels(mapped[k], c_model)
    return out, found
