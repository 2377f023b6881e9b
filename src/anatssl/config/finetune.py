"""Dataclass schemas of the fine-tuning configuration (segmentation, classification, probe).

Resolved as pretraining is (:func:`anatssl.runs.resolve.load_finetune_config`): dataclass defaults <-
``configs/finetune/<task>_<preset>.yaml`` <- [the pretraining run's ``model`` section and input
scaling] <- ``--config`` YAML <- ``key=value`` overrides. When the encoder comes from a pretraining
run, the ``model`` section is taken from that run's ``config.yaml`` (the weights fix the
architecture); explicit ``model.*`` overrides still apply on top and produce a clear key-mismatch
error if they contradict the weights.

Defaults follow the Swin-UNETR BTCV recipe (Hatamizadeh et al. 2022; Tang et al. 2022): AdamW,
lr 1e-4, weight decay 1e-5, DiceCE loss, sliding-window inference with overlap 0.5, scaled down to
CPU-sized crops for the ``tiny`` presets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from anatssl.config.loader import setting, to_dict
from anatssl.config.schema import DataConfig, ModelConfig, check_common
from anatssl.errors import ConfigError

TASKS = ("segmentation", "classification", "probe", "segmentation-probe", "label-transfer")


@dataclass
class FinetuneOptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr`` (a function of the step)."""

    lr: float = setting(1e-4, gt=0)
    """Swin-UNETR's fine-tuning lr (BTCV recipe)."""
    min_lr: float = setting(1e-6, ge=0)
    warmup_steps: int = setting(10, ge=0)
    weight_decay: float = setting(1e-5, ge=0)
    encoder_lr_mult: float = setting(1.0, ge=0)
    """Multiplier on the lr of pretrained (loaded) parameters; 1.0 = plain end-to-end fine-tuning."""
    clip_grad: float = 1.0
    """Global-norm gradient clipping; 0 disables."""


@dataclass
class FinetuneTrainConfig:
    max_steps: int = setting(200, ge=1)
    batch_size: int = setting(2, ge=1)
    """Volumes per step (each gives ``samples_per_volume`` crops for segmentation)."""
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    num_workers: int = setting(0, ge=0)
    log_every: int = setting(10, ge=1)
    progress: bool = True
    save_model: bool = True
    """Write ``<out>/model.pt`` (``{"state_dict"}``; for ``swin`` segmentation a SwinUNETR state dict)."""
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    """Precision of training steps and sliding-window inference: ``auto`` (bf16 where the CPU has
    AMX/AVX512-BF16 or the GPU supports bf16, fp32 elsewhere), ``none`` (fp32), ``bf16``, ``fp16``
    (CUDA). Losses and softmax are computed in fp32; metrics.json records ``precision``."""
    channels_last: bool = False
    """Channels-last 3D memory format for the network and its inputs (segmentation)."""
    val_every: int = setting(0, ge=0)
    """Validation Dice on ``split.n_val`` volumes every this many steps (and at the last step); 0: none."""
    select: Literal["last", "best"] = "last"
    """Which weights are evaluated and saved: ``last`` (the final step) or ``best`` (highest
    validation Dice; needs ``split.n_val >= 1`` and ``val_every >= 1``)."""


@dataclass
class SplitConfig:
    """A fixed held-out test split, independent of the training seed, so runs are comparable.

    The labelled cases are shuffled once with ``split_seed``; the first ``n_test`` are the test set,
    the rest the training pool; ``labeled: N`` takes the first N of the pool, so a larger N always
    contains a smaller one (nested few-shot subsets).
    """

    n_test: int = setting(4, ge=1)
    n_val: int = setting(0, ge=0)
    """Validation volumes, taken after the test set from the same shuffle (never a test volume, never
    a training one): for the learning curve and ``train.select=best``."""
    split_seed: int = 0
    labeled: int | None = setting(None, ge=1)
    """Number of labelled training volumes (few-shot); ``None`` uses the whole pool."""


