"""Weights of a 1-channel network into a 4-channel one (CT -> BraTS): the input kernels are adapted by
the mean rule and the adapted network answers a replicated input exactly as the original answered the
single channel."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SwinUNETR

from anatssl.downstream.channels import adapt_input_channels, adapt_state_dict, input_channel_mismatches
from anatssl.downstream.weights import load_backbone_weights
from anatssl.errors import CheckpointError


def test_mean_rule_by_hand() -> None:
    w = torch.tensor([[[1.0]], [[2.0]]]).reshape(2, 1, 1, 1, 1)  # 2 output channels, 1 input
    w = torch.cat([w, 3 * w], dim=1)  # (2, 2, 1, 1, 1): input channels [1, 3] and [2, 6]
    out = adapt_input_channels(w, 4)
    assert out.shape == (2, 4, 1, 1, 1)
    assert out[0, :, 0, 0, 0].tolist() == [1.0, 1.0, 1.0, 1.0]  # (1 + 3) / 4
    assert out[1, :, 0, 0, 0].tolist() == [2.0, 2.0, 2.0, 2.0]  # (2 + 6) / 4


def test_only_input_axis_mismatches_are_adapted() -> None:
    own = {"a": torch.zeros(8, 4, 3, 3, 3), "b": torch.zeros(8, 4, 3, 3, 3), "c": torch.zeros(4, 8, 1, 1, 1)}
    mapped = {"a": torch.ones(8, 1, 3, 3, 3), "b": torch.ones(8, 4, 3, 3, 3), "c": torch.ones(1, 8, 1, 1, 1)}
    assert input_channel_mismatches(mapped, own) == {"a": (1, 4)}  # c differs in dim 0: not an input
    with pytest.raises(CheckpointError, match=r"\(a 1 -> 4\) and the input-channel policy is 'refuse'"):
        adapt_state_dict(mapped, own, "w.pt", policy="refuse")


def test_one_channel_swinunetr_into_four_channels_gives_the_same_output_on_replicated_input() -> None:
    torch.manual_seed(0)
    one = SwinUNETR(in_channels=1, out_channels=3, feature_size=12).eval()
    four = SwinUNETR(in_channels=4, out_channels=3, feature_size=12).eval()
    report = load_backbone_weights(four, one.state_dict(), "ct.pt", skip_prefixes=())
    assert report.adapted == {
        "swinViT.patch_embed.proj.weight": (1, 4),
        "encoder1.layer.conv1.conv.weight": (1, 4),
        "encoder1.layer.conv3.conv.weight": (1, 4),
    }
    assert not report.missing and not report.unexpected
    assert "input channels adapted 1 -> 4" in report.describe()
    # The image is read by two modules only, swinViT (patch embedding) and encoder1; every other module
    # reads their outputs. Equal outputs of both on the replicated input make the whole network's equal.
    x = torch.randn(1, 1, 32, 32, 32)
    x4 = x.repeat(1, 4, 1, 1, 1)
    with torch.no_grad():
        for ref, got in zip(one.swinViT(x), four.swinViT(x4), strict=True):
            torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(four.encoder1(x4), one.encoder1(x), atol=2e-5, rtol=1e-4)
        x_one_channel_only = torch.cat([x, torch.zeros(1, 3, 32, 32, 32)], dim=1)
        other = four.encoder1(x_one_channel_only)
    assert (other - one.encoder1(x)).abs().max() > 1e-2  # not a trivial equality: one channel alone differs
