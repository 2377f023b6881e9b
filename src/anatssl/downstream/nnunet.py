"""A ``resenc`` run for nnU-Net v2: the weights file ``-pretrained_weights`` reads, and a plan fragment.

nnU-Net's ``load_pretrained_weights(network, fname)`` reads ``torch.load(fname)['network_weights']``,
requires every key of its network except those containing ``.seg_layers.`` with the same shape, and
loads them. Our ``resenc`` backbone's state dict is a ``ResidualEncoderUNet`` state dict minus
``decoder.seg_layers.*`` (plus ``recon_head.*``, dropped here), so the file holds exactly the keys that
loader asks for, provided the plan's network has the same ``arch_kwargs``: the fragment carries them,
with the patch size, spacing and normalisation the user merges into the plans of the matching planner
(docs/nnunet.md). The weights file holds tensors and JSON-typed metadata only, so nnU-Net's
``torch.load`` (weights-only by default since torch 2.6) reads it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from anatssl.config.loader import from_dict
from anatssl.config.schema import ModelConfig
from anatssl.engine.checkpoint import atomic_torch_save
from anatssl.errors import CheckpointError
from anatssl.models.backbones.resenc import NETWORK_CLASS, RESENC_VARIANTS, arch_kwargs, variant_name

CONFIGURATION = "3d_fullres"
NORMALIZATION = {"ct": "CTNormalization", "mri": "ZScoreNormalization"}


def fragment_path(weights_path: str | Path) -> Path:
    """``model.pt`` -> ``model.plans.json`` (written beside the weights)."""
    p = Path(weights_path)
    return p.with_name(p.stem + ".plans.json")


def plan_fragment(
    model: Mapping[str, Any],
    data: Mapping[str, Any],
    patch_size: tuple[int, ...] | None = None,
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's ``model`` / ``data`` sections -> ``{"plans_name", "planner", "configurations":
    {"3d_fullres": {...}}, "anatssl": {...}}``, to merge into nnU-Net's plans JSON (:func:`merge_fragment`).

    ``spacing`` is the run's ``data.spacing`` when it resampled to one, else absent (keep nnU-Net's);
    ``normalization_schemes``: ``CTNormalization`` for CT runs, ``ZScoreNormalization`` for MRI (one
    input channel each). ``patch_size`` defaults to the variant's (one that gives this topology).
    """
    cfg = from_dict(ModelConfig, dict(model))
    if cfg.backbone != "resenc":
        raise CheckpointError(
            f"--format nnunet needs a run of the 'resenc' backbone (nnU-Net's ResidualEncoderUNet); this run "
            f"trained {cfg.backbone!r}: export it with --format safetensors"
        )
    name = variant_name(cfg)
    variant = RESENC_VARIANTS[name]
    patch = tuple(patch_size) if patch_size is not None else variant.patch_size
    bad = [s for s in patch if s % 32 or s < 64]
    if len(patch) != 3 or bad:
        raise CheckpointError(
            f"nnU-Net patch size {patch} must be 3 sizes, each a multiple of 32 and at least 64 (5 poolings "
            "by 2 in this topology)"
        )
    modality = str(data.get("modality", "ct"))
    conf: dict[str, Any] = {
        "patch_size": list(patch),
        "normalization_schemes": [NORMALIZATION.get(modality, "ZScoreNormalization")] * cfg.in_channels,
        "use_mask_for_norm": [False] * cfg.in_channels,
        "architecture": {
            "network_class_name": NETWORK_CLASS,
            "arch_kwargs": arch_kwargs(cfg),
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
    }
    if data.get("spacing"):
        conf["spacing"] = [float(s) for s in data["spacing"]]
    return {
        "plans_name": variant.plans_name,
        "planner": variant.planner,
        "configurations": {CONFIGURATION: conf},
        "anatssl": {"variant": name, "in_channels": cfg.in_channels, **dict(source or {})},
    }


def merge_fragment(plans: Mapping[str, Any], fragment: Mapping[str, Any]) -> dict[str, Any]:
    """nnU-Net plans JSON + fragment -> new plans: the fragment's ``3d_fullres`` keys replace the planned
    ones (architecture, patch size, normalisation, spacing if given); everything else is nnU-Net's."""
    out = copy.deepcopy(dict(plans))
    confs = out.setdefault("configurations", {})
    for name, conf in fragment["configurations"].items():
        confs.setdefault(name, {}).update(copy.deepcopy(conf))
    return out


def write_nnunet_export(
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    out: str | Path,
    patch_size: tuple[int, ...] | None = None,
) -> tuple[Path, Path]:
    """Write ``{'network_weights': tensors, 'anatssl': meta}`` to ``out`` and the plan fragment beside it.

    Returns (weights path, fragment path). Both are written atomically (temp file + rename).
    """
    model, data = meta.get("model") or {}, meta.get("data") or {}
    source = {k: meta[k] for k in ("run", "method", "step") if k in meta}
    fragment = plan_fragment(model, data, patch_size, source)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plain_meta = json.loads(json.dumps(dict(meta), default=str))
    atomic_torch_save({"network_weights": dict(tensors), "anatssl": plain_meta}, out)
    frag = fragment_path(out)
    tmp = frag.with_name(frag.name + ".tmp")
    try:
        tmp.write_text(json.dumps(fragment, indent=2) + "\n")
        tmp.replace(frag)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out, frag
