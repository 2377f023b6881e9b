"""Exponential-moving-average teachers (BYOL / MoCo v3 / DINO / S2DC): one generic helper.

``teacher = momentum * teacher + (1 - momentum) * student`` over parameters matched by name;
buffers (BatchNorm running statistics, queues that belong to the module) are copied. The teacher
never receives gradients.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` with ``requires_grad=False`` everywhere."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place: teacher params <- momentum * teacher + (1 - momentum) * student; buffers copied.

    Raises ValueError if the two modules do not have the same parameter / buffer names and shapes,
    or if ``momentum`` is outside [0, 1].
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        missing = sorted(set(s_params) ^ set(t_params))[:5]
        raise ValueError(f"teacher and student parameters differ, e.g. {missing}")
    names = list(s_params)
    t_list: list[torch.Tensor] = [t_params[n] for n in names]
    s_list = [s_params[n].detach() for n in names]
    for n, t, s in zip(names, t_list, s_list):
        if t.shape != s.shape:
            raise ValueError(f"teacher/student shape mismatch for {n}: {tuple(t.shape)} vs {tuple(s.shape)}")
    if t_list:
        torch._foreach_mul_(t_list, momentum)
        torch._foreach_add_(t_list, s_list, alpha=1.0 - momentum)
    t_bufs = dict(teacher.named_buffers())
    for name, buf in student.named_buffers():
        if name not in t_bufs:
            raise ValueError(f"student buffer {name} has no counterpart in the teacher")
        t_bufs[name].copy_(buf)