@dataclass
class SegmentationParams:
    roi_size: tuple[int, int, int] = setting((64, 64, 64), ge=32)
    """Training crop and sliding-window size; multiples of the backbone's 32."""
    samples_per_volume: int = setting(2, ge=1)
    """Crops per volume per step (the crop sampler's num_samples)."""
    crop: Literal["posneg", "classes"] = "posneg"
    """Crop sampler: ``posneg`` (RandCropByPosNegLabeld: centred on foreground with ``pos_fraction``)
    or ``classes`` (RandCropByLabelClassesd: centred on a voxel of a class drawn with ``class_ratios``,
    so small structures are seen as often as large ones)."""
    pos_fraction: float = setting(0.5, ge=0, le=1)
    """``crop=posneg``: probability a crop is centred on foreground (pos / (pos + neg))."""
    class_ratios: tuple[float, ...] | None = setting(None, ge=0)
    """``crop=classes``: relative frequency of each class (background first) as a crop centre;
    ``None``: every class equally often."""
    dice_batch: bool = False
    """Dice term over the whole batch per class (MONAI ``DiceCELoss(batch=True)``) rather than per
    sample: a class absent from one crop then does not pull its prediction to zero on its own."""
    class_weights: Literal["none", "inverse_sqrt"] = "none"
    """Class weights of the DiceCE loss (both terms): ``inverse_sqrt``: 1 / sqrt(voxel frequency of the
    class in the training volumes), capped at 20x the most frequent class's, scaled to mean 1 over the
    classes present (0 for a class no training volume holds); written to metrics.json."""
    flips: bool = True
    """With ``augment``: random flips and 90-degree rotations (off for labels that name a side,
    e.g. left/right kidney, where a flip makes the image contradict its label)."""
    sw_overlap: float = setting(0.5, ge=0, lt=1)
    sw_batch_size: int = setting(2, ge=1)
    sw_mode: Literal["gaussian", "constant"] = "gaussian"
    augment: bool = True
    """Random flips and intensity shift/scale (MONAI's BTCV tutorial transforms)."""
    save_predictions: bool = True
    """Write held-out predictions as NIfTI under ``<out>/predictions``."""
    overlay_cases: int = setting(2, ge=0)
    """Held-out cases drawn as PNG overlays (3 axial slices each) under ``<out>/report``."""
    freeze_encoder: bool = False


@dataclass
class ClassificationParams:
    label_key: str = "lesion"
    """Key of the class in each ``dataset.json`` entry (``anatssl synth --lesions`` writes ``lesion`` 0/1)."""
    input_size: tuple[int, int, int] = setting((64, 64, 64), ge=32)
    """Volumes are resized (trilinear) to this size; a multiple of 32."""
    pool_levels: tuple[int, ...] = setting((3, 4), ge=0, le=4)
    """Encoder levels (0 = stride 2 ... 4 = stride 32) average-pooled and concatenated into the feature."""
    probe: Literal["logistic", "svm"] = "logistic"
    """Frozen-feature probe: ``logistic`` (LogisticRegression) or ``svm`` (LinearSVC), as S2DC evaluates."""
    probe_c: float = setting(1.0, gt=0)
    freeze_encoder: bool = False


@dataclass
class DenseParams:
    """Frozen-encoder dense evaluation (``segmentation-probe``, ``label-transfer``): dense_probe.py.

    Defaults: the recipe measured in issue 13 (features at stride 2, 300 Adam steps at lr 1e-2).
    """

    stride: int = 2
    """Common stride of the multi-scale features (1, 2 or 4): the grid the probe is trained on."""
    levels: tuple[int, ...] = setting((0, 1, 2, 3, 4), ge=0, le=4)
    """Encoder levels used (0 = stride 2 ... 4 = stride 32), each resized to ``stride``."""
    include_input: bool = True
    """Add the input intensities (averaged to ``stride``) as channels."""
    amp: str = "auto"
    """Feature extraction precision: ``auto`` (bf16 where native), ``bf16``, ``none`` (fp32)."""
    steps: int = setting(300, ge=1)
    lr: float = setting(1e-2, gt=0)
    hidden: int = setting(0, ge=0)
    """0: a linear (1x1x1) head; > 0: Linear -> ReLU -> Linear with this many hidden units."""
    batch_voxels: int = setting(16384, ge=1)
    """Cells per Adam step (all of them when there are fewer)."""
    weight_decay: float = setting(0.0, ge=0)
    reference_voxels: int = setting(2048, ge=1)
    """Label transfer: cells sampled per labelled volume (class-balanced) as the neighbours to match."""
    k: int = setting(1, ge=1)
    """Label transfer: neighbours that vote (1: the nearest one's label)."""


