"""Fine-tuning configuration: the schemas live in :mod:`anatssl.config.finetune`, the resolution chain
(preset <- run-derived sections <- YAML <- overrides, shared with pretraining) in
:mod:`anatssl.runs.resolve`; this module names both for the downstream code."""

from __future__ import annotations

from anatssl.config.finetune import (
    TASKS,
    ClassificationParams,
    DenseParams,
    FinetuneConfig,
    FinetuneOptimConfig,
    FinetuneTrainConfig,
    SegmentationParams,
    SplitConfig,
    finetune_config_to_dict,
)
from anatssl.runs.resolve import build_finetune_config, load_finetune_config

__all__ = [
    "TASKS",
    "ClassificationParams",
    "DenseParams",
    "FinetuneConfig",
    "FinetuneOptimConfig",
    "FinetuneTrainConfig",
    "SegmentationParams",
    "SplitConfig",
    "build_finetune_config",
    "finetune_config_to_dict",
    "load_finetune_config",
]
