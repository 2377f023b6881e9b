"""Dataclass schemas of the pretraining configuration.

Resolution order (DINOv2 style, :mod:`anatssl.runs.resolve`): dataclass defaults <-
``configs/pretrain/<method>_<preset>.yaml`` <- ``--config`` YAML <- ``key=value`` overrides. Enumerated
settings are ``Literal`` types, checked by the loader. Method-specific numbers live in a section named after
the method (``swinssl.temperature=0.5``), whose dataclass the method registers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from anatssl.errors import ConfigError


@dataclass
class DataConfig:
    """How scans are read and normalised before a method cuts its views."""

    modality: Literal["ct", "mri"] = "ct"
    """``ct``: clip to ``hu_window`` and scale to [0, 1]; ``mri``: per-volume percentile scaling."""
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    mri_percentiles: tuple[float, float] = (0.5, 99.5)
    spacing: tuple[float, float, float] | None = None
    """Resample to this spacing (mm) before caching; ``None`` keeps each scan's native grid."""
    foreground_crop: bool = True
    """Crop each scan to the bounding box of its body (intensity above the window floor)."""
    cache_dir: str | None = None
    """Preprocessed-array cache; default ``<data>/.anatssl_cache`` (or ``<out>/cache`` if read-only)."""
    num_workers: int = 0
    """DataLoader worker processes that cut views (0: in the training process)."""


@dataclass
class ModelConfig:
    """The shared backbone every method trains (see ``anatssl.models.backbones``)."""

    backbone: str = "swin"
    feature_size: int = 48
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    use_v2: bool = False
    in_channels: int = 1
    drop_path_rate: float = 0.0
    grad_checkpoint: bool = False


@dataclass
class OptimConfig:
    """AdamW with schedules that are functions of the global step (DINO's cosine_scheduler)."""

    lr: float = 1e-4
    """Peak learning rate (after ``lr_scaling``)."""
    min_lr: float = 1e-6
    warmup_steps: int = 100
    lr_scaling: Literal["none", "linear"] = "none"
    """``none`` or ``linear`` (lr * total_batch / 256, as DINO / Alice)."""
    weight_decay: float = 0.05
    weight_decay_end: float | None = None
    """Cosine weight-decay schedule end value; ``None`` keeps it constant."""
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 1.0
    """Gradient clipping; 0 disables. Norm over all parameters unless the method says otherwise."""


@dataclass
class TrainConfig:
    max_steps: int = 1000
    """Length of the run: every schedule (lr, weight decay, EMA momentum ...) spans these steps."""
    stop_after: int | None = None
    """Pause after this many steps (checkpoint saved); ``--resume`` continues on the same schedules."""
    max_minutes: float | None = None
    """Pause once this much wall time has passed in this invocation (checkpoint saved at the step that
    crosses it); ``--resume`` continues on the same schedules. For job time limits and fixed budgets."""
    batch_size: int = 2
    """Volumes per process per step."""
    grad_accum: int = 1
    amp: Literal["none", "bf16", "fp16"] = "none"
    """``none`` | ``bf16`` | ``fp16`` (fp16 uses a GradScaler; CUDA only for fp16)."""
    device: str = "auto"
    compile: bool = False
    log_every: int = 1
    ckpt_every: int = 500
    keep_checkpoints: bool = False
    """Keep ``step_XXXXXX.pt`` copies at every ``ckpt_every`` besides ``last.pt``."""
    tensorboard: bool = True
    progress: bool = True


@dataclass
class PretrainConfig:
    method: str = "swinssl"
    preset: str = "tiny"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    params: Any = None
    """The method's own dataclass; written as a YAML section named after the method."""


def check_common(max_steps: int, batch_size: int, lr: float) -> None:
    """The checks every training config shares (pretraining and fine-tuning)."""
    if max_steps < 1:
        raise ConfigError(f"train.max_steps must be >= 1, got {max_steps}")
    if batch_size < 1:
        raise ConfigError(f"train.batch_size must be >= 1, got {batch_size}")
    if lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {lr}")
