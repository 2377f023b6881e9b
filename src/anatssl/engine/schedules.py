"""Schedules as pure functions of the global step (DINO's ``cosine_scheduler``, without the array).

Every value the trainer or a method varies over training (lr, weight decay, EMA momentum, teacher
temperature) is one of these, so a resumed run recomputes it exactly from the step alone.
"""

from __future__ import annotations

import math


def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    """Half-cosine from ``start`` (step 0) to ``end`` (step ``total_steps - 1``); ``end`` afterwards."""
    if total_steps <= 1:
        return end
    t = min(max(step, 0), total_steps - 1) / (total_steps - 1)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t))


def linear_warmup(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Linear from ``start`` at step 0 to ``end`` at step ``warmup_steps``; ``end`` afterwards."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


def epoch_linspace(step: int, steps_per_epoch: int, warmup_epochs: int, start: float, end: float) -> float:
    """``np.linspace(start, end, warmup_epochs)[step // steps_per_epoch]``, then ``end``: the teacher
    temperature warm-up of DINO's / iBOT's / Alice's public code, indexed by epoch.

    Constant within an epoch; reaches ``end`` at epoch ``warmup_epochs - 1`` (linspace includes both
    ends), one epoch before :func:`linear_warmup` over the same number of steps does.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    epoch = max(step, 0) // steps_per_epoch
    if warmup_epochs <= 0 or epoch >= warmup_epochs - 1:
        return start if warmup_epochs == 1 and epoch == 0 else end
    return start + (end - start) * epoch / (warmup_epochs - 1)


def warmup_cosine(
    step: int, total_steps: int, peak: float, final: float, warmup_steps: int, warmup_start: float = 0.0
) -> float:
    """Linear warm-up ``warmup_start -> peak`` over ``warmup_steps``, then cosine ``peak -> final``.

    The standard lr schedule of DINO / iBOT / Alice / S2DC (warm-up from 0, cosine to ``min_lr``).
    """
    if step < warmup_steps:
        return linear_warmup(step, warmup_steps, warmup_start, peak)
    return cosine_schedule(step - warmup_steps, total_steps - warmup_steps, peak, final)
