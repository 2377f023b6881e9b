"""The paired comparison of the correspondence evaluation: model vs baseline on the same matches."""

from __future__ import annotations

import numpy as np
import pytest

from anatssl.anatomy.correspondence import paired_difference


def test_constant_difference_has_a_degenerate_interval() -> None:
    pair = np.array([(0, 1), (1, 0), (0, 2), (2, 1)])
    d = paired_difference(np.full(4, -2.0), pair, n_subjects=3, reps=200)
    assert d["model_closer"] == 1.0 and d["n"] == 4
    assert d["mean_difference_mm"] == pytest.approx(-2.0)
    assert d["ci95_mm"] == pytest.approx([-2.0, -2.0])


def test_share_closer_and_mean_by_hand() -> None:
    # 2 subjects, 3 matches: A->B differences -3 and +1, B->A difference -1
    pair = np.array([(0, 1), (0, 1), (1, 0)])
    d = paired_difference(np.array([-3.0, 1.0, -1.0]), pair, n_subjects=2, reps=500, seed=0)
    assert d["model_closer"] == pytest.approx(2 / 3)
    assert d["mean_difference_mm"] == pytest.approx(-1.0)
    # a resampling of two subjects either keeps both (counts 1, 1: every match, mean -1) or draws one
    # subject twice (no ordered pair of distinct subjects: no match, skipped), so the interval is [-1, -1]
    assert d["ci95_mm"] == pytest.approx([-1.0, -1.0])


def test_interval_is_over_subjects_not_matches() -> None:
    """One subject pair much better than the rest widens the interval; it still holds the mean."""
    rng = np.random.default_rng(0)
    n = 6
    pairs, diffs = [], []
    for i in range(n):
        for j in range(n):
            if i != j:
                shift = -20.0 if 0 in (i, j) else 0.0  # subject 0 is where the model wins
                for _ in range(10):
                    pairs.append((i, j))
                    diffs.append(shift + rng.normal())
    d = paired_difference(np.array(diffs), np.array(pairs), n_subjects=n, reps=2000, seed=1)
    lo, hi = d["ci95_mm"]
    assert lo < d["mean_difference_mm"] < hi
    # resampling the 300 matches would give an interval 2 x 1.96 x 9.4 / sqrt(300) ~ 2.1 mm wide (9.4 mm:
    # the std of the per-match differences); over subjects it is much wider (16.6 mm with this seed)
    assert hi - lo > 8.0


def test_no_matches() -> None:
    d = paired_difference(np.zeros(0), np.zeros((0, 2), dtype=np.int64), n_subjects=3)
    assert d["n"] == 0 and np.isnan(d["mean_difference_mm"])
