"""Paired bootstrap intervals on inputs whose answer is known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anatssl.bench.stats import fmt_delta, paired_delta, verdict


def test_two_volumes_one_seed_interval_is_the_range_of_resampled_means() -> None:
    # differences 0 and 1: a resample of two volumes has mean 0 (p 1/4), 0.5 (1/2) or 1 (1/4), so the
    # 2.5th and 97.5th percentiles of the replicate means are 0 and 1
    d = paired_delta([[1.0, 2.0]], [[1.0, 1.0]])
    assert d["mean"] == 0.5
    assert d["ci95"] == [0.0, 1.0]
    assert (d["n_seeds"], d["n_units"], d["n"]) == (1, 2, 2)


def test_constant_difference_has_a_point_interval() -> None:
    arm = np.full((3, 4), 0.7)
    d = paired_delta(arm, arm - 0.25)
    assert d["mean"] == pytest.approx(0.25)
    assert d["ci95"] == pytest.approx([0.25, 0.25])
    assert verdict(d) == "helps"
    assert verdict(d, higher_is_better=False) == "hurts"


def test_pairs_cancel_shared_variation() -> None:
    # volumes differ a lot (0.1 .. 0.9) but the arm is 0.05 better on every one of them: paired, the
    # interval is tight around +0.05 although the volumes' spread is 16 times larger
    control = np.array([[0.1, 0.5, 0.9, 0.3], [0.2, 0.6, 0.8, 0.4]])
    d = paired_delta(control + 0.05, control)
    assert d["ci95"] == pytest.approx([0.05, 0.05])


def test_noise_around_zero_is_no_clear_difference_and_the_interval_covers_the_mean() -> None:
    rng = np.random.default_rng(0)
    arm, control = rng.normal(0.5, 0.1, (3, 6)), rng.normal(0.5, 0.1, (3, 6))
    d = paired_delta(arm, control, seed=1)
    lo, hi = d["ci95"]
    assert lo < d["mean"] < hi and lo < 0 < hi
    assert verdict(d) == "no clear difference"
    # a replicate count and seed make the interval reproducible
    assert paired_delta(arm, control, seed=1) == d


def test_missing_cells_are_skipped_and_all_missing_is_nan() -> None:
    d = paired_delta([[1.0, None], [3.0, 2.0]], [[0.0, 0.0], [1.0, None]])
    assert d["mean"] == pytest.approx(1.5)  # pairs (1 - 0) and (3 - 1)
    assert d["n"] == 2
    e = paired_delta([[None]], [[1.0]])
    assert math.isnan(e["mean"]) and verdict(e) == "-"
    with pytest.raises(ValueError, match="seeds, volumes"):
        paired_delta([1.0, 2.0], [1.0, 2.0])


def test_format() -> None:
    assert fmt_delta({"mean": 0.15, "ci95": [0.1, 0.2]}) == "+0.150 [+0.100, +0.200]"
    assert fmt_delta(None) == "-"
