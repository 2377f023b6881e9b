"""Dataclass schemas of the pretraining configuration.

Resolution order (DINOv2 style, :mod:`anatssl.runs.resolve`): dataclass defaults <-
``configs/pretrain/<method>_<preset>.yaml`` <- ``--config`` YAML <- ``key=value`` overrides. Enumerated
settings are ``Literal`` types, checked by the loader. Method-specific numbers live in a section named after
the method (``swinssl.temperature=0.5``), whose dataclass the method registers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from anatssl.config.loader import setting
from anatssl.errors import ConfigError


@dataclass
class DataConfig:
    """How scans are read and normalised before a method cuts its views."""

    modality: Literal["ct", "mri"] = "ct"
    """``ct``: clip to ``hu_window`` and scale to [0, 1]; ``mri``: per-volume percentile scaling."""
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    """CT only (HU): ignored, with a warning when changed, for ``modality=mri``."""
    mri_percentiles: tuple[float, float] = (0.5, 99.5)
    """MRI only: these per-scan, per-channel percentiles map to 0 and 1."""
    mri_gamma: tuple[float, float] = setting((0.7, 1.4), gt=0)
    """MRI only: every method's views draw a gamma exponent log-uniformly in this range, per view and
    channel (``anatssl.views.intensity.MRIIntensity``); (1, 1) = off."""
    mri_bias_field: float = setting(0.05, ge=0)
    """MRI only: largest coefficient of the views' random multiplicative bias field (degree-3 Legendre
    polynomials, MONAI ``RandBiasField``); 0.05 = factors of about 0.8-1.2 across a crop; 0 = off."""
    mri_contrast: tuple[float, float] = setting((0.9, 1.1), gt=0)
    """MRI only: the views' random overall gain range; (1, 1) = off."""
    spacing: tuple[float, float, float] | None = None
    """Resample to this spacing (mm) before caching; ``None`` keeps each scan's native grid."""
    foreground_crop: bool = True
    """Crop each scan to the bounding box of its body (intensity above the window floor)."""
    cache_dir: str | None = None
    """Preprocessed-array cache; default ``<data>/.anatssl_cache`` (or ``<out>/cache`` if read-only)."""
    num_workers: int = setting(0, ge=0)
    """DataLoader worker processes that cut views (0: in the training process)."""
    max_voxels: int = setting(2**32, ge=1)
    """A scan whose header claims more voxels (channels included) is refused before it is decoded
    (2^32 = 16 GiB as float32, beyond any real CT/MRI: a 512 x 512 x 2000 CT has 0.5 x 10^9)."""


@dataclass
class ModelConfig:
    """The shared backbone every method trains (see ``anatssl.models.backbones``)."""

    backbone: str = "swin"
    variant: str = ""
    """A backbone's named size where it has a table of them: ``resenc``: ``L`` (default, nnU-Net ResEnc L),
    ``M``, ``tiny`` (widths and blocks from the table; ``feature_size`` is not read). Others ignore it."""
    feature_size: int = setting(48, ge=1)
    depths: tuple[int, ...] = setting((2, 2, 2, 2), ge=1)
    num_heads: tuple[int, ...] = setting((3, 6, 12, 24), ge=1)
    window_size: int = setting(7, ge=1)
    use_v2: bool = False
    in_channels: int = setting(1, ge=1)
    drop_path_rate: float = setting(0.0, ge=0, lt=1)
    grad_checkpoint: bool = False


@dataclass
class OptimConfig:
    """AdamW with schedules that are functions of the global step (DINO's cosine_scheduler)."""

    lr: float = setting(1e-4, gt=0)
    """Peak learning rate (after ``lr_scaling``)."""
    min_lr: float = setting(1e-6, ge=0)
    warmup_steps: int = setting(100, ge=0)
    lr_scaling: Literal["none", "linear"] = "none"
    """``none`` or ``linear`` (lr * total_batch / 256, as DINO / Alice)."""
    weight_decay: float = setting(0.05, ge=0)
    weight_decay_end: float | None = setting(None, ge=0)
    """Cosine weight-decay schedule end value; ``None`` keeps it constant."""
    betas: tuple[float, float] = setting((0.9, 0.999), ge=0, lt=1)
    clip_grad: float = setting(1.0, ge=0)
    """Gradient clipping; 0 disables. Norm over all parameters unless the method says otherwise."""


@dataclass
class TrainConfig:
    max_steps: int = setting(1000, ge=1)
    """Length of the run: every schedule (lr, weight decay, EMA momentum ...) spans these steps."""
    stop_after: int | None = setting(None, ge=1)
    """Pause after this many steps (checkpoint saved); ``--resume`` continues on the same schedules."""
    max_minutes: float | None = setting(None, gt=0)
    """Pause once this much wall time has passed in this invocation (checkpoint saved at the step that
    crosses it); ``--resume`` continues on the same schedules. For job time limits and fixed budgets."""
    batch_size: int = setting(2, ge=1)
    """Volumes per process per step."""
    grad_accum: int = setting(1, ge=1)
    amp: Literal["none", "bf16", "fp16"] = "none"
    """``none`` | ``bf16`` | ``fp16`` (fp16 uses a GradScaler; CUDA only for fp16)."""
    device: str = "auto"
    compile: bool = False
    log_every: int = setting(1, ge=1)
    ckpt_every: int = setting(500, ge=1)
    """Write ``last.pt`` every this many steps (and at the last one)."""
    keep_checkpoints: bool = False
    """Keep ``step_XXXXXX.pt`` copies at every ``ckpt_every`` besides ``last.pt``."""
    tensorboard: bool = True
    progress: bool = True
    sync_batchnorm: bool = True
    """Under DDP, every BatchNorm of the method (S2DC's heads, SAM) normalises with the statistics of
    all ranks' batches (:mod:`anatssl.engine.sync_batchnorm`), as one process on the whole batch would;
    ``false`` keeps per-rank statistics (cheaper: no all-reduce per layer). No effect on one process."""
    dist_timeout_minutes: float = 30.0
    """Multi-process runs: how long a collective waits for the other ranks before the run fails (rank 0
    alone checks the data at start-up while the others wait; raise it for very large datasets)."""


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
