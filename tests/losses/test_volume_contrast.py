"""VoCo's prediction loss and base-crop regulariser against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from anatssl.losses.volume_contrast import (
    base_regularization_loss,
    position_prediction_loss,
    volume_contrast_logits,
)

S = 1 / math.sqrt(2)


def test_logits_are_clamped_cosines() -> None:
    p = torch.tensor([[[2.0, 0.0], [1.0, 1.0]]])  # (1, 2, 2): lengths must not matter
    q = torch.tensor([[[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]])  # (1, 3, 2)
    want = torch.tensor([[[1.0, 0.0, 0.0], [S, S, 0.0]]])  # cos(p1, q3) = -1 -> 0
    torch.testing.assert_close(volume_contrast_logits(p, q), want)


def test_prediction_loss_by_hand() -> None:
    logits = torch.tensor([[[1.0, 0.0, 0.0]]])
    targets = torch.tensor([[[0.5, 0.5, 0.0]]])
    # -(log(1 - 0.5) + log(1 - 0.5) + log(1 - 0)) / 3 = 2 ln 2 / 3 (eps 0 for the exact value)
    assert float(position_prediction_loss(logits, targets, eps=0.0)) == pytest.approx(2 * math.log(2) / 3)
    assert float(position_prediction_loss(targets, targets)) == pytest.approx(
        -1e-6, abs=1e-7
    )  # perfect: -log(1 + eps)
    two = torch.tensor([[[0.25, 0.75]], [[0.0, 1.0]]])  # batch of 2, one crop, two bases
    pred = torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]])
    want = -(math.log(0.75) + math.log(0.75) + 0 + 0) / 4
    assert float(position_prediction_loss(pred, two, eps=0.0)) == pytest.approx(want)
    with pytest.raises(ValueError, match="shape"):
        position_prediction_loss(pred, two[:, :, :1])


def test_regularizer_by_hand() -> None:
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # cos: (1,2) 0, (1,3) -1, (2,3) 0
    assert float(base_regularization_loss(q, "paper")) == pytest.approx(1 / 3)  # mean |cos| over 3 pairs
    assert float(base_regularization_loss(q, "code")) == pytest.approx(0.0)  # relu(-1)^2 = 0
    r = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # cos: 0, 1/sqrt2, 1/sqrt2
    assert float(base_regularization_loss(r, "paper")) == pytest.approx(2 * S / 3)
    assert float(base_regularization_loss(r, "code")) == pytest.approx((0 + 0.5 + 0.5) / 3)
    both = torch.cat([q, r])  # the batch mean of the two volumes
    assert float(base_regularization_loss(both, "paper")) == pytest.approx((1 / 3 + 2 * S / 3) / 2)
    orthogonal = torch.eye(4)[None]
    assert float(base_regularization_loss(orthogonal)) == 0.0


def test_code_form_detaches_the_second_crop_of_each_pair() -> None:
    q = torch.tensor([[[1.0, 0.2], [0.5, 1.0]]], requires_grad=True)
    base_regularization_loss(q, "code").backward()
    assert q.grad is not None and q.grad[0, 0].abs().sum() > 0 and q.grad[0, 1].abs().sum() == 0
    q.grad = None
    base_regularization_loss(q, "paper").backward()
    assert q.grad is not None and q.grad[0, 1].abs().sum() > 0
    with pytest.raises(ValueError, match="at least 2"):
        base_regularization_loss(q[:, :1])
