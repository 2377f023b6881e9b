"""Segmentation fine-tuning: a Swin-UNETR (Hatamizadeh et al. 2022) whose encoder may be pretrained.

The network is the shared backbone (encoder + UNETR decoder) plus MONAI's ``UnetOutBlock`` named
``out``: for the ``swin`` backbone its state dict *is* ``monai.networks.nets.SwinUNETR``'s, so a
fine-tuned ``model.pt`` loads into MONAI with ``strict=True``. Protocol (Tang et al. 2022, MONAI's
BTCV tutorial, scaled down): DiceCE loss on random crops balanced between foreground and background,
AdamW, and sliding-window inference with Gaussian blending on whole held-out volumes, scored per
structure with Dice and HD95 (mm). No model selection on the test set: the evaluated weights are the
last step's (``train.select=last``) or those of the best Dice on a separate validation split
(``train.select=best``, ``split.n_val`` volumes, scored every ``train.val_every`` steps), so scratch
and pretrained runs are compared under the same budget and rule. Training and inference run under
autocast at ``train.amp`` (``auto``: bf16 where the hardware computes it natively); the loss is
computed in fp32 on fp32 logits.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai import transforms as T
from monai.data import CacheDataset, DataLoader, Dataset, list_data_collate
from monai.losses import DiceCELoss
from monai.networks.blocks import UnetOutBlock
from torch import nn

from anatssl.config.loader import save_yaml
from anatssl.config.schema import DataConfig
from anatssl.downstream.config import FinetuneConfig, finetune_config_to_dict
from anatssl.downstream.inference import predict_volume
from anatssl.downstream.labelled import (
    LabelledCase,
    check_channels,
    check_label_values,
    read_labelled_dataset,
    split_dataset,
)
from anatssl.downstream.loop import Validator, build_finetune_optimizer, cycle, train_steps
from anatssl.downstream.metrics import (
    empty_structure_counts,
    mean_over_cases,
    segmentation_metrics,
)
from anatssl.downstream.overlays import save_overlay
from anatssl.downstream.report import write_metrics_json
from anatssl.downstream.weights import InitSource, encoder_prefixes, load_backbone_weights, resolve_init
from anatssl.engine import distributed as D
from anatssl.engine.checkpoint import atomic_torch_save
from anatssl.engine.device import autocast, resolve_device
from anatssl.engine.precision import precision_name, resolve_amp
from anatssl.errors import ConfigError
from anatssl.models.backbones import Backbone, build_backbone

log = logging.getLogger("anatssl")


class SegmentationNet(nn.Module):
    """(B, C_in, X, Y, Z) -> (B, K, X, Y, Z) logits: backbone encode -> decode -> ``out`` (1x1x1 conv).

    The backbone's submodules are registered at the top level (no ``backbone.`` prefix) and its SSL
    ``recon_head`` is left out, so for ``swin`` the keys equal ``SwinUNETR(...).state_dict()``'s.
    """

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        if backbone._parameters or backbone._buffers:
            raise TypeError(f"{type(backbone).__name__} keeps tensors outside submodules; cannot wrap it")
        for name, module in backbone.named_children():
            if name != "recon_head":
                self.add_module(name, module)
        self.out = UnetOutBlock(3, backbone.decoder_channels[-1], num_classes)
        object.__setattr__(self, "_backbone", backbone)  # shares the modules above; not registered twice

    @property
    def backbone(self) -> Backbone:
        bb: Backbone = self.__dict__["_backbone"]
        return bb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bb = self.backbone
        return self.out(bb.decode(x, bb.encode(x))[-1])


def intensity_transform(data: DataConfig, key: str = "image") -> T.MapTransform:
    """CT: clip to ``hu_window`` and scale to [0, 1] (as pretraining's VolumeSource); MRI: percentiles."""
    if data.modality == "mri":
        lo, hi = data.mri_percentiles
        return T.ScaleIntensityRangePercentilesd(
            keys=key, lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True
        )
    lo, hi = data.hu_window
    return T.ScaleIntensityRanged(keys=key, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)


def base_transforms(cfg: FinetuneConfig, label_values: list[int]) -> list[Any]:
    """Load, RAS, optional resampling, intensity scaling, label values -> 0..K-1."""
    keys = ["image", "label"]
    tf: list[Any] = [
        T.LoadImaged(keys=keys, ensure_channel_first=True, image_only=True),
        T.Orientationd(keys=keys, axcodes="RAS", labels=None),
    ]
    if cfg.data.spacing is not None:
        tf.append(T.Spacingd(keys=keys, pixdim=tuple(cfg.data.spacing), mode=("bilinear", "nearest")))
    tf += [
        intensity_transform(cfg.data),
        T.MapLabelValued(
            keys="label", orig_labels=label_values, target_labels=list(range(len(label_values)))
        ),
        T.EnsureTyped(keys="image", dtype=torch.float32),
        T.EnsureTyped(keys="label", dtype=torch.long),
    ]
    return tf


MRI_AUGMENT_PROB = 0.5
"""Probability of each MRI intensity transform per training crop: half the crops keep the scanner's own
contrast, as MONAI's BTCV recipe keeps half of them unshifted (``RandShiftIntensityd(prob=0.5)``)."""


def mri_augmentation(data: DataConfig, key: str = "image") -> list[T.MapTransform]:
    """The MRI intensity augmentation of pretraining's views (:class:`anatssl.views.intensity.MRIIntensity`:
    gamma, bias field, gain, in that order) as MONAI dict transforms for fine-tuning's training crops
    ``(C, X, Y, Z)`` on the percentile scale, from ``data.mri_gamma``, ``data.mri_bias_field`` (degree-3
    Legendre field, one for every channel: one coil) and ``data.mri_contrast``; each applied with
    probability :data:`MRI_AUGMENT_PROB`. A setting that means "off" (gamma or contrast (1, 1), field 0)
    leaves its transform out. MONAI draws gamma uniformly over the range (pretraining: log-uniform, per
    channel); the range is the same."""
    out: list[T.MapTransform] = []
    g0, g1 = data.mri_gamma
    if (g0, g1) != (1.0, 1.0):
        out.append(T.RandAdjustContrastd(keys=key, prob=MRI_AUGMENT_PROB, gamma=(g0, g1)))
    if data.mri_bias_field > 0:
        b = data.mri_bias_field
        out.append(T.RandBiasFieldd(keys=key, degree=3, coeff_range=(-b, b), prob=MRI_AUGMENT_PROB))
    c0, c1 = data.mri_contrast
    if (c0, c1) != (1.0, 1.0):
        out.append(T.RandScaleIntensityd(keys=key, factors=(c0 - 1.0, c1 - 1.0), prob=MRI_AUGMENT_PROB))
    return out


def train_transforms(cfg: FinetuneConfig, num_classes: int) -> list[Any]:
    """Pad to the crop, cut ``samples_per_volume`` crops (``segmentation.crop``), augment (MRI: also
    :func:`mri_augmentation`)."""
    p = cfg.segmentation
    keys = ["image", "label"]
    tf: list[Any] = [T.SpatialPadd(keys=keys, spatial_size=p.roi_size)]
    if p.crop == "classes":
        ratios = list(p.class_ratios) if p.class_ratios is not None else [1.0] * num_classes
        if len(ratios) != num_classes:
            raise ConfigError(
                f"segmentation.class_ratios has {len(ratios)} values but the label map has {num_classes} "
                "classes (background first); give one ratio per class or leave it null (equal ratios)"
            )
        tf += [
            # deterministic, so CacheDataset computes each volume's class indices once
            T.ClassesToIndicesd(keys="label", num_classes=num_classes, indices_postfix="_cls_indices"),
            T.RandCropByLabelClassesd(
                keys=keys,
                label_key="label",
                spatial_size=p.roi_size,
                ratios=ratios,
                num_classes=num_classes,
                num_samples=p.samples_per_volume,
                indices_key="label_cls_indices",
            ),
        ]
    else:
        tf.append(
            T.RandCropByPosNegLabeld(
                keys=keys,
                label_key="label",
                spatial_size=p.roi_size,
                pos=p.pos_fraction,
                neg=1.0 - p.pos_fraction,
                num_samples=p.samples_per_volume,
                image_key="image",
                image_threshold=0.0,
            )
        )
    if p.augment:  # MONAI BTCV tutorial augmentation
        if p.flips:
            tf += [T.RandFlipd(keys=keys, prob=0.1, spatial_axis=a) for a in range(3)]
            tf.append(T.RandRotate90d(keys=keys, prob=0.1, max_k=3))
        tf.append(T.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5))
        if cfg.data.modality == "mri":
            tf += mri_augmentation(cfg.data)
    tf.append(T.SelectItemsd(keys=keys))  # drop the class indices before collation
    return tf


