"""Landmark correspondence across subjects: how well does an encoder find "the same point" in another scan?

For every ordered pair of subjects (A, B) and every landmark both carry, the landmark's world position
in A is matched into B and the radial error to B's true landmark (mm) is recorded. Three predictors:

* ``model``: nearest neighbour in embedding space. A SAM run uses its fine + coarse embeddings
  (:func:`~anatssl.anatomy.matching.match_points`, sim = 1/2 (fine cos + coarse cos)); any other
  pretrained run uses its backbone's dense features (decoder at stride 2 by default, L2-normalised) as
  both "fine" and "coarse" map, i.e. plain cosine nearest neighbour;
* ``same_voxel``: no learning, the same voxel indices of B's preprocessed grid (after the foreground
  crop both grids start at the body's bounding box, so this is a fair "affine-free" baseline);
* ``random_foreground``: a random voxel of B's foreground (chance).

Reported per predictor: mean radial error (mm), median, share within 10 mm, count of matches, and for the
model the mean error per landmark. The model is also compared with each baseline *on the same matches*
(``vs_baselines``): the share of matches where it is closer, the mean difference of the errors, and a
95 % interval of that difference from a bootstrap over subjects (matches of one subject pair are not
independent, so resampling single matches would make the interval too narrow).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from anatssl.anatomy.cache import atomic_write_bytes, fine_foreground
from anatssl.anatomy.embedding import EmbeddingMap
from anatssl.anatomy.matching import fit_affine_prior, match_points
from anatssl.anatomy.sam_model import grid_affine, pad_to_multiple
from anatssl.data.volume import Volume
from anatssl.errors import DataError

WITHIN_MM = 10.0
FEATURE_LAYERS = ("decoder", "encoder")
BOOTSTRAP_REPS = 2000


def dense_feature_embedder(backbone: Any, layer: str = "decoder") -> Callable[[Volume], EmbeddingMap]:
    """An embedder from any backbone (``encode`` / ``decode``): its stride-2 features, L2-normalised.

    ``layer``: ``decoder`` (the decoder's stride-2 output, ``decode(x, feats)[3]``) or ``encoder`` (the
    first encoder stage, stride 2). A run's embedder is :func:`anatssl.runs.embedding.model_embedder`.
    """
    if layer not in FEATURE_LAYERS:
        raise ValueError(f"layer must be one of {FEATURE_LAYERS}, got {layer!r}")

    @torch.no_grad()
    def embed(volume: Volume) -> EmbeddingMap:
        x = torch.from_numpy(np.array(volume.image, dtype=np.float32))[None]
        xp, shape = pad_to_multiple(x, int(getattr(backbone, "input_multiple", 32)))
        feats = backbone.encode(xp)
        f = backbone.decode(xp, feats)[3] if layer == "decoder" else feats[0]
        n = [-(-s // 2) for s in shape]
        f = F.normalize(f[0, :, : n[0], : n[1], : n[2]].float(), dim=0).numpy().astype(np.float16)
        aff = grid_affine(volume.affine, 2)
        meta = {
            "source": volume.path,
            "volume_shape": list(volume.spatial_shape),
            "volume_affine": np.asarray(volume.affine).tolist(),
            "fine_stride": 2,
            "coarse_stride": 2,
        }
        return EmbeddingMap(f, f, aff, aff, meta, fine_mask=fine_foreground(volume, 2))

    return embed


def _inside(volume: Volume, pts: np.ndarray) -> np.ndarray:
    vox = volume.world_to_voxel(pts)
    return np.all((vox >= -0.5) & (vox <= np.asarray(volume.spatial_shape) - 0.5), axis=1)


def summarise(errors: np.ndarray) -> dict[str, float]:
    e = np.asarray(errors, dtype=np.float64)
    if e.size == 0:
        nan = float("nan")
        return {"mre_mm": nan, "median_mm": nan, f"within_{int(WITHIN_MM)}mm": nan, "n": 0}
    return {
        "mre_mm": float(e.mean()),
        "median_mm": float(np.median(e)),
        f"within_{int(WITHIN_MM)}mm": float((e <= WITHIN_MM).mean()),
        "n": int(e.size),
    }


def paired_difference(
    diff: np.ndarray, pair: np.ndarray, n_subjects: int, reps: int = BOOTSTRAP_REPS, seed: int = 0
) -> dict[str, Any]:
    """Model minus baseline error per match -> share closer, mean difference and its bootstrap interval.

    Args:
        diff: (M,) error of the model minus error of the baseline, per match (mm; < 0: model closer).
        pair: (M, 2) indices (i, j) of the source and target subject of each match.
        n_subjects: number of subjects.
        reps: bootstrap replicates. Each draws ``n_subjects`` subjects with replacement (counts c) and
            weighs the matches of the ordered pair (i, j), i != j, by c_i c_j: all ordered pairs of the
            resampled set, as if it had been evaluated.
    """
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        nan = float("nan")
        return {"model_closer": nan, "mean_difference_mm": nan, "ci95_mm": [nan, nan], "n": 0}
    total = np.zeros((n_subjects, n_subjects))
    count = np.zeros((n_subjects, n_subjects))
    np.add.at(total, (pair[:, 0], pair[:, 1]), diff)
    np.add.at(count, (pair[:, 0], pair[:, 1]), 1.0)
    rng = np.random.default_rng(seed)
    c = rng.multinomial(n_subjects, np.full(n_subjects, 1.0 / n_subjects), size=reps).astype(np.float64)
    # sum over pairs of c_i c_j total_ij (no match has i == j, so the diagonal adds nothing)
    num = np.einsum("ri,ij,rj->r", c, total, c)
    den = np.einsum("ri,ij,rj->r", c, count, c)
    means = num[den > 0] / den[den > 0]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {
        "model_closer": float((diff < 0).mean()),
        "mean_difference_mm": float(diff.mean()),
        "ci95_mm": [float(lo), float(hi)],
        "n": int(diff.size),
        "bootstrap": f"{reps} resamplings of the {n_subjects} subjects (all their ordered pairs)",
    }


def evaluate_correspondence(
    volumes: list[Volume],
    embed: Callable[[Volume], EmbeddingMap],
    fg_threshold: float = 0.05,
    seed: int = 0,
    max_subjects: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    subcell: bool = True,
    prior: str | None = None,
    window_mm: float = 20.0,
) -> dict[str, Any]:
    """Match every landmark of each subject into every other subject; errors of model and baselines.

    Args:
        volumes: preprocessed volumes with ``landmarks`` (world mm).
        embed: volume -> :class:`EmbeddingMap`.
        fg_threshold: foreground level of the random baseline (normalised intensity).
        seed: seed of the random baseline.
        max_subjects: use only the first N subjects (N (N-1) ordered pairs).
        progress: called with (done, total) after each embedded volume and each pair.
        subcell: sub-cell refined matches (default) or SAM's rule, the centre of the best fine cell
            (:func:`~anatssl.anatomy.matching.match_points`).
        prior: ``None`` (the plain argmax) or ``"affine"``: per pair, an affine A -> B fitted robustly to
            the model's own matches of 400 body cells of A (no landmark used,
            :func:`~anatssl.anatomy.matching.fit_affine_prior`) restricts each landmark's argmax to
            ``window_mm`` around the affine's prediction; the affine's own predictions are reported
            too (``affine_fit``), and the share of fitting matches it agreed with (``prior_inliers``).
    """
    if prior not in (None, "affine"):
        raise ValueError(f"prior must be None or 'affine', got {prior!r}")
    vols = [v for v in volumes if v.landmarks]
    if max_subjects:
        vols = vols[:max_subjects]
    if len(vols) < 2:
        raise DataError(
            f"correspondence needs >= 2 scans with landmarks, got {len(vols)}; the dataset's "
            "entries must reference landmark JSON files (`landmarks` in dataset.json)"
        )
    rng = np.random.default_rng(seed)
    total = len(vols) + len(vols) * (len(vols) - 1)
    done = 0
    maps = []
    for v in vols:
        maps.append(embed(v))
        done += 1
        if progress:
            progress(done, total)
    fgs = []
    for v in vols:
        fg = np.argwhere(v.image[0] > fg_threshold)
        if len(fg) == 0:
            raise DataError(
                f"{v.path}: no voxel above the foreground threshold {fg_threshold}; check the modality preset"
            )
        fgs.append(fg)
    errs: dict[str, list[float]] = {"model": [], "same_voxel": [], "random_foreground": []}
    if prior:
        errs["affine_fit"] = []
    inliers: list[float] = []
    pair_of_match: list[tuple[int, int]] = []
    per_lm: dict[str, list[float]] = {}
    skipped = 0
    for i, va in enumerate(vols):
        for j, vb in enumerate(vols):
            if i == j:
                continue
            names = sorted(set(va.landmarks or {}) & set(vb.landmarks or {}))
            if names:
                pa = np.array([va.landmarks[n] for n in names], dtype=np.float64)  # type: ignore[index]
                pb = np.array([vb.landmarks[n] for n in names], dtype=np.float64)  # type: ignore[index]
                ok = _inside(va, pa) & _inside(vb, pb)
                skipped += int((~ok).sum())
                names = [n for n, k in zip(names, ok) if k]
                pa, pb = pa[ok], pb[ok]
            if names:
                fit = None
                if prior == "affine":
                    fit = fit_affine_prior(maps[i], maps[j], window_mm=window_mm, seed=seed)
                    inliers.append(fit.inlier_fraction)
                    errs["affine_fit"].extend(np.linalg.norm(fit.apply(pa) - pb, axis=1).tolist())
                pred, _ = match_points(maps[i], maps[j], pa, subcell=subcell, prior=fit)
                e = np.linalg.norm(pred - pb, axis=1)
                errs["model"].extend(e.tolist())
                pair_of_match += [(i, j)] * len(e)
                for n, x in zip(names, e):
                    per_lm.setdefault(n, []).append(float(x))
                same = vb.voxel_to_world(va.world_to_voxel(pa))
                errs["same_voxel"].extend(np.linalg.norm(same - pb, axis=1).tolist())
                rnd = vb.voxel_to_world(fgs[j][rng.integers(len(fgs[j]), size=len(pa))])
                errs["random_foreground"].extend(np.linalg.norm(rnd - pb, axis=1).tolist())
            done += 1
            if progress:
                progress(done, total)
    out: dict[str, Any] = {k: summarise(np.array(v)) for k, v in errs.items()}
    pairs = np.array(pair_of_match, dtype=np.int64).reshape(-1, 2)
    model = np.array(errs["model"])
    out["vs_baselines"] = {
        b: paired_difference(model - np.array(errs[b]), pairs, len(vols), seed=seed)
        for b in ("same_voxel", "random_foreground")
    }
    out["per_landmark_mre_mm"] = {n: float(np.mean(v)) for n, v in sorted(per_lm.items())}
    out["subjects"] = len(vols)
    out["pairs"] = len(vols) * (len(vols) - 1)
    out["skipped_outside_volume"] = skipped
    out["fine_spacing_mm"] = [float(s) for s in np.linalg.norm(maps[0].fine_affine[:3, :3], axis=0)]
    out["matching"] = "argmax of 1/2 (fine + coarse) cosine, " + (
        "sub-cell refined (matching.match_points)" if subcell else "centre of the best fine cell (SAM's rule)"
    )
    if prior:
        out["matching"] += (
            f", within {window_mm:g} mm of a robust affine fitted to the model's own matches "
            "(matching.fit_affine_prior)"
        )
        share = float(np.mean(inliers)) if inliers else float("nan")
        out["prior"] = {"kind": prior, "window_mm": window_mm, "mean_inlier_fraction": share}
    return out


def write_metrics(metrics: dict[str, Any], out_dir: str | Path) -> Path:
    path = Path(out_dir) / "metrics.json"
    atomic_write_bytes(json.dumps(metrics, indent=1).encode(), path)
    return path
