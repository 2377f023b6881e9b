import math

import numpy as np
import pytest

from anatssl.engine.schedules import cosine_schedule, epoch_linspace, linear_warmup, warmup_cosine


def test_cosine_endpoints_and_midpoint() -> None:
    assert cosine_schedule(0, 11, 1.0, 0.0) == pytest.approx(1.0)
    assert cosine_schedule(10, 11, 1.0, 0.0) == pytest.approx(0.0)
    assert cosine_schedule(5, 11, 1.0, 0.0) == pytest.approx(0.5)
    # DINO's EMA momentum 0.996 -> 1 at a quarter of the run: 1 - 0.004 * (1 + cos(pi/4)) / 2
    assert cosine_schedule(25, 101, 0.996, 1.0) == pytest.approx(1 - 0.004 * (1 + math.cos(math.pi / 4)) / 2)
    assert cosine_schedule(500, 101, 0.996, 1.0) == pytest.approx(1.0)


def test_linear_warmup() -> None:
    assert linear_warmup(0, 30, 0.008, 0.01) == pytest.approx(0.008)
    assert linear_warmup(15, 30, 0.008, 0.01) == pytest.approx(0.009)
    assert linear_warmup(30, 30, 0.008, 0.01) == pytest.approx(0.01)
    assert linear_warmup(99, 30, 0.008, 0.01) == pytest.approx(0.01)


def test_warmup_then_cosine() -> None:
    vals = [warmup_cosine(s, 20, 1e-3, 1e-5, 5) for s in range(20)]
    assert vals[0] == 0.0
    assert vals[4] == pytest.approx(0.8e-3)
    assert vals[5] == pytest.approx(1e-3)
    assert vals[-1] == pytest.approx(1e-5)
    assert all(a >= b for a, b in zip(vals[5:], vals[6:]))


def test_epoch_linspace_is_numpy_linspace_indexed_by_epoch() -> None:
    """DINO / Alice public code: np.linspace(start, end, W)[epoch], then end; constant within an epoch."""
    want = np.linspace(0.008, 0.01, 30)
    for step in range(0, 40 * 3):
        expect = want[step // 3] if step // 3 < 30 else 0.01
        assert epoch_linspace(step, 3, 30, 0.008, 0.01) == pytest.approx(expect, rel=0, abs=1e-15)
    assert epoch_linspace(29 * 3, 3, 30, 0.008, 0.01) == 0.01  # end reached at epoch W - 1
    assert [epoch_linspace(s, 2, 1, 0.04, 0.07) for s in range(4)] == [0.04, 0.04, 0.07, 0.07]  # W = 1
    assert epoch_linspace(5, 2, 0, 0.04, 0.07) == 0.07
    with pytest.raises(ValueError, match="steps_per_epoch"):
        epoch_linspace(0, 0, 3, 0.0, 1.0)
