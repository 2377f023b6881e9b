"""Per-structure segmentation metrics (MONAI ``DiceMetric`` and 95th-percentile Hausdorff distance).

HD95 is in millimetres (the voxel spacing is passed to MONAI). Empty structures have defined values:

* absent from both the prediction and the ground truth of a case: Dice and HD95 ``null`` (NaN),
  skipped by the means (the structure is not scored on that case);
* present in only one of them (missed, or predicted where there is none): Dice 0 and HD95 = the
  image diagonal in mm (the largest distance the volume holds), so a missed organ counts as the
  worst possible boundary error instead of vanishing from the HD95 mean.

MONAI's Hausdorff distance is only called on structures present in both, so it never warns about an
empty class; any warning it still raises is caught and counted (``warnings`` in the result), not printed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.networks.utils import one_hot

HD95_EMPTY_RULE = "image diagonal (mm) where a structure is in only one of prediction and truth"


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float] | None) -> float:
    sp = [1.0] * len(shape) if spacing is None else [float(s) for s in spacing]
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, sp))))


def segmentation_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    label_map: Mapping[int, str],
    spacing: Sequence[float] | None = None,
    hd95: bool = True,
) -> dict[str, Any]:
    """(X, Y, Z) integer prediction and target -> per structure (no background) ``dice``, ``hd95``.

    Both volumes use the label values of ``label_map``; values are mapped to contiguous channels.
    Also returned: ``missed`` / ``spurious`` (structures only in the truth / only in the prediction)
    and ``warnings`` (MONAI warnings caught). ``hd95=False`` skips the distance (HD95 all NaN).
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
    in_p = p[0, 1:].flatten(1).any(1).tolist()
    in_t = t[0, 1:].flatten(1).any(1).tolist()
    both = [i for i in range(n - 1) if in_p[i] and in_t[i]]
    diag = image_diagonal_mm(pred.shape, spacing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)(p, t)[0]
        hd = torch.full((n - 1,), math.nan)
        if hd95 and both:
            ch = [i + 1 for i in both]
            vals = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(
                p[:, ch], t[:, ch], spacing=list(spacing) if spacing is not None else None
            )
            hd[both] = torch.as_tensor(vals)[0].float().cpu()
    out: dict[str, Any] = {"dice": {}, "hd95": {}, "missed": [], "spurious": [], "warnings": len(caught)}
    for i, v in enumerate(values[1:]):
        name = label_map[v]
        d, h = float(dice[i]), float(hd[i])
        if not in_p[i] and not in_t[i]:
            d, h = math.nan, math.nan
        elif in_p[i] != in_t[i]:
            d, h = 0.0, diag if hd95 else math.nan
            out["missed" if in_t[i] else "spurious"].append(name)
        out["dice"][name] = d
        out["hd95"][name] = h if math.isfinite(h) else math.nan
    return out


def empty_structure_counts(per_case: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over cases of the empty-structure rules and of the MONAI warnings caught (metrics.json)."""
    absent = sum(
        1 for c in per_case for name, d in c["dice"].items() if isinstance(d, float) and math.isnan(d)
    )
    return {
        "absent": absent,
        "missed": sum(len(c.get("missed", ())) for c in per_case),
        "spurious": sum(len(c.get("spurious", ())) for c in per_case),
        "warnings_suppressed": sum(int(c.get("warnings", 0)) for c in per_case),
        "hd95_empty_value": HD95_EMPTY_RULE,
    }


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