def label_frequencies(cases: list[LabelledCase], values: list[int]) -> np.ndarray:
    """Voxel share of each label value (in ``values`` order) over the label files of ``cases``."""
    import nibabel as nib

    counts = np.zeros(len(values))
    for c in cases:
        arr = np.asarray(nib.load(str(c.label)).dataobj).astype(np.int64)  # type: ignore[attr-defined]
        u, n = np.unique(arr, return_counts=True)
        for v, k in zip(u.tolist(), n.tolist()):
            counts[values.index(v)] += k
    return counts / max(counts.sum(), 1)


def inverse_sqrt_class_weights(freq: np.ndarray, cap: float = 20.0) -> torch.Tensor:
    """1 / sqrt(frequency), at most ``cap`` x the most frequent class's, mean 1 over present classes."""
    present = freq > 0
    w = np.zeros_like(freq, dtype=np.float64)
    w[present] = np.minimum(np.sqrt(freq[present].max() / freq[present]), cap)
    w[present] /= w[present].mean()
    return torch.as_tensor(w, dtype=torch.float32)


def rank_shard(cases: list[LabelledCase]) -> list[LabelledCase]:
    """This rank's training volumes under DDP: every W-th, from its rank on, padded by wrap-around to
    ``ceil(n / W)`` (``DistributedSampler``'s convention, so a few volumes are seen twice as often when
    W does not divide n; with fewer volumes than ranks, ranks share volumes and differ by the seed of
    their random crops). One process: all of them. Each rank caches only its shard."""
    w, r, n = D.world_size(), D.rank(), len(cases)
    if w == 1 or n == 0:
        return list(cases)
    return [cases[(r + k * w) % n] for k in range(-(-n // w))]


def _items(cases: list[LabelledCase]) -> list[dict[str, Any]]:
    """MONAI dicts; a multi-file case's ``image`` is its list of channel files, which ``LoadImaged``
    stacks along a new first axis (``_stack_images``: ``original_channel_dim`` = 0, so
    ``ensure_channel_first`` keeps it) -> (C, X, Y, Z)."""
    return [
        {
            "image": [str(p) for p in c.channels] if c.channels else str(c.image),
            "label": str(c.label),
            "name": c.name,
        }
        for c in cases
    ]


def build_segmentation_net(cfg: FinetuneConfig, num_classes: int) -> SegmentationNet:
    torch.manual_seed(cfg.seed)
    return SegmentationNet(build_backbone(cfg.model), num_classes)


def load_init(net: nn.Module, init: InitSource, backbone_name: str) -> dict[str, Any]:
    """Load pretrained weights into ``net`` (all but ``out``); -> the load report for metrics.json."""
    if init.kind == "scratch" or init.state_dict is None:
        return {"kind": "scratch"}
    report = load_backbone_weights(net, init.state_dict, str(init.path), backbone_name=backbone_name)
    log.info(report.describe())
    return {
        "kind": init.kind,
        "path": str(init.path),
        **{k: v for k, v in init.meta.items() if k in ("method", "step", "run")},
        "load": report.summary(),
        "loaded_keys": report.loaded,
    }


def finetune_segmentation(
    cfg: FinetuneConfig,
    data: str | Path,
    init: InitSource | str,
    out_dir: str | Path,
    data_format: str | None = None,
) -> dict[str, Any]:
    """Fine-tune on ``data``'s labelled training split, evaluate held-out volumes -> metrics dict.

    ``data_format``: the dataset layout (:data:`anatssl.data.layouts.KNOWN_FORMATS`; None: detected).

    Writes ``out_dir/config.yaml``, ``metrics.jsonl`` (loss per step), ``metrics.json``,
    ``predictions/<case>.nii.gz``, ``report/overlay_<case>.png`` and ``model.pt``.
    """
    device = resolve_device(cfg.train.device)
    D.init_from_env(device)  # under torchrun: one process per GPU (gloo on CPU); else nothing
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if D.is_main():
        (out / "metrics.jsonl").unlink(missing_ok=True)
    init = resolve_init(init) if isinstance(init, str) else init
    cases, label_map = read_labelled_dataset(
        data, need_labels=True, fmt=data_format, cache_dir=cfg.data.cache_dir, max_voxels=cfg.data.max_voxels
    )
    check_channels(cases, cfg.model.in_channels, data)
    split = split_dataset(cases, cfg.split)
    train_cases, val_cases, test_cases = split.train, split.val, split.test
    check_label_values(train_cases + val_cases + test_cases, label_map, cfg.data.max_voxels)
    values = sorted(label_map)
    contiguous = {i: label_map[v] for i, v in enumerate(values)}
    if D.is_main():
        save_yaml(finetune_config_to_dict(cfg), out / "config.yaml")
    amp = resolve_amp(cfg.train.amp, device)
    log.info(
        "segmentation fine-tuning in %s (train.amp=%s, %s%s)%s",
        precision_name(amp),
        cfg.train.amp,
        device.type,
        f", {D.world_size()} processes" if D.is_dist() else "",
        ", channels-last" if cfg.train.channels_last else "",
    )

    net = build_segmentation_net(cfg, len(values))
    init_info = load_init(net, init, cfg.model.backbone)
    loaded = set(init_info.pop("loaded_keys", []))
    net.to(device)
    if cfg.train.channels_last:
        net.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]

    base = base_transforms(cfg, values)
    train_tf = T.Compose(base + train_transforms(cfg, len(values)))
    rank_seed = cfg.seed + 1000 * D.rank()  # rank 0 (and one process) keeps cfg.seed
    train_tf.set_random_state(seed=rank_seed)
    shard = rank_shard(train_cases)
    ds = CacheDataset(_items(shard), train_tf, cache_rate=1.0, num_workers=0, progress=False)
    g = torch.Generator().manual_seed(rank_seed)
    loader = DataLoader(
        ds,
        batch_size=min(cfg.train.batch_size, len(ds)),
        shuffle=True,
        generator=g,
        num_workers=cfg.train.num_workers,
        collate_fn=list_data_collate,
        drop_last=True,
    )
    weights = None
    if cfg.segmentation.class_weights == "inverse_sqrt":
        weights = inverse_sqrt_class_weights(label_frequencies(train_cases, values))
        log.info("class weights (inverse sqrt frequency): %s", [round(w, 2) for w in weights.tolist()])
    loss_f = DiceCELoss(
        to_onehot_y=True,
        softmax=True,
        batch=cfg.segmentation.dice_batch,
        weight=weights.to(device) if weights is not None else None,
    )

    def loss_fn(batch: dict[str, Any]) -> torch.Tensor:
        x, y = batch["image"].to(device), batch["label"].to(device)
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with autocast(device, amp):
            logits = model(x)
        return loss_f(logits.float(), y)  # softmax, Dice and CE reductions in fp32

    model: nn.Module = net
    if D.is_dist():  # gradients averaged over ranks; validation and evaluation use net, on rank 0
        model = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )

    validator = None
    if val_cases and cfg.train.val_every > 0 and D.is_main():
        val_items = load_cases(cfg, val_cases, values)

        def score() -> tuple[float, dict[str, Any]]:
            per = [
                segmentation_metrics(
                    predict_case(net, cfg, item, device, amp), item["label"][0], contiguous, hd95=False
                )
                for item in val_items
            ]
            dice = mean_over_cases(per)["dice"]
            return dice["mean"], {"dice": {k: v for k, v in dice.items() if k != "mean"}}

        validator = Validator(score, cfg.train.val_every, keep_best=cfg.train.select == "best")

    frozen = encoder_prefixes(cfg.model.backbone) if cfg.segmentation.freeze_encoder else ()
    opt = build_finetune_optimizer(net, cfg, loaded, frozen)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # RandCropByLabelClassesd warns on every crop of a volume that lacks a class (its ratio is then
        # 0 for that volume, which is what we want); the warning says nothing actionable
        warnings.filterwarnings("ignore", message=r".*no available indices of class")
        history = train_steps(
            net, opt, cycle(loader), loss_fn, cfg, out, "finetune segmentation", validator, amp
        )
    train_s = time.perf_counter() - t0
    rank_sums = history[-1].get("rank_weight_sums")
    if D.is_dist():
        D.broadcast_state(net)  # every rank ends with rank 0's weights (its best, with train.select=best)
        if not D.is_main():  # rank 0 evaluates and writes; the others are done
            return {"task": "segmentation", "rank": D.rank(), "rank_weight_sums": rank_sums}
    last_step = cfg.train.max_steps  # steps are 1-based: the state after max_steps updates
    if validator is not None:
        selection = validator.summary(cfg.train.select, last_step)
    else:
        selection = {"rule": "last", "step": last_step, "val_dice": None}

    t1 = time.perf_counter()
    per_case = evaluate_segmentation(net, cfg, test_cases, values, contiguous, out, device, amp)
    eval_s = time.perf_counter() - t1
    means = mean_over_cases(list(per_case.values()))
    metrics = {
        "task": "segmentation",
        "init": init_info,
        "labeled": len(train_cases),
        "train_cases": [c.name for c in train_cases],
        "val_cases": [c.name for c in val_cases],
        "test_cases": [c.name for c in test_cases],
        "structures": [label_map[v] for v in values[1:]],
        "steps": cfg.train.max_steps,
        "precision": precision_name(amp),
        "processes": D.world_size(),
        "rank_weight_sums": rank_sums,  # under DDP, one per process after the last step (equal)
        "amp_setting": cfg.train.amp,
        "channels_last": cfg.train.channels_last,
        "selection": selection,
        "class_weights": weights.tolist() if weights is not None else None,
        "val_curve": [  # mean validation Dice and Dice per structure at each validation step
            {k: r[k] for k in ("step", "val_dice", "dice")} for r in (validator.curve if validator else [])
        ],
        "final_loss": history[-1]["loss"],
        "train_seconds": train_s,
        "eval_seconds": eval_s,
        "dice": means["dice"],
        "hd95_mm": means["hd95"],
        "mean_dice": means["dice"]["mean"],
        "mean_hd95_mm": means["hd95"]["mean"],
        "empty_structures": empty_structure_counts(list(per_case.values())),
        "per_case": per_case,
    }
    write_metrics_json(metrics, out)
    if cfg.train.save_model:
        atomic_torch_save(  # a full disk leaves no half-written model.pt and names it
            {
                "state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
                "anatssl": {
                    "task": "segmentation",
                    "labels": {str(v): label_map[v] for v in values},
                    "model": finetune_config_to_dict(cfg)["model"],
                },
            },
            out / "model.pt",
        )
    log.info(
        "segmentation (%s, %s weights): mean Dice %.4f, mean HD95 %.2f mm on %d held-out volumes",
        metrics["precision"],
        f"step {selection['step']} ({selection['rule']})",
        metrics["mean_dice"],
        metrics["mean_hd95_mm"],
        len(test_cases),
    )
    return metrics


def load_cases(cfg: FinetuneConfig, cases: list[LabelledCase], values: list[int]) -> list[dict[str, Any]]:
    """Whole volumes through the base transforms (kept in memory for repeated validation)."""
    ds = Dataset(_items(cases), T.Compose(base_transforms(cfg, values)))
    return [ds[i] for i in range(len(ds))]


def predict_case(
    net: nn.Module, cfg: FinetuneConfig, item: dict[str, Any], device: torch.device, amp: str = "none"
) -> torch.Tensor:
    """Sliding-window argmax of one loaded case -> (X, Y, Z) contiguous label indices on the CPU."""
    p = cfg.segmentation
    logits = predict_volume(
        net,
        item["image"][None].to(device),
        p.roi_size,
        p.sw_batch_size,
        p.sw_overlap,
        p.sw_mode,
        amp=amp,
        channels_last=cfg.train.channels_last,
    )
    return logits.argmax(1)[0].cpu()


def evaluate_segmentation(
    net: nn.Module,
    cfg: FinetuneConfig,
    cases: list[LabelledCase],
    values: list[int],
    contiguous: dict[int, str],
    out: Path,
    device: torch.device,
    amp: str = "none",
) -> dict[str, Any]:
    """Sliding-window prediction of each whole held-out volume -> {case: {"dice", "hd95", ...}}."""
    import nibabel as nib

    p = cfg.segmentation
    ds = Dataset(_items(cases), T.Compose(base_transforms(cfg, values)))
    lut = np.asarray(values)
    per_case: dict[str, Any] = {}
    for i in range(len(ds)):
        item = ds[i]
        image, label = item["image"], item["label"]
        pred = predict_case(net, cfg, item, device, amp)
        affine = np.asarray(image.affine, dtype=np.float64)
        spacing = [float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)]
        per_case[item["name"]] = segmentation_metrics(pred, label[0].cpu(), contiguous, spacing)
        if p.save_predictions:
            (out / "predictions").mkdir(exist_ok=True)
            nib.save(
                nib.Nifti1Image(lut[pred.numpy()].astype(np.int16), affine),
                str(out / "predictions" / f"{item['name']}.nii.gz"),
            )
        if i < p.overlay_cases:
            save_overlay(
                np.asarray(image[0]),
                np.asarray(label[0]),
                pred.numpy(),
                out / "report" / f"overlay_{item['name']}.png",
                f"{item['name']}: mean Dice {np.nanmean(list(per_case[item['name']]['dice'].values())):.3f}",
            )
    return per_case
