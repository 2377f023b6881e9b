"""Anatomical correspondence with any encoder: how far from the true landmark does feature matching land?

For each ordered pair (A, B) of held-out volumes and each landmark that both carry, the landmark of A
is looked up in B by cosine similarity of encoder features (the matching rule of SAM, Yan et al. TMI
2022, :func:`anatssl.anatomy.matching.match_points`): a fine map (encoder level ``fine_level``,
default stride 4) and a coarse map (the deepest level, stride 32), both L2-normalised. The error is
the distance in mm between the match and B's true landmark. No training is involved, so this shows
what pretraining put into the features themselves; a randomly initialised encoder is the floor.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai import transforms as T

from anatssl.anatomy.embedding import EmbeddingMap
from anatssl.anatomy.matching import match_points
from anatssl.config.schema import DataConfig
from anatssl.data.io import read_landmarks
from anatssl.downstream.labelled import LabelledCase
from anatssl.downstream.segmentation import intensity_transform
from anatssl.models.backbones import Backbone


def level_affine(affine: np.ndarray, stride: int) -> np.ndarray:
    """Voxel affine -> affine of a stride-``s`` feature grid: cell i covers voxels s*i .. s*i+s-1."""
    scale = np.diag([stride, stride, stride, 1.0])
    scale[:3, 3] = (stride - 1) / 2.0
    return affine @ scale


@torch.no_grad()
def encoder_embedding_map(
    backbone: Backbone, image: torch.Tensor, affine: np.ndarray, fine_level: int = 1
) -> EmbeddingMap:
    """(C, X, Y, Z) image -> EmbeddingMap of its encoder features (zero-padded at the far end to 32s)."""
    m = backbone.input_multiple
    shape = np.array(image.shape[1:])
    pad = (-shape) % m
    x = F.pad(image[None], [0, int(pad[2]), 0, int(pad[1]), 0, int(pad[0])])
    was = backbone.training
    backbone.eval()
    feats = backbone.encode(x.to(next(backbone.parameters()).device))
    backbone.train(was)
    fine, coarse = feats[fine_level][0], feats[-1][0]
    sf, sc = backbone.feature_strides[fine_level], backbone.feature_strides[-1]
    return EmbeddingMap(
        fine=F.normalize(fine.float(), dim=0).cpu().numpy(),
        coarse=F.normalize(coarse.float(), dim=0).cpu().numpy(),
        fine_affine=level_affine(affine, sf),
        coarse_affine=level_affine(affine, sc),
        meta={"volume_affine": affine, "volume_shape": shape.tolist(), "source": "encoder"},
    )


def load_image(case: LabelledCase, data: DataConfig) -> tuple[torch.Tensor, np.ndarray]:
    tf = T.Compose(
        [
            T.LoadImaged(keys="image", ensure_channel_first=True, image_only=True),
            T.Orientationd(keys="image", axcodes="RAS", labels=None),
            intensity_transform(data),
        ]
    )
    img = tf({"image": str(case.image)})["image"]
    return torch.as_tensor(img, dtype=torch.float32), np.asarray(img.affine, dtype=np.float64)


def evaluate_correspondence(
    backbone: Backbone,
    cases: Sequence[LabelledCase],
    data: DataConfig,
    max_pairs: int = 12,
    fine_level: int = 1,
) -> dict[str, Any]:
    """-> {"mean_error_mm", "median_error_mm", "n_queries", "n_pairs", "per_landmark": {name: mean}}."""
    with_lm = [c for c in cases if c.landmarks is not None]
    if len(with_lm) < 2:
        return {"available": False, "reason": "fewer than two held-out volumes carry landmarks"}
    maps, lms = {}, {}
    for c in with_lm:
        img, aff = load_image(c, data)
        maps[c.name] = encoder_embedding_map(backbone, img, aff, fine_level)
        lms[c.name] = read_landmarks(c.landmarks)  # type: ignore[arg-type]
    errors: dict[str, list[float]] = {}
    pairs = list(itertools.permutations([c.name for c in with_lm], 2))[:max_pairs]
    for a, b in pairs:
        names = sorted(set(lms[a]) & set(lms[b]))
        if not names:
            continue
        pa = np.array([lms[a][n] for n in names])
        pb = np.array([lms[b][n] for n in names])
        inside = _inside(maps[a], pa)
        if not inside.any():
            continue
        pred, _ = match_points(maps[a], maps[b], pa[inside])
        for n, e in zip(np.array(names)[inside], np.linalg.norm(pred - pb[inside], axis=1)):
            errors.setdefault(str(n), []).append(float(e))
    flat = [e for v in errors.values() for e in v]
    if not flat:
        return {"available": False, "reason": "no landmark shared by a pair of held-out volumes"}
    return {
        "available": True,
        "mean_error_mm": float(np.mean(flat)),
        "median_error_mm": float(np.median(flat)),
        "n_queries": len(flat),
        "n_pairs": len(pairs),
        "per_landmark": {k: float(np.mean(v)) for k, v in sorted(errors.items())},
    }


def _inside(emap: EmbeddingMap, pts: np.ndarray) -> np.ndarray:
    affine = np.asarray(emap.meta["volume_affine"])
    shape = np.asarray(emap.meta["volume_shape"])
    idx = EmbeddingMap.world_to_grid(affine, pts)
    return np.all((idx >= -0.5) & (idx <= shape - 0.5), axis=1)
