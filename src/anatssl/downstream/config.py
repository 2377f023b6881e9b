"""Dataclass schemas of the fine-tuning configuration (segmentation, classification, probe).

Resolution order, as for pretraining (DINOv2 style): dataclass defaults <-
``configs/finetune/<task>_<preset>.yaml`` <- ``--config`` YAML <- ``key=value`` overrides. When the
encoder comes from a pretraining run, the ``model`` section is taken from that run's ``config.yaml``
(the weights fix the architecture); explicit ``model.*`` overrides still apply on top and produce a
clear key-mismatch error if they contradict the weights.

Defaults follow the Swin-UNETR BTCV recipe (Hatamizadeh et al. 2022; Tang et al. 2022): AdamW,
lr 1e-4, weight decay 1e-5, DiceCE loss, sliding-window inference with overlap 0.5, scaled down to
CPU-sized crops for the ``tiny`` presets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anatssl.config.loader import (
    deep_merge,
    from_dict,
    parse_overrides,
    read_preset,
    read_yaml,
    to_dict,
)
from anatssl.config.schema import DataConfig, ModelConfig
from anatssl.errors import ConfigError

TASKS = ("segmentation", "classification", "probe")


@dataclass
class FinetuneOptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr`` (a function of the step)."""

    lr: float = 1e-4
    """Swin-UNETR's fine-tuning lr (BTCV recipe)."""
    min_lr: float = 1e-6
    warmup_steps: int = 10
    weight_decay: float = 1e-5
    encoder_lr_mult: float = 1.0
    """Multiplier on the lr of pretrained (loaded) parameters; 1.0 = plain end-to-end fine-tuning."""
    clip_grad: float = 1.0
    """Global-norm gradient clipping; 0 disables."""


@dataclass
class FinetuneTrainConfig:
    max_steps: int = 200
    batch_size: int = 2
    """Volumes per step (each gives ``samples_per_volume`` crops for segmentation)."""
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    num_workers: int = 0
    log_every: int = 10
    progress: bool = True
    save_model: bool = True
    """Write ``<out>/model.pt`` (``{"state_dict"}``; for ``swin`` segmentation a SwinUNETR state dict)."""


@dataclass
class SplitConfig:
    """A fixed held-out test split, independent of the training seed, so runs are comparable.

    The labelled cases are shuffled once with ``split_seed``; the first ``n_test`` are the test set,
    the rest the training pool; ``labeled: N`` takes the first N of the pool, so a larger N always
    contains a smaller one (nested few-shot subsets).
    """

    n_test: int = 4
    split_seed: int = 0
    labeled: int | None = None
    """Number of labelled training volumes (few-shot); ``None`` uses the whole pool."""


@dataclass
class SegmentationParams:
    roi_size: tuple[int, int, int] = (64, 64, 64)
    """Training crop and sliding-window size; multiples of the backbone's 32."""
    samples_per_volume: int = 2
    """Crops per volume per step (RandCropByPosNegLabeld num_samples)."""
    pos_fraction: float = 0.5
    """Probability a crop is centred on foreground (pos / (pos + neg))."""
    sw_overlap: float = 0.5
    sw_batch_size: int = 2
    sw_mode: str = "gaussian"
    augment: bool = True
    """Random flips and intensity shift/scale (MONAI's BTCV tutorial transforms)."""
    save_predictions: bool = True
    """Write held-out predictions as NIfTI under ``<out>/predictions``."""
    overlay_cases: int = 2
    """Held-out cases drawn as PNG overlays (3 axial slices each) under ``<out>/report``."""
    freeze_encoder: bool = False


@dataclass
class ClassificationParams:
    label_key: str = "lesion"
    """Key of the class in each ``dataset.json`` entry (``anatssl synth --lesions`` writes ``lesion`` 0/1)."""
    input_size: tuple[int, int, int] = (64, 64, 64)
    """Volumes are resized (trilinear) to this size; a multiple of 32."""
    pool_levels: tuple[int, ...] = (3, 4)
    """Encoder levels (0 = stride 2 ... 4 = stride 32) average-pooled and concatenated into the feature."""
    probe: str = "logistic"
    """Frozen-feature probe: ``logistic`` (LogisticRegression) or ``svm`` (LinearSVC), as S2DC evaluates."""
    probe_c: float = 1.0
    freeze_encoder: bool = False


