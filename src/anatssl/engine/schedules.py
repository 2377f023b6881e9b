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


def warmup_cosine(
    step: int, total_steps: int, peak: float, final: float, warmup_steps: int, warmup_start: float = 0.0
) -> float:
    """Linear warm-up ``warmup_start -> peak`` over ``warmup_steps``, then cosine ``peak -> final``.

    The standard lr schedule of DINO / iBOT / Alice / S2DC (warm-up from 0, cosine to ``min_lr``).
    """
    if step < warmup_steps:
        return linear_warmup(step, warmup_steps, warmup_start, peak)
    return cosine_schedule(step - warmup_steps, total_steps - warmup_steps, peak, final)
