"""Re-score a fine-tuned segmentation model (``anatssl finetune`` output) on a labelled dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from anatssl.config.loader import read_yaml
from anatssl.downstream.config import build_finetune_config
from anatssl.downstream.labelled import (
    check_label_values,
    parse_label_map,
    read_labelled_dataset,
    split_cases,
)
from anatssl.downstream.metrics import mean_over_cases
from anatssl.downstream.report import write_metrics_json
from anatssl.downstream.segmentation import SegmentationNet, evaluate_segmentation
from anatssl.engine.device import resolve_device
from anatssl.engine.precision import precision_name, resolve_amp
from anatssl.errors import CheckpointError, DataError, load_failure_reason
from anatssl.models.backbones import build_backbone


def evaluate_finetuned_segmentation(
    model_dir: str | Path,
    data: str | Path,
    out_dir: str | Path,
    cases: str = "test",
    device: str = "auto",
    data_format: str | None = None,
) -> dict[str, Any]:
    """Sliding-window Dice / HD95 of ``model_dir/model.pt`` on ``data`` (``data_format``: its layout,
    :data:`anatssl.data.layouts.KNOWN_FORMATS`; None: detected).

    ``cases``: ``test`` (the fine-tuning run's held-out split, recomputed from its ``split`` settings:
    use it with the data the model was fine-tuned on) or ``all`` (every labelled case: new data).
    The dataset's label map must equal the model's.
    """
    model_dir, out = Path(model_dir), Path(out_dir)
    cfg_path, model_path = model_dir / "config.yaml", model_dir / "model.pt"
    if not cfg_path.is_file() or not model_path.is_file():
        raise CheckpointError(
            f"{model_dir} is not an `anatssl finetune` output (needs config.yaml and model.pt)"
        )
    cfg = build_finetune_config(read_yaml(cfg_path))
    if cfg.task != "segmentation":
        raise CheckpointError(f"{model_dir} is a {cfg.task!r} model, not segmentation")
    try:
        ckpt = torch.load(model_path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, a zip error, KeyError('101') on a non-checkpoint ...
        raise CheckpointError(
            f"cannot read {model_path}: {load_failure_reason(e)}; re-run `anatssl finetune` to write it again"
        ) from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("anatssl"), dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{model_path} is not a model written by `anatssl finetune` (no 'state_dict' and 'anatssl' "
            "entries); re-run `anatssl finetune` to write it again"
        )
    model_labels = parse_label_map(ckpt["anatssl"].get("labels"), str(model_path))
    all_cases, label_map = read_labelled_dataset(
        data, need_labels=True, fmt=data_format, cache_dir=cfg.data.cache_dir, max_voxels=cfg.data.max_voxels
    )
    if label_map != model_labels:
        raise DataError(f"{data}: its labels {label_map} differ from the model's {model_labels}")
    test = split_cases(all_cases, cfg.split)[1] if cases == "test" else all_cases
    check_label_values(test, label_map, cfg.data.max_voxels)
    values = sorted(label_map)
    net = SegmentationNet(build_backbone(cfg.model), len(values))
    net.load_state_dict(ckpt["state_dict"], strict=True)
    dev = resolve_device(device)
    amp = resolve_amp(cfg.train.amp, dev)  # the fine-tuning run's precision setting
    net.to(dev)
    if cfg.train.channels_last:
        net.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    out.mkdir(parents=True, exist_ok=True)
    per_case = evaluate_segmentation(
        net, cfg, test, values, {i: label_map[v] for i, v in enumerate(values)}, out, dev, amp
    )
    means = mean_over_cases(list(per_case.values()))
    metrics = {
        "task": "segmentation",
        "model": str(model_dir),
        "cases": [c.name for c in test],
        "precision": precision_name(amp),
        "dice": means["dice"],
        "hd95_mm": means["hd95"],
        "mean_dice": means["dice"]["mean"],
        "mean_hd95_mm": means["hd95"]["mean"],
        "per_case": per_case,
    }
    write_metrics_json(metrics, out)
    return metrics