@dataclass
class FinetuneConfig:
    task: str = "segmentation"
    preset: str = "tiny"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    segmentation: SegmentationParams = field(default_factory=SegmentationParams)
    classification: ClassificationParams = field(default_factory=ClassificationParams)


def _check(cfg: FinetuneConfig) -> None:
    if cfg.task not in TASKS:
        raise ConfigError(f"task = {cfg.task!r}; valid values: {', '.join(TASKS)}")
    if cfg.train.max_steps < 1:
        raise ConfigError(f"train.max_steps must be >= 1, got {cfg.train.max_steps}")
    if cfg.train.batch_size < 1:
        raise ConfigError(f"train.batch_size must be >= 1, got {cfg.train.batch_size}")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {cfg.optim.lr}")
    if cfg.split.n_test < 1:
        raise ConfigError(f"split.n_test must be >= 1, got {cfg.split.n_test}")
    if cfg.split.labeled is not None and cfg.split.labeled < 1:
        raise ConfigError(f"split.labeled (--labeled) must be >= 1, got {cfg.split.labeled}")
    for name, size in (
        ("segmentation.roi_size", cfg.segmentation.roi_size),
        ("classification.input_size", cfg.classification.input_size),
    ):
        if any(s % 32 or s < 32 for s in size):
            raise ConfigError(f"{name} = {tuple(size)}: every size must be a positive multiple of 32")
    if not 0.0 <= cfg.segmentation.sw_overlap < 1.0:
        raise ConfigError(f"segmentation.sw_overlap must be in [0, 1), got {cfg.segmentation.sw_overlap}")
    if cfg.segmentation.sw_mode not in ("gaussian", "constant"):
        raise ConfigError(
            f"segmentation.sw_mode = {cfg.segmentation.sw_mode!r}; valid values: gaussian, constant"
        )
    if cfg.classification.probe not in ("logistic", "svm"):
        raise ConfigError(f"classification.probe = {cfg.classification.probe!r}; valid values: logistic, svm")
    if any(not 0 <= lv <= 4 for lv in cfg.classification.pool_levels):
        raise ConfigError(f"classification.pool_levels must be in 0..4, got {cfg.classification.pool_levels}")


def build_finetune_config(raw: dict[str, Any]) -> FinetuneConfig:
    cfg = from_dict(FinetuneConfig, raw)
    _check(cfg)
    return cfg


def _preset_task(task: str) -> str:
    return "classification" if task == "probe" else task


def load_finetune_config(
    task: str,
    preset: str | None = "tiny",
    config_file: str | Path | None = None,
    overrides: Sequence[str] | dict[str, Any] = (),
    from_init: dict[str, Any] | None = None,
) -> FinetuneConfig:
    """defaults <- preset <- [sections taken from the pretrained weights] <- YAML <- overrides.

    ``from_init``: ``{"model": {...}, "data": {...}}`` of the pretraining run that made the weights;
    its ``model`` section replaces the preset's (the weights fix the architecture) and its intensity
    settings (modality, window, percentiles, spacing) are kept so fine-tuning sees inputs scaled as in
    pretraining.
    """
    raw: dict[str, Any] = {"task": task}
    if preset:
        what = f"fine-tuning preset {preset!r} for task {task!r}"
        raw = deep_merge(raw, read_preset("finetune", f"{_preset_task(task)}_", preset, what))
        raw["preset"] = preset
    if from_init:
        if from_init.get("model"):
            raw["model"] = dict(from_init["model"])
        keep = ("modality", "hu_window", "mri_percentiles", "spacing")
        data = {k: v for k, v in (from_init.get("data") or {}).items() if k in keep}
        raw = deep_merge(raw, {"data": data})
    if config_file:
        raw = deep_merge(raw, read_yaml(config_file))
    ov = parse_overrides(overrides) if not isinstance(overrides, dict) else overrides
    raw = deep_merge(raw, ov)
    raw["task"] = task
    return build_finetune_config(raw)


def finetune_config_to_dict(cfg: FinetuneConfig) -> dict[str, Any]:
    out: dict[str, Any] = to_dict(cfg)
    return out
