"""ema_update: the EMA formula, buffer copying, no gradients, and argument checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from anatssl.models.ema import ema_update, make_teacher


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_ema_formula_and_buffers() -> None:
    student = _net()
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    student.train()
    student(torch.randn(8, 3))  # changes BatchNorm running stats
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, momentum=0.9)
    for name, p in teacher.named_parameters():
        expected = 0.9 * before[name] + 0.1 * dict(student.named_parameters())[name].detach()
        torch.testing.assert_close(p, expected)
    for name, b in student.named_buffers():
        torch.testing.assert_close(dict(teacher.named_buffers())[name], b)
    assert all(p.grad is None for p in teacher.parameters())


def test_momentum_one_freezes_and_zero_copies() -> None:
    student = _net()
    teacher = make_teacher(student)
    with torch.no_grad():
        student[0].weight.mul_(3.0)
    frozen = teacher[0].weight.clone()
    ema_update(teacher, student, 1.0)
    torch.testing.assert_close(teacher[0].weight, frozen)
    ema_update(teacher, student, 0.0)
    torch.testing.assert_close(teacher[0].weight, student[0].weight)


def test_mismatched_modules_and_bad_momentum() -> None:
    with pytest.raises(ValueError, match="momentum"):
        ema_update(_net(), _net(), 1.5)
    with pytest.raises(ValueError, match="differ"):
        ema_update(nn.Linear(3, 4), nn.Sequential(nn.Linear(3, 4)), 0.5)
    with pytest.raises(ValueError, match="shape mismatch"):
        ema_update(nn.Linear(3, 4), nn.Linear(3, 5), 0.5)
