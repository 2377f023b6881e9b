"""DINO / iBOT / Alice cross-entropy with centring and temperatures, pinned to hand-computed values."""

from __future__ import annotations

import pytest
import torch

from anatssl.losses.distillation import CenteredDistillation, distillation_cross_entropy

# 2 rows x 3 prototypes. By hand, row 1: (t - c) / 0.5 = [1, 4, 7]
# -> softmax [0.0023556, 0.0473142, 0.9503302];
# s / 0.5 = [0.6, 0.2, -0.4], logsumexp = ln(1.822119 + 1.221403 + 0.670320) = 1.312065
# -> H = 0.0023556 * 0.712065 + 0.0473142 * 1.112065 + 0.9503302 * 1.712065 = 1.681323.
# Row 2: (t - c) / 0.5 = [-1, 0, 3] -> softmax [0.0171478, 0.0466126, 0.9362396]; s / 0.5 = [2, 0, 0],
# logsumexp = ln(e^2 + 2) = 2.239539 -> H = 0.0171478 * 0.239539 + 0.9828522 * 2.239539 = 2.205249.
T = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
S = torch.tensor([[0.3, 0.1, -0.2], [1.0, 0.0, 0.0]])
C = torch.tensor([[0.5, 0.0, -0.5]])
EXPECTED = torch.tensor([1.681323, 2.205249])


def test_cross_entropy_matches_hand_computed_values() -> None:
    h = distillation_cross_entropy(T, S, C, teacher_temp=0.5, student_temp=0.5)
    assert h.shape == (2,)
    torch.testing.assert_close(h, EXPECTED, atol=1e-5, rtol=0)


def test_module_uses_its_centre_buffer() -> None:
    loss = CenteredDistillation(3, student_temp=0.5)
    loss.center.copy_(C)
    torch.testing.assert_close(loss(T, S, teacher_temp=0.5), EXPECTED, atol=1e-5, rtol=0)
    assert "center" in loss.state_dict()


def test_centring_matters() -> None:
    no_centre = distillation_cross_entropy(T, S, 0.0, 0.5, 0.5)
    assert not torch.allclose(no_centre, EXPECTED, atol=1e-3)


def test_centre_update_is_ema_of_teacher_batch_mean() -> None:
    loss = CenteredDistillation(3, center_momentum=0.9)
    loss.center.copy_(C)
    loss.update_center(T)
    # 0.9 * [0.5, 0, -0.5] + 0.1 * mean rows [0.5, 1, 2] = [0.5, 0.1, -0.25]
    torch.testing.assert_close(loss.center, torch.tensor([[0.5, 0.1, -0.25]]))
    # token logits (B, N, K): the mean runs over batch and tokens
    loss.update_center(torch.ones(2, 4, 3))
    torch.testing.assert_close(loss.center, torch.tensor([[0.55, 0.19, -0.125]]))


def test_gradient_reaches_student_only() -> None:
    t = T.clone().requires_grad_(True)
    s = S.clone().requires_grad_(True)
    distillation_cross_entropy(t, s, C, 0.04, 0.1).sum().backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="same shape"):
        distillation_cross_entropy(T, S[:, :2], 0.0, 0.1, 0.1)
    with pytest.raises(ValueError, match="center_momentum"):
        CenteredDistillation(3, center_momentum=1.5)
