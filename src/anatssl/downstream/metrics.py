"""Per-structure segmentation metrics (MONAI ``DiceMetric`` and 95th-percentile Hausdorff distance).

HD95 is in millimetres (the voxel spacing is passed to MONAI). A structure absent from both the
prediction and the ground truth of a case has no defined Dice / HD95 and is reported as ``null``
(NaN) and skipped by the means; a structure present in only one of them gets Dice 0 and HD95
``null`` (MONAI returns inf / nan there), so a missed organ lowers Dice rather than vanishing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.networks.utils import one_hot


def segmentation_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    label_map: Mapping[int, str],
    spacing: Sequence[float] | None = None,
) -> dict[str, dict[str, float]]:
    """(X, Y, Z) integer prediction and target -> {"dice": {name: v}, "hd95": {name: v}} (no background).

    Both volumes use the label values of ``label_map``; values are mapped to contiguous channels.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    values = sorted(label_map)
    lut = {v: i for i, v in enumerate(values)}
    n = len(values)

    def onehot(x: torch.Tensor) -> torch.Tensor:
        idx = torch.zeros_like(x, dtype=torch.long)
        for v, i in lut.items():
            idx[x == v] = i
        return one_hot(idx[None, None], num_classes=n, dim=1)  # (1, n, X, Y, Z)

    p, t = onehot(pred), onehot(target)
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)(p, t)[0]
    hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
        p, t, spacing=list(spacing) if spacing is not None else None
    )[0]
    out: dict[str, dict[str, float]] = {"dice": {}, "hd95": {}}
    for i, v in enumerate(values[1:]):
        name = label_map[v]
        in_p, in_t = bool(p[0, i + 1].any()), bool(t[0, i + 1].any())
        d, h = float(dice[i]), float(hd[i])
        if not in_p and not in_t:
            d, h = math.nan, math.nan
        elif in_p != in_t:
            d, h = 0.0, math.nan
        out["dice"][name] = d
        out["hd95"][name] = h if math.isfinite(h) else math.nan
    return out


def mean_over_cases(per_case: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per-structure NaN-skipping mean of ``segmentation_metrics`` outputs, plus ``mean`` over structures."""
    out: dict[str, dict[str, float]] = {}
    for metric in ("dice", "hd95"):
        names = list(per_case[0][metric]) if per_case else []
        means = {}
        for name in names:
            vals = np.array([c[metric][name] for c in per_case], dtype=float)
            means[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
        finite = [v for v in means.values() if math.isfinite(v)]
        means["mean"] = float(np.mean(finite)) if finite else math.nan
        out[metric] = means
    return out


def json_safe(x: object) -> object:
    """NaN / inf -> None, recursively, so metrics.json is strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x
