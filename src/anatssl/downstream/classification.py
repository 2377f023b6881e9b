"""Volume classification (e.g. lesion present or not): encoder + pooled features + a linear head.

Each volume is read with MONAI (RAS, intensity scaled as in pretraining) and resized to
``classification.input_size``; the feature is the global average pool of the encoder levels
``pool_levels`` (default the two deepest, strides 16 and 32), concatenated. Fine-tuning trains the
encoder and a linear head end to end with cross-entropy; :mod:`anatssl.downstream.probe` fits a
scikit-learn linear model on the same features with the encoder frozen. The held-out split is
stratified by class with ``split.split_seed`` so that AUC is defined on the test set.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai import transforms as T
from torch import nn

from anatssl.config.loader import save_yaml
from anatssl.downstream.config import FinetuneConfig, SplitConfig, finetune_config_to_dict
from anatssl.downstream.labelled import LabelledCase, check_case_files, read_labelled_dataset, take_labeled
from anatssl.downstream.loop import build_finetune_optimizer, train_steps
from anatssl.downstream.report import write_metrics_json
from anatssl.downstream.segmentation import intensity_transform, load_init
from anatssl.downstream.weights import InitSource, encoder_prefixes, resolve_init
from anatssl.engine.device import autocast, resolve_device
from anatssl.engine.precision import precision_name, resolve_amp
from anatssl.errors import DataError
from anatssl.models.backbones import Backbone, build_backbone
from anatssl.models.boundary import plain

log = logging.getLogger("anatssl")


def read_classes(cases: list[LabelledCase], key: str, where: str) -> np.ndarray:
    """The integer class of every case (``dataset.json`` entry field ``key``); >= 2 classes required."""
    ys = []
    for c in cases:
        if key not in c.extra:
            raise DataError(
                f"{where}: entry {c.name} has no {key!r} field; classification needs an integer class per "
                f"volume in dataset.json (set classification.label_key to the field that holds it)"
            )
        try:
            ys.append(int(c.extra[key]))
        except (TypeError, ValueError) as e:
            raise DataError(
                f"{where}: entry {c.name} has {key}={c.extra[key]!r}, not an integer class"
            ) from e
    y = np.asarray(ys, dtype=np.int64)
    classes = np.unique(y)
    if classes.size < 2:
        raise DataError(
            f"{where}: every volume has {key}={int(classes[0])}; a classification dataset needs at least two "
            "classes (e.g. make lesion and lesion-free subjects)"
        )
    return y


def stratified_split(y: np.ndarray, split: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """-> (train indices, test indices): per-class shuffles with ``split_seed``; test proportional.

    The training pool is ordered by cycling through the classes, so the first ``labeled`` volumes hold
    every class as soon as ``labeled`` >= the number of classes. Why not ``labelled.split_dataset``
    (a plain shuffle, used for segmentation): a plain shuffle can leave a class out of the test set,
    where AUC is undefined; the ``--labeled`` rule is the same (``labelled.take_labeled``).
    """
    rng = np.random.default_rng(split.split_seed)
    classes = np.unique(y)
    per = {c: rng.permutation(np.nonzero(y == c)[0]) for c in classes}
    if split.n_test < classes.size:
        raise DataError(
            f"split.n_test = {split.n_test} cannot hold one volume of each of {classes.size} classes"
        )
    quota = {c: max(1, round(split.n_test * len(per[c]) / len(y))) for c in classes}
    while sum(quota.values()) > split.n_test:
        quota[max(quota, key=lambda c: quota[c])] -= 1
    while sum(quota.values()) < split.n_test:
        quota[max(classes, key=lambda c: len(per[c]) - quota[c])] += 1
    test = np.concatenate([per[c][: quota[c]] for c in classes])
    rest = {c: list(per[c][quota[c] :]) for c in classes}
    if any(not v for v in rest.values()):
        raise DataError(f"split.n_test = {split.n_test} leaves a class with no training volume; lower it")
    pool: list[int] = []
    while any(rest.values()):
        for c in classes:
            if rest[c]:
                pool.append(int(rest[c].pop(0)))
    pool = take_labeled(pool, split, len(y), f"{split.n_test} held out for testing")
    return np.asarray(pool, dtype=np.int64), np.sort(test)


def load_volumes(cfg: FinetuneConfig, cases: list[LabelledCase]) -> torch.Tensor:
    """-> (N, C, *input_size) float32 tensor, RAS, intensity-scaled, trilinearly resized."""
    tf = T.Compose(
        [
            T.LoadImaged(keys="image", ensure_channel_first=True, image_only=True),
            T.Orientationd(keys="image", axcodes="RAS", labels=None),
            intensity_transform(cfg.data),
            T.Resized(keys="image", spatial_size=cfg.classification.input_size, mode="trilinear"),
            T.EnsureTyped(keys="image", dtype=torch.float32, track_meta=False),
        ]
    )
    return torch.stack([plain(tf({"image": str(c.image)})["image"]) for c in cases])  # plain: model input


def pooled_features(backbone: Backbone, x: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
    """(B, C, X, Y, Z) -> (B, sum of the levels' channels): global average pools, concatenated."""
    feats = backbone.encode(x)
    return torch.cat([feats[lv].mean(dim=(2, 3, 4)) for lv in levels], dim=1)


class ClassificationNet(nn.Module):
    """(B, C, X, Y, Z) -> (B, K) logits; backbone modules at the top level (as SegmentationNet) + ``head``."""

    def __init__(self, backbone: Backbone, num_classes: int, levels: tuple[int, ...]) -> None:
        super().__init__()
        for name, module in backbone.named_children():
            self.add_module(name, module)
        self.levels = tuple(levels)
        self.head = nn.Linear(sum(backbone.feature_channels[lv] for lv in self.levels), num_classes)
        object.__setattr__(self, "_backbone", backbone)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self._backbone, x, self.levels)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def classification_scores(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """(N,) labels and (N, K) class scores -> accuracy and AUC (binary, or one-vs-rest macro)."""
    from sklearn.metrics import roc_auc_score

    acc = float((scores.argmax(1) == y).mean())
    auc = float("nan")
    if np.unique(y).size >= 2:
        if scores.shape[1] == 2:
            auc = float(roc_auc_score(y, scores[:, 1] - scores[:, 0]))
        else:
            probs = np.exp(scores - scores.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            auc = float(roc_auc_score(y, probs, multi_class="ovr", labels=np.arange(scores.shape[1])))
    return {"accuracy": acc, "auc": auc}


def prepare(cfg: FinetuneConfig, data: str | Path, data_format: str | None = None) -> dict[str, Any]:
    """Read the dataset (as the layout ``data_format`` when given, else detected), split it, load the
    volumes: what fine-tuning and probing share."""
    cases, _ = read_labelled_dataset(data, need_labels=False, fmt=data_format)
    check_case_files(cases, cfg.data.max_voxels, labels=False)
    y = read_classes(cases, cfg.classification.label_key, str(data))
    tr, te = stratified_split(y, cfg.split)
    x = load_volumes(cfg, [cases[i] for i in np.concatenate([tr, te])])
    return {
        "x_train": x[: len(tr)],
        "y_train": y[tr],
        "x_test": x[len(tr) :],
        "y_test": y[te],
        "train_cases": [cases[i].name for i in tr],
        "test_cases": [cases[i].name for i in te],
        "num_classes": int(y.max()) + 1,
    }


def finetune_classification(
    cfg: FinetuneConfig,
    data: str | Path,
    init: InitSource | str,
    out_dir: str | Path,
    data_format: str | None = None,
) -> dict[str, Any]:
    """Fine-tune encoder + linear head with cross-entropy; accuracy / AUC on the held-out split."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    init = resolve_init(init) if isinstance(init, str) else init
    d = prepare(cfg, data, data_format)
    save_yaml(finetune_config_to_dict(cfg), out / "config.yaml")
    device = resolve_device(cfg.train.device)
    amp = resolve_amp(cfg.train.amp, device)
    torch.manual_seed(cfg.seed)
    net = ClassificationNet(build_backbone(cfg.model), d["num_classes"], cfg.classification.pool_levels)
    init_info = load_init(net, init, cfg.model.backbone)
    loaded = set(init_info.pop("loaded_keys", []))
    net.to(device)
    frozen = encoder_prefixes(cfg.model.backbone) if cfg.classification.freeze_encoder else ()
    opt = build_finetune_optimizer(net, cfg, loaded, frozen)
    g = torch.Generator().manual_seed(cfg.seed)
    xs, ys = d["x_train"], torch.as_tensor(d["y_train"])
    bs = min(cfg.train.batch_size, len(xs))

    def batches() -> Any:
        while True:
            for idx in torch.randperm(len(xs), generator=g).split(bs):
                xb = xs[idx]
                for ax in (2, 3, 4):  # random flips: the label does not depend on orientation
                    if torch.rand((), generator=g) < 0.5:
                        xb = xb.flip(ax)
                yield xb, ys[idx]

    def loss_fn(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        with autocast(device, amp):
            logits = net(batch[0].to(device))
        return F.cross_entropy(logits.float(), batch[1].to(device))  # fp32 softmax and reduction

    t0 = time.perf_counter()
    history = train_steps(net, opt, batches(), loss_fn, cfg, out, "finetune classification", amp=amp)
    train_s = time.perf_counter() - t0
    net.eval()
    with torch.no_grad(), autocast(device, amp):
        scores = torch.cat([net(x[None].to(device)).float().cpu() for x in d["x_test"]]).numpy()
    metrics: dict[str, Any] = {
        "task": "classification",
        "init": init_info,
        "labeled": len(xs),
        "train_cases": d["train_cases"],
        "test_cases": d["test_cases"],
        "steps": cfg.train.max_steps,
        "precision": precision_name(amp),
        "final_loss": history[-1]["loss"],
        "train_seconds": train_s,
        **classification_scores(d["y_test"], scores),
        "per_case": {
            n: {"label": int(t), "scores": s.tolist()}
            for n, t, s in zip(d["test_cases"], d["y_test"], scores)
        },
    }
    write_metrics_json(metrics, out)
    log.info(
        "classification: accuracy %.3f, AUC %.3f on %d held-out volumes",
        metrics["accuracy"],
        metrics["auc"],
        len(scores),
    )
    return metrics
