"""Frozen-encoder dense evaluation: a linear (1x1x1) probe, training-free label transfer, landmarks.

What pretraining put into an encoder's *dense* features, measured without fine-tuning the encoder
(the sensitive, cheap protocol of dense SSL papers: a linear head on frozen features, and label
propagation by nearest neighbours in feature space):

* **Features** (:func:`multiscale_features`): the five encoder maps (strides 2..32) of the whole
  preprocessed volume, upsampled (trilinear) to a common stride (``dense.stride``, default 2), plus
  the input averaged to that stride, concatenated: ``1 + sum(feature_channels)`` channels (373 for
  ``conv`` at feature_size 12). Computed once per volume, under bf16 autocast where the device
  supports it (``dense.amp``), stored in float32.
* **Probe** (:func:`fit_probe`): features standardised with the mean / std of the labelled volumes'
  cells, then a linear layer (``dense.hidden > 0``: one hidden ReLU layer) trained with Adam
  (``dense.steps`` 300, ``dense.lr`` 1e-2, cross-entropy) on the cells of the N labelled volumes
  (the label of a cell is the voxel at its centre). The recipe measured in issue 13: at stride 2
  it separates random-init from pretrained conv encoders by ~0.15 Dice at one labelled volume.
* **Label transfer** (:func:`transfer_scores`): no training at all. Each cell of a test volume takes
  the label of its nearest neighbour (cosine similarity of the standardised features) among a
  class-balanced sample of the labelled volumes' cells (``dense.reference_voxels`` per volume: each
  present class gets an equal share, so a small organ is not outvoted by background); chunked
  matrix products, ``dense.k`` > 1 votes among the k nearest.
* **Scoring**: class scores (probe logits, or transfer votes one-hot) are upsampled trilinearly from
  the feature grid to the voxel grid, argmax, and Dice is computed per structure of each held-out
  volume at full resolution. A structure absent from both prediction and truth is ``null`` (not
  counted); present in one only: Dice 0. A volume's mean Dice is the mean over its scored structures.
* **Landmarks** (optional): the same features, standardised over the held-out volumes and
  L2-normalised, as the dense map of :func:`anatssl.anatomy.correspondence.evaluate_correspondence`
  (cosine nearest neighbour of every landmark of each held-out subject in every other one).

Volumes are read with the pretraining pipeline (:class:`~anatssl.data.source.VolumeSource`: RAS,
intensity window, foreground crop), so the encoder sees inputs as in pretraining; the held-out and
labelled volumes are those of the fine-tuning split (``split.*``), so probe, transfer and fine-tuning
of one dataset use the same N labelled volumes and the same test volumes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anatssl.downstream.config import FinetuneConfig, finetune_config_to_dict
from anatssl.downstream.report import write_metrics_json
from anatssl.downstream.weights import InitSource, load_backbone_weights, resolve_init
from anatssl.engine.device import resolve_device
from anatssl.engine.precision import autocast
from anatssl.errors import DataError
from anatssl.models.backbones import Backbone, build_backbone

log = logging.getLogger("anatssl")


# -- the encoder ------------------------------------------------------------------------------------
def frozen_encoder(cfg: FinetuneConfig, init: InitSource) -> tuple[Backbone, dict[str, Any]]:
    """The backbone of ``cfg.model``: random init with ``torch.manual_seed(cfg.seed)`` (the control, the
    same weights a scratch fine-tuning of that seed starts from) or loaded from ``init``; eval mode,
    no gradients. -> (backbone, what was loaded, for metrics.json)."""
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.model)
    info: dict[str, Any] = {"kind": init.kind, "seed": cfg.seed}
    if init.kind != "scratch" and init.state_dict is not None:
        report = load_backbone_weights(
            backbone, init.state_dict, str(init.path), backbone_name=cfg.model.backbone, skip_prefixes=()
        )
        log.info(report.describe())
        info.update(
            {
                "path": str(init.path),
                **{k: v for k, v in init.meta.items() if k in ("method", "step", "run")},
                "load": report.summary(),
            }
        )
    backbone.eval().requires_grad_(False)
    return backbone, info


def feature_channels(backbone: Backbone, levels: Sequence[int], include_input: bool, in_channels: int) -> int:
    return (in_channels if include_input else 0) + sum(backbone.feature_channels[lv] for lv in levels)


@torch.no_grad()
def multiscale_features(
    backbone: Backbone,
    image: np.ndarray | torch.Tensor,
    stride: int = 2,
    levels: Sequence[int] = (0, 1, 2, 3, 4),
    include_input: bool = True,
    amp: str = "bf16",
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(C, X, Y, Z) image -> (D, ceil(X/s), ceil(Y/s), ceil(Z/s)) float32 features at stride ``s``.

    The volume is zero-padded at the far end to the backbone's ``input_multiple`` (zero is air after
    the presets' normalisation), encoded once, and each level in ``levels`` (0 = stride 2 ... 4 =
    stride 32) is resized to the stride-``s`` grid: trilinear upsampling for coarser maps (cell centres
    line up: ``align_corners=False``), average pooling for finer ones; ``include_input`` adds the image
    averaged over each cell. Cell ``g`` covers voxels ``s*g .. s*g + s - 1``.
    """
    device = torch.device(device)
    x = image.float() if torch.is_tensor(image) else torch.from_numpy(np.array(image, dtype=np.float32))
    x = x[None].to(device)
    shape = [int(s) for s in x.shape[2:]]
    m = int(getattr(backbone, "input_multiple", 32))
    m = m * stride // math.gcd(m, stride)
    pad = [(-s) % m for s in shape]
    if any(pad):
        x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
    grid = [s // stride for s in x.shape[2:]]
    with autocast(device, amp):
        feats = backbone.encode(x)
    maps = [F.avg_pool3d(x, stride) if stride > 1 else x] if include_input else []
    for lv in levels:
        f = feats[lv].float()
        fs = backbone.feature_strides[lv]
        if fs > stride:
            f = F.interpolate(f, size=grid, mode="trilinear", align_corners=False)
        elif fs < stride:
            f = F.avg_pool3d(f, stride // fs)
        maps.append(f)
    out = torch.cat(maps, 1)[0]
    n = [-(-s // stride) for s in shape]
    return out[:, : n[0], : n[1], : n[2]].contiguous()


def cell_labels(label: np.ndarray | torch.Tensor, stride: int) -> torch.Tensor:
    """(X, Y, Z) integer labels -> (ceil(X/s), ...) the label of the voxel at each cell's centre
    (voxel ``s*g + s//2``; the far edge is padded with background)."""
    y = label.long() if torch.is_tensor(label) else torch.from_numpy(np.array(label, dtype=np.int64))
    pad = [(-s) % stride for s in y.shape]
    if any(pad):
        y = F.pad(y, (0, pad[2], 0, pad[1], 0, pad[0]))
    h = stride // 2
    return y[h::stride, h::stride, h::stride].contiguous()


# -- scores -> labels -> Dice ----------------------------------------------------------------------
def scores_to_labels(scores: torch.Tensor, shape: Sequence[int], stride: int) -> torch.Tensor:
    """(K, x, y, z) class scores on the stride grid -> (X, Y, Z) argmax labels on the voxel grid.

    Scores are upsampled trilinearly (cell centres aligned) before the argmax, so boundaries fall
    between cells rather than on the cell blocks.
    """
    s = scores.float()[None]
    if stride > 1:
        s = F.interpolate(s, size=[g * stride for g in s.shape[2:]], mode="trilinear", align_corners=False)
    return s[0].argmax(0)[: shape[0], : shape[1], : shape[2]]


def dice_per_structure(pred: torch.Tensor, truth: torch.Tensor, names: Sequence[str]) -> dict[str, float]:
    """(X, Y, Z) contiguous labels (0 = background, k = ``names[k-1]``) -> {name: Dice}.

    NaN where the structure is absent from both (not scored); 0 where it is in one only.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and truth {tuple(truth.shape)} differ in shape")
    out: dict[str, float] = {}
    for k, name in enumerate(names, start=1):
        p, t = pred == k, truth == k
        n_p, n_t = int(p.sum()), int(t.sum())
        if n_p == 0 and n_t == 0:
            out[name] = math.nan
        else:
            out[name] = 2.0 * int((p & t).sum()) / (n_p + n_t)
    return out


def mean_present(d: dict[str, float]) -> float:
    v = [x for x in d.values() if math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def summarise_cases(per_case: dict[str, dict[str, float]]) -> dict[str, Any]:
    """{case: {structure: Dice}} -> per-structure means over cases, per-case means, and ``mean_dice``
    (the mean over cases of each case's mean over its scored structures)."""
    names = list(next(iter(per_case.values()))) if per_case else []
    dice = {}
    for n in names:
        v = [c[n] for c in per_case.values() if math.isfinite(c[n])]
        dice[n] = float(np.mean(v)) if v else math.nan
    case_mean = {k: mean_present(v) for k, v in per_case.items()}
    finite = [v for v in case_mean.values() if math.isfinite(v)]
    return {
        "mean_dice": float(np.mean(finite)) if finite else math.nan,
        "dice": dice,
        "per_case_mean_dice": case_mean,
        "per_case": per_case,
    }


# -- the probe -------------------------------------------------------------------------------------
@dataclass
class Standardiser:
    mean: torch.Tensor
    """(D,)"""
    std: torch.Tensor
    """(D,), at least 1e-6 (a constant channel of a random encoder stays finite)."""

    @classmethod
    def fit(cls, rows: torch.Tensor) -> Standardiser:
        """(M, D) rows -> per-channel mean and std."""
        return cls(rows.mean(0), rows.std(0, unbiased=False).clamp_min(1e-6))

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        return (rows - self.mean) / self.std


def rows(features: torch.Tensor) -> torch.Tensor:
    """(D, x, y, z) -> (x*y*z, D)."""
    return features.reshape(features.shape[0], -1).T


def fit_probe(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    steps: int = 300,
    lr: float = 1e-2,
    hidden: int = 0,
    batch_voxels: int = 16384,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> tuple[nn.Module, list[float]]:
    """(M, D) standardised features, (M,) labels -> a trained head ((M, D) -> (M, K) logits), losses.

    Adam on cross-entropy; each step uses all rows, or ``batch_voxels`` rows drawn at random when
    there are more. ``hidden > 0``: Linear -> ReLU -> Linear (a tiny MLP) instead of one Linear.
    """
    if x.shape[0] != y.shape[0] or x.ndim != 2:
        raise ValueError(f"features {tuple(x.shape)} and labels {tuple(y.shape)} do not match")
    torch.manual_seed(seed)
    d = x.shape[1]
    head: nn.Module = (
        nn.Linear(d, num_classes)
        if hidden <= 0
        else nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
    )
    head.to(x.device)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator(device="cpu").manual_seed(seed)
    losses = []
    m = x.shape[0]
    for _ in range(steps):
        if m > batch_voxels:
            idx = torch.randint(m, (batch_voxels,), generator=g).to(x.device)
            xb, yb = x[idx], y[idx]
        else:
            xb, yb = x, y
        loss = F.cross_entropy(head(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    head.eval()
    return head, losses


@torch.no_grad()
def probe_scores(head: nn.Module, features: torch.Tensor, standardise: Standardiser) -> torch.Tensor:
    """(D, x, y, z) features -> (K, x, y, z) logits."""
    logits = head(standardise(rows(features)))
    return logits.T.reshape(-1, *features.shape[1:])


# -- label transfer --------------------------------------------------------------------------------
def sample_reference(labels: torch.Tensor, budget: int, generator: torch.Generator) -> torch.Tensor:
    """(M,) cell labels -> indices of a class-balanced sample of at most ~``budget`` cells.

    Each class present gets ``ceil(budget / n_present)`` cells (all of them if it has fewer).
    """
    classes = torch.unique(labels)
    quota = -(-budget // max(len(classes), 1))
    picked = []
    for c in classes:
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) > quota:
            idx = idx[torch.randperm(len(idx), generator=generator)[:quota]]
        picked.append(idx)
    return torch.cat(picked).sort().values


@torch.no_grad()
def transfer_scores(
    ref_x: torch.Tensor,
    ref_y: torch.Tensor,
    query: torch.Tensor,
    num_classes: int,
    k: int = 1,
    chunk: int = 4096,
) -> torch.Tensor:
    """Nearest-neighbour label transfer: (R, D) reference rows and (R,) labels, (Q, D) query rows ->
    (Q, K) votes (one-hot of the nearest reference's label for ``k=1``; counts among the ``k`` nearest).

    Cosine similarity: rows are L2-normalised; one (chunk, R) matrix product per chunk of queries.
    """
    ref = F.normalize(ref_x.float(), dim=1)
    k = min(k, ref.shape[0])
    out = torch.zeros(query.shape[0], num_classes, device=query.device)
    for s in range(0, query.shape[0], chunk):
        q = F.normalize(query[s : s + chunk].float(), dim=1)
        nn_idx = (q @ ref.T).topk(k, dim=1).indices  # (n, k)
        votes = F.one_hot(ref_y[nn_idx], num_classes).sum(1).float()
        out[s : s + chunk] = votes
    return out


# -- the evaluation ----------------------------------------------------------------------------------
@dataclass
class DenseVolume:
    name: str
    features: torch.Tensor
    """(D, x, y, z) float32 on the evaluation device."""
    label: torch.Tensor | None
    """(X, Y, Z) contiguous labels 0..K-1 (CPU)."""
    shape: tuple[int, int, int]
    volume: Any
    """The preprocessed :class:`~anatssl.data.volume.Volume` (affine, landmarks)."""


def _contiguous_labels(raw: np.ndarray, values: list[int], where: str) -> torch.Tensor:
    arr = np.asarray(raw)
    arr = arr[0] if arr.ndim == 4 else arr
    lut = {v: i for i, v in enumerate(values)}
    out = np.zeros(arr.shape, dtype=np.int64)
    present = np.unique(arr)
    bad = [int(v) for v in present if int(v) not in lut]
    if bad:
        raise DataError(f"label of {where} holds values {bad} that dataset.json's 'labels' does not name")
    for v in present:
        out[arr == v] = lut[int(v)]
    return torch.from_numpy(out)


def load_split(
    cfg: FinetuneConfig,
    data: str | Path,
    out: Path,
    max_labeled: int | None,
    data_format: str | None = None,
) -> tuple[list[Any], list[Any], list[int], dict[int, str]]:
    """The fine-tuning split of ``data`` (the layout ``data_format``, None: detected) -> (first
    ``max_labeled`` training volumes (None: the whole pool), test volumes, label values, label map),
    read with the pretraining pipeline (``cfg.data``, ``model.in_channels`` channels)."""
    import dataclasses

    from anatssl.data.layouts import discover
    from anatssl.data.source import VolumeSource
    from anatssl.downstream.labelled import check_label_values, read_labelled_dataset, split_cases

    cases, label_map = read_labelled_dataset(
        data, need_labels=True, fmt=data_format, cache_dir=cfg.data.cache_dir, max_voxels=cfg.data.max_voxels
    )
    split = dataclasses.replace(cfg.split, labeled=max_labeled)
    train, test = split_cases(cases, split)
    check_label_values(train + test, label_map, cfg.data.max_voxels)
    items = {it.image.resolve(): it for it in discover(data, data_format)}
    missing = [c.image for c in train + test if c.image.resolve() not in items]
    if missing:
        raise DataError(f"{data}: cases {missing[:3]} of dataset.json were not found by the data reader")
    source = VolumeSource(
        [items[c.image.resolve()] for c in train + test],
        cfg.data,
        fallback_cache_dir=out / "cache",
        channels=cfg.model.in_channels,
    )
    vols = [source.load(i) for i in range(len(source))]
    return vols[: len(train)], vols[len(train) :], sorted(label_map), label_map


def dense_volumes(
    backbone: Backbone, vols: list[Any], values: list[int], cfg: FinetuneConfig, device: torch.device
) -> list[DenseVolume]:
    p = cfg.dense
    out = []
    for v in vols:
        f = multiscale_features(backbone, v.image, p.stride, p.levels, p.include_input, p.amp, device)
        lab = _contiguous_labels(v.label, values, v.path) if v.label is not None else None
        name = Path(v.path).name.split(".")[0]
        out.append(DenseVolume(name, f, lab, v.spatial_shape, v))
    return out


def probe_eval(
    train: list[DenseVolume], test: list[DenseVolume], names: list[str], cfg: FinetuneConfig
) -> dict[str, Any]:
    """Fit the probe on ``train``'s cells, score ``test`` -> summary + losses."""
    p = cfg.dense
    k = len(names) + 1
    x = torch.cat([rows(t.features) for t in train])
    y = torch.cat([cell_labels(t.label, p.stride).flatten() for t in train if t.label is not None]).to(
        x.device
    )
    std = Standardiser.fit(x)
    head, losses = fit_probe(
        std(x), y, k, p.steps, p.lr, p.hidden, p.batch_voxels, p.weight_decay, seed=cfg.seed
    )
    per_case = {}
    for t in test:
        pred = scores_to_labels(probe_scores(head, t.features, std), t.shape, p.stride).cpu()
        per_case[t.name] = dice_per_structure(pred, t.label, names)  # type: ignore[arg-type]
    return {
        **summarise_cases(per_case),
        "train_cases": [t.name for t in train],
        "loss_first": losses[0],
        "loss_final": losses[-1],
    }


def transfer_eval(
    train: list[DenseVolume], test: list[DenseVolume], names: list[str], cfg: FinetuneConfig
) -> dict[str, Any]:
    """Label transfer from a class-balanced sample of ``train``'s cells into every cell of ``test``."""
    p = cfg.dense
    k = len(names) + 1
    g = torch.Generator().manual_seed(cfg.seed)
    xs, ys = [], []
    for t in train:
        lab = cell_labels(t.label, p.stride).flatten()  # type: ignore[arg-type]
        idx = sample_reference(lab, p.reference_voxels, g)
        xs.append(rows(t.features)[idx.to(t.features.device)])
        ys.append(lab[idx])
    ref_x = torch.cat(xs)
    ref_y = torch.cat(ys).to(ref_x.device)
    std = Standardiser.fit(torch.cat([rows(t.features) for t in train]))
    ref_x = std(ref_x)
    per_case = {}
    for t in test:
        votes = transfer_scores(ref_x, ref_y, std(rows(t.features)), k, p.k)
        scores = votes.T.reshape(k, *t.features.shape[1:])
        pred = scores_to_labels(scores, t.shape, p.stride).cpu()
        per_case[t.name] = dice_per_structure(pred, t.label, names)  # type: ignore[arg-type]
    return {
        **summarise_cases(per_case),
        "train_cases": [t.name for t in train],
        "reference_cells": len(ref_y),
    }


def landmark_eval(test: list[DenseVolume], cfg: FinetuneConfig, seed: int = 0) -> dict[str, Any]:
    """Landmark matching across the held-out volumes with the dense features (see module docstring)."""
    from anatssl.anatomy.cache import fine_foreground
    from anatssl.anatomy.correspondence import evaluate_correspondence
    from anatssl.anatomy.embedding import EmbeddingMap
    from anatssl.anatomy.sam_model import grid_affine

    with_lm = [t for t in test if t.volume.landmarks]
    if len(with_lm) < 2:
        return {"available": False, "reason": "fewer than two held-out volumes carry landmarks"}
    s = cfg.dense.stride
    std = Standardiser.fit(torch.cat([rows(t.features) for t in with_lm]))
    maps: dict[str, EmbeddingMap] = {}
    for t in with_lm:
        z = std(rows(t.features)).T.reshape(t.features.shape)
        f = F.normalize(z, dim=0).cpu().numpy().astype(np.float16)
        aff = grid_affine(t.volume.affine, s)
        meta = {
            "source": t.volume.path,
            "volume_shape": list(t.shape),
            "volume_affine": np.asarray(t.volume.affine).tolist(),
            "fine_stride": s,
            "coarse_stride": s,
        }
        maps[t.volume.path] = EmbeddingMap(f, f, aff, aff, meta, fine_mask=fine_foreground(t.volume, s))
    metrics = evaluate_correspondence(
        [t.volume for t in with_lm], lambda v: maps[v.path], seed=seed, max_subjects=None
    )
    return {"available": True, **metrics}


def dense_evaluation(
    cfg: FinetuneConfig,
    data: str | Path,
    init: InitSource | str,
    out_dir: str | Path,
    labeled: Sequence[int] | None = None,
    probe: bool = True,
    transfer: bool = True,
    landmarks: bool = False,
    progress: Callable[[str], None] | None = None,
    data_format: str | None = None,
) -> dict[str, Any]:
    """Probe and/or label transfer at each labelled-volume count of ``labeled`` (features computed once
    for the largest; None: ``split.labeled``, else the whole pool), optional landmark matching; writes
    ``out_dir/config.yaml`` and ``metrics.json``.

    ``metrics.json``: ``probe`` / ``label_transfer`` -> {N: {mean_dice, dice (per structure),
    per_case_mean_dice, per_case, train_cases}}, ``landmarks`` (evaluate_correspondence's metrics),
    ``features`` (stride, channels, levels), ``init`` (what was loaded), ``seconds`` per stage.
    """
    from anatssl.config.loader import save_yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    init = resolve_init(init) if isinstance(init, str) else init
    if labeled is None and cfg.split.labeled is not None:
        labeled = [cfg.split.labeled]
    counts = sorted({int(n) for n in labeled or ()})
    if labeled is not None and (not counts or counts[0] < 1):
        raise DataError(f"labelled-volume counts must be >= 1, got {list(labeled)}")
    save_yaml(finetune_config_to_dict(cfg), out / "config.yaml")
    device = resolve_device(cfg.train.device)
    from anatssl.engine.precision import resolve_amp

    amp = resolve_amp(cfg.dense.amp, device)
    cfg.dense.amp = amp
    t0 = time.perf_counter()
    backbone, init_info = frozen_encoder(cfg, init)
    backbone.to(device)
    train_vols, test_vols, values, label_map = load_split(
        cfg, data, out, counts[-1] if counts else None, data_format
    )
    counts = counts or [len(train_vols)]
    names = [label_map[v] for v in values[1:]]
    if progress:
        progress(f"features of {len(train_vols) + len(test_vols)} volumes")
    train = dense_volumes(backbone, train_vols, values, cfg, device)
    test = dense_volumes(backbone, test_vols, values, cfg, device)
    seconds = {"features": time.perf_counter() - t0}
    metrics: dict[str, Any] = {
        "task": "dense",
        "init": init_info,
        "features": {
            "stride": cfg.dense.stride,
            "levels": list(cfg.dense.levels),
            "include_input": cfg.dense.include_input,
            "channels": int(train[0].features.shape[0]),
            "amp": amp,
        },
        "structures": names,
        "test_cases": [t.name for t in test],
        "labeled": counts,
    }
    for key, enabled, fn in (("probe", probe, probe_eval), ("label_transfer", transfer, transfer_eval)):
        if not enabled:
            continue
        t1 = time.perf_counter()
        metrics[key] = {}
        for n in counts:
            if progress:
                progress(f"{key} with {n} labelled volume{'s' if n > 1 else ''}")
            metrics[key][str(n)] = fn(train[:n], test, names, cfg)
            log.info("%s @%d: mean Dice %.4f", key, n, metrics[key][str(n)]["mean_dice"])
        seconds[key] = time.perf_counter() - t1
    if landmarks:
        t1 = time.perf_counter()
        metrics["landmarks"] = landmark_eval(test, cfg)
        seconds["landmarks"] = time.perf_counter() - t1
    metrics["seconds"] = seconds
    write_metrics_json(metrics, out)
    return metrics


def run_dense_task(
    cfg: FinetuneConfig,
    data: str | Path,
    init: InitSource | str,
    out_dir: str | Path,
    data_format: str | None = None,
) -> dict[str, Any]:
    """``anatssl finetune --task segmentation-probe`` / ``label-transfer`` with ``split.labeled`` (None:
    the whole pool) labelled volumes -> metrics.json with ``mean_dice``, ``dice``, ``per_case`` of that
    task at the top level (as a segmentation fine-tuning writes them) besides the full record."""
    probe = cfg.task == "segmentation-probe"
    m = dense_evaluation(
        cfg, data, init, out_dir, None, probe=probe, transfer=not probe, data_format=data_format
    )
    n = str(m["labeled"][0])
    res = m["probe" if probe else "label_transfer"][n]
    flat = {
        **m,
        "task": cfg.task,
        "labeled": int(n),
        "mean_dice": res["mean_dice"],
        "dice": res["dice"],
        "per_case_mean_dice": res["per_case_mean_dice"],
        "train_cases": res["train_cases"],
    }
    write_metrics_json(flat, out_dir)
    return flat
