"""Frozen-feature linear probe: pooled encoder features + scikit-learn, as S2DC evaluates an encoder.

The encoder is not trained: each volume's pooled features (:func:`pooled_features`) are standardised
and fitted with ``LogisticRegression`` (default; probabilities for AUC) or ``LinearSVC`` (decision
values for AUC), regularisation ``classification.probe_c``. This measures what the pretraining put in
the features, independent of fine-tuning hyperparameters.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anatssl.config.loader import save_yaml
from anatssl.downstream.classification import ClassificationNet, classification_scores, prepare
from anatssl.downstream.config import FinetuneConfig, finetune_config_to_dict
from anatssl.downstream.report import write_metrics_json
from anatssl.downstream.segmentation import load_init
from anatssl.downstream.weights import InitSource, resolve_init
from anatssl.engine.device import resolve_device
from anatssl.models.backbones import build_backbone


@torch.no_grad()
def extract(net: ClassificationNet, x: torch.Tensor, device: torch.device) -> np.ndarray:
    net.eval()
    return torch.cat([net.features(v[None].to(device)).cpu() for v in x]).numpy()


def run_probe(
    cfg: FinetuneConfig,
    data: str | Path,
    init: InitSource | str,
    out_dir: str | Path,
    data_format: str | None = None,
) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    init = resolve_init(init) if isinstance(init, str) else init
    d = prepare(cfg, data, data_format)
    if np.unique(d["y_train"]).size < 2:
        from anatssl.errors import DataError

        raise DataError(f"the {len(d['y_train'])} training volumes hold one class only; raise --labeled")
    save_yaml(finetune_config_to_dict(cfg), out / "config.yaml")
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.seed)
    net = ClassificationNet(build_backbone(cfg.model), d["num_classes"], cfg.classification.pool_levels)
    init_info = load_init(net, init, cfg.model.backbone)
    init_info.pop("loaded_keys", None)
    net.to(device)
    t0 = time.perf_counter()
    f_train, f_test = extract(net, d["x_train"], device), extract(net, d["x_test"], device)
    c = cfg.classification.probe_c
    clf = (
        LogisticRegression(C=c, max_iter=5000)
        if cfg.classification.probe == "logistic"
        else LinearSVC(C=c, max_iter=20000)
    )
    model = make_pipeline(StandardScaler(), clf).fit(f_train, d["y_train"])
    if hasattr(model, "predict_proba"):
        scores = np.log(np.clip(model.predict_proba(f_test), 1e-12, None))
    else:
        dec = model.decision_function(f_test)
        scores = np.stack([-dec, dec], 1) if dec.ndim == 1 else dec
    full = np.full((len(scores), d["num_classes"]), -np.inf)
    full[:, model.classes_] = scores
    metrics: dict[str, Any] = {
        "task": "probe",
        "probe": cfg.classification.probe,
        "init": init_info,
        "labeled": len(f_train),
        "feature_dim": int(f_train.shape[1]),
        "train_cases": d["train_cases"],
        "test_cases": d["test_cases"],
        "train_seconds": time.perf_counter() - t0,
        **classification_scores(d["y_test"], np.where(np.isfinite(full), full, -1e9)),
    }
    write_metrics_json(metrics, out)
    return metrics