@dataclass
class FinetuneConfig:
    task: Literal["segmentation", "classification", "probe", "segmentation-probe", "label-transfer"] = (
        "segmentation"
    )
    preset: str = "tiny"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    segmentation: SegmentationParams = field(default_factory=SegmentationParams)
    classification: ClassificationParams = field(default_factory=ClassificationParams)
    dense: DenseParams = field(default_factory=DenseParams)


def check_finetune_config(cfg: FinetuneConfig) -> None:
    """Range checks across fields (types and enumerated values are checked by the loader)."""
    check_common(cfg.train.max_steps, cfg.train.batch_size, cfg.optim.lr)
    if cfg.split.n_test < 1:
        raise ConfigError(f"split.n_test must be >= 1, got {cfg.split.n_test}")
    if cfg.split.labeled is not None and cfg.split.labeled < 1:
        raise ConfigError(f"split.labeled (--labeled) must be >= 1, got {cfg.split.labeled}")
    if cfg.split.n_val < 0:
        raise ConfigError(f"split.n_val must be >= 0, got {cfg.split.n_val}")
    if cfg.train.select == "best" and (cfg.split.n_val < 1 or cfg.train.val_every < 1):
        raise ConfigError(
            "train.select=best needs validation volumes and a validation interval: "
            f"split.n_val = {cfg.split.n_val}, train.val_every = {cfg.train.val_every}; "
            "set split.n_val >= 1 and train.val_every >= 1, or train.select=last"
        )
    for name, size in (
        ("segmentation.roi_size", cfg.segmentation.roi_size),
        ("classification.input_size", cfg.classification.input_size),
    ):
        if any(s % 32 or s < 32 for s in size):
            raise ConfigError(f"{name} = {tuple(size)}: every size must be a positive multiple of 32")
    if cfg.optim.min_lr > cfg.optim.lr:
        raise ConfigError(f"optim.min_lr ({cfg.optim.min_lr}) must be <= optim.lr ({cfg.optim.lr})")
    seg = cfg.segmentation
    if seg.crop == "classes" and seg.class_ratios is not None and not sum(seg.class_ratios) > 0:
        raise ConfigError(f"segmentation.class_ratios must not all be 0, got {list(seg.class_ratios)}")
    if not 0.0 <= cfg.segmentation.sw_overlap < 1.0:
        raise ConfigError(f"segmentation.sw_overlap must be in [0, 1), got {cfg.segmentation.sw_overlap}")
    if any(not 0 <= lv <= 4 for lv in cfg.classification.pool_levels):
        raise ConfigError(f"classification.pool_levels must be in 0..4, got {cfg.classification.pool_levels}")
    d = cfg.dense
    if d.stride not in (1, 2, 4):
        raise ConfigError(f"dense.stride must be 1, 2 or 4, got {d.stride}")
    if not d.levels or any(not 0 <= lv <= 4 for lv in d.levels):
        raise ConfigError(f"dense.levels must be a non-empty subset of 0..4, got {d.levels}")
    if d.amp not in ("auto", "none", "bf16"):
        raise ConfigError(f"dense.amp = {d.amp!r}; valid values: auto, none, bf16")
    if min(d.steps, d.batch_voxels, d.reference_voxels, d.k) < 1 or d.lr <= 0:
        raise ConfigError(
            "dense.steps, dense.batch_voxels, dense.reference_voxels and dense.k must be >= 1 and dense.lr "
            f"> 0; got steps={d.steps}, batch_voxels={d.batch_voxels}, "
            f"reference_voxels={d.reference_voxels}, k={d.k}, lr={d.lr}"
        )


def preset_task(task: str) -> str:
    """The preset family of a task: ``probe`` uses the classification presets; the dense evaluations
    (``segmentation-probe``, ``label-transfer``) the segmentation ones (same data, model, split)."""
    if task in ("segmentation-probe", "label-transfer"):
        return "segmentation"
    return "classification" if task == "probe" else task


def finetune_config_to_dict(cfg: FinetuneConfig) -> dict[str, Any]:
    out: dict[str, Any] = to_dict(cfg)
    return out
