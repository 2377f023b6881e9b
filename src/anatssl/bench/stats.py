"""Paired differences with a 95 % bootstrap interval: is an arm better than the random-init control?

Every comparison of the benchmark is *paired*: arm and control are scored on the same held-out volumes
with the same seeds, so the unit of evidence is the difference ``d[s, v] = arm[s, v] - control[s, v]``
of seed ``s`` and test volume ``v`` (or landmark ``v`` for the correspondence error). Seeds and volumes
are both sources of variation, so the bootstrap is *crossed* (two-way): each replicate draws the seeds
with replacement and, independently, the volumes with replacement, and takes the mean of ``d`` over the
drawn cells (missing cells, NaN, are skipped). The 95 % interval is the 2.5th and 97.5th percentile of
the replicate means (percentile bootstrap, Efron & Tibshirani 1993). With one seed it reduces to a
bootstrap over volumes; with one volume, over seeds.

A difference is called an effect only when its interval excludes 0 (:func:`verdict`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

REPS = 4000


def paired_delta(
    arm: Sequence[Sequence[float | None]] | np.ndarray,
    control: Sequence[Sequence[float | None]] | np.ndarray,
    reps: int = REPS,
    seed: int = 0,
) -> dict[str, Any]:
    """(S, V) arm and control values (seeds x volumes; None / NaN = missing) ->
    ``{"mean", "ci95": [lo, hi], "n_seeds", "n_units", "n"}``.

    ``mean`` is the mean of the finite paired differences; the interval comes from ``reps`` crossed
    bootstrap replicates (module docstring). All NaN when no pair has both values.
    """
    a = np.asarray(arm, dtype=np.float64)
    c = np.asarray(control, dtype=np.float64)
    if a.shape != c.shape or a.ndim != 2:
        raise ValueError(f"arm {a.shape} and control {c.shape} must both be (seeds, volumes) arrays")
    d = a - c
    ok = np.isfinite(d)
    nan = float("nan")
    if not ok.any():
        return {"mean": nan, "ci95": [nan, nan], "n_seeds": 0, "n_units": 0, "n": 0}
    rows = np.flatnonzero(ok.any(1))
    cols = np.flatnonzero(ok.any(0))
    d, ok = d[np.ix_(rows, cols)], ok[np.ix_(rows, cols)]
    s, v = d.shape
    rng = np.random.default_rng(seed)
    si = rng.integers(s, size=(reps, s))
    vi = rng.integers(v, size=(reps, v))
    dz = np.where(ok, d, 0.0)
    cells = dz[si[:, :, None], vi[:, None, :]]  # (reps, s, v)
    counts = ok[si[:, :, None], vi[:, None, :]].sum((1, 2))
    means = cells.sum((1, 2))[counts > 0] / counts[counts > 0]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {
        "mean": float(d[ok].mean()),
        "ci95": [float(lo), float(hi)],
        "n_seeds": int(s),
        "n_units": int(v),
        "n": int(ok.sum()),
    }


def verdict(delta: dict[str, Any] | None, higher_is_better: bool = True) -> str:
    """``helps`` / ``hurts`` where the 95 % interval excludes 0, else ``no clear difference``."""
    if not delta:
        return "-"
    lo, hi = delta.get("ci95", [math.nan, math.nan])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    if lo > 0 or hi < 0:
        better = (lo > 0) == higher_is_better
        return "helps" if better else "hurts"
    return "no clear difference"


def fmt_delta(delta: dict[str, Any] | None, digits: int = 3) -> str:
    """``+0.150 [+0.101, +0.203]`` (or ``-``)."""
    if not delta or not math.isfinite(delta.get("mean", math.nan)):
        return "-"
    lo, hi = delta["ci95"]
    return f"{delta['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
