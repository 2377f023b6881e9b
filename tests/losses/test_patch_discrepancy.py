"""L_p2p: balanced BCE pinned to hand-computed numbers; the loss prefers the true correspondence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from anatssl.losses.patch_discrepancy import balanced_bce, patch_discrepancy_loss


def test_balanced_bce_hand_computed() -> None:
    p = torch.tensor([[[0.8, 0.1], [0.3, 0.6]]])
    g = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    pos = -(math.log(0.8) + math.log(0.6)) / 2
    neg = -(math.log(0.9) + math.log(0.7)) / 2
    torch.testing.assert_close(balanced_bce(p, g), torch.tensor(pos + neg))


def test_balanced_bce_skips_layers_without_positives_in_the_positive_mean() -> None:
    p = torch.tensor([[[0.8, 0.1], [0.3, 0.6]], [[0.5, 0.5], [0.5, 0.5]]])
    g = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    pos = -(math.log(0.8) + math.log(0.6)) / 2  # only layer 0 has positives
    neg = (-(math.log(0.9) + math.log(0.7)) / 2 + -math.log(0.5)) / 2
    torch.testing.assert_close(balanced_bce(p, g), torch.tensor(pos + neg))


def test_balanced_bce_clamps_zero_and_one() -> None:
    p = torch.tensor([[[0.0, 1.0]]])
    g = torch.tensor([[[1.0, 0.0]]])
    expected = -2 * math.log(1e-6)
    torch.testing.assert_close(balanced_bce(p, g), torch.tensor(expected), rtol=1e-3, atol=0)  # fp32 1-1e-6


@pytest.mark.parametrize("matcher", ["sinkhorn", "dual_softmax"])
def test_true_correspondence_scores_lower_than_a_wrong_one(matcher: str) -> None:
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(2, 16, 32, generator=g), dim=-1)
    eye = torch.eye(16).expand(2, -1, -1)
    wrong = torch.roll(eye, 1, dims=2)
    right_loss, prob = patch_discrepancy_loss(z, z, eye, tau=0.07, matcher=matcher)
    wrong_loss, _ = patch_discrepancy_loss(z, z, wrong, tau=0.07, matcher=matcher)
    assert prob.shape == (2, 16, 16)
    assert float(right_loss) < 0.5 < float(wrong_loss)


def test_unknown_matcher() -> None:
    z = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="dual_softmax"):
        patch_discrepancy_loss(z, z, torch.zeros(1, 2, 2), tau=0.1, matcher="hungarian")
