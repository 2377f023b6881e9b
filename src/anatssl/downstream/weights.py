"""Encoder weights in and out: pretraining runs, exported files, Tang et al. / MONAI Swin checkpoints.

Our ``swin`` backbone's state-dict keys already *are* MONAI ``SwinUNETR`` keys (``swinViT.*``,
``encoder1..4``, ``encoder10``, ``decoder1..5``) minus the segmentation head ``out.*``, so:

* export writes those keys (``recon_head.*``, the SSL reconstruction conv, is not part of SwinUNETR
  and is dropped); the ``swinViT.`` sub-dict loads into ``SwinUNETR(...).swinViT`` with
  ``strict=True`` and the whole dict into ``SwinUNETR`` with only ``out.*`` missing;
* import maps foreign names onto ours key by key: Tang et al.'s self-supervised checkpoint
  (``model_swinvit.pt``) stores the encoder as ``module.<swinViT key>`` (the DDP prefix stands where
  ``swinViT.`` would be), their fine-tuned checkpoints use ``swinViT.*`` under ``state_dict``, other
  code names the encoder ``encoder.*``; a pretraining run's method wraps the backbone under a prefix
  that we never hard-code (the method is rebuilt from the run's config and asked for ``encoder()``).

Every load returns a :class:`LoadReport` (loaded / missing / unexpected keys) that fine-tuning
writes into ``metrics.json``; a load that matched nothing, missed encoder keys, or found a tensor of
another shape is refused with a :class:`~anatssl.errors.CheckpointError` listing the keys, instead of
silently fine-tuning from random weights. Files are read with ``torch.load(weights_only=True)`` or
safetensors: nothing from a downloaded file is unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anatssl.downstream.channels import ChannelPolicy, adapt_state_dict
from anatssl.engine.checkpoint import atomic_torch_save, group_keys
from anatssl.errors import CheckpointError, load_failure_reason

EXPORT_FORMATS = ("monai-swinunetr", "safetensors", "nnunet")

_DROP_ON_EXPORT = ("recon_head.",)
"""Backbone parts that are SSL machinery, not part of a SwinUNETR."""

_ENCODER_PREFIXES = {"swin": ("swinViT.",), "conv": ("down.",), "resenc": ("encoder.",)}
"""Keys that must all be found when loading an encoder (the decoder may legitimately be absent)."""

_CONTAINER_KEYS = ("state_dict", "model", "net", "network", "encoder_state_dict", "network_weights")
"""Where torch files keep the state dict; ``network_weights``: nnU-Net v2 (and our ``--format nnunet``)."""
_STRIP_PREFIXES = ("module.", "model.", "backbone.", "student.backbone.")


@dataclass
class LoadReport:
    """What a weight load did; written to ``metrics.json`` so a reader can check what was loaded."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Keys of the model that the file did not provide (left at their initialisation)."""
    unexpected: list[str] = field(default_factory=list)
    """Keys of the file that the model has no place for (ignored)."""
    renamed: int = 0
    """How many file keys needed a name mapping (``module.`` -> ``swinViT.`` ...)."""
    adapted: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Input kernels adapted to another channel count: ``{key: (C_file, C_model)}`` (downstream/channels)."""

    def summary(self, limit: int = 8) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_loaded": len(self.loaded),
            "n_missing": len(self.missing),
            "n_unexpected": len(self.unexpected),
            "n_renamed": self.renamed,
            "adapted_input_channels": {k: list(v) for k, v in self.adapted.items()},
            "missing": group_keys(self.missing, limit),
            "unexpected": group_keys(self.unexpected, limit),
        }

    def describe(self) -> str:
        s = self.summary()
        text = (
            f"loaded {s['n_loaded']} tensors from {self.source} ({s['n_renamed']} renamed); "
            f"{s['n_missing']} missing, {s['n_unexpected']} unexpected"
        )
        if self.missing:
            text += f"\n  missing (kept at init): {', '.join(s['missing'])}"
        if self.unexpected:
            text += f"\n  unexpected (ignored): {', '.join(s['unexpected'])}"
        if self.adapted:
            (c_file, c_model), *_ = self.adapted.values()
            text += (
                f"\n  input channels adapted {c_file} -> {c_model} (mean rule, downstream/channels.py): "
                + ", ".join(self.adapted)
            )
        return text


# -- reading files ---------------------------------------------------------------------------------
def read_weights_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A ``.safetensors`` or torch file -> (flat tensor state dict, metadata dict).

    Torch files may hold the state dict directly or under ``state_dict`` / ``model`` / ``net`` (Tang
    et al. use ``state_dict``; an anatssl export also carries ``anatssl`` metadata).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                sd = {k: f.get_tensor(k) for k in f.keys()}
                raw_meta = f.metadata() or {}
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
        meta: dict[str, Any] = json.loads(raw_meta["anatssl"]) if "anatssl" in raw_meta else {}
        return sd, meta
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's own text would advise weights_only=False: never repeated here
        raise CheckpointError(
            f"cannot read weights file {path}: {load_failure_reason(e)}. anatssl reads plain tensor "
            "checkpoints (a state dict, or .safetensors) and never unpickles objects from a file"
        ) from e
    meta = {}
    if isinstance(obj, Mapping):
        meta = dict(obj.get("anatssl", {}) or {})
        for key in _CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} holds no tensor state dict (looked at the top level and {_CONTAINER_KEYS})"
        )
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, meta


def load_run_encoder(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A pretraining run -> (its backbone's state dict, metadata with the run's config and step).

    The method is rebuilt from the run's config and loaded strictly (:meth:`RunDir.build_method`),
    then asked for ``encoder()``: whatever prefix the method keeps its backbone under (``backbone.``,
    ``student.backbone.``), the result has plain backbone keys.
    """
    from anatssl.runs import RunDir

    run = RunDir(run_dir)
    step = run.step()  # a missing checkpoint fails first, with what to do about it
    method = run.build_method()
    sd = {k: v.detach().clone() for k, v in method.encoder().state_dict().items()}
    raw_cfg = run.raw_config
    meta = {
        "run": str(run_dir),
        "method": run.method,
        "step": step,
        "model": raw_cfg.get("model", {}),
        "data": raw_cfg.get("data", {}),
    }
    return sd, meta


# -- key mapping -----------------------------------------------------------------------------------
def _candidates(key: str) -> Iterable[str]:
    """Names a foreign key may have in our backbone, most literal first."""
    yield key
    stripped = key
    changed = True
    while changed:
        changed = False
        for p in _STRIP_PREFIXES:
            if stripped.startswith(p):
                stripped = stripped[len(p) :]
                changed = True
                yield stripped
    for k in (key, stripped):
        if k.startswith("encoder."):
            yield "swinViT." + k[len("encoder.") :]
        yield "swinViT." + k
    # Tang et al.'s model_swinvit.pt names the block MLP ``mlp.fc1`` / ``mlp.fc2``; MONAI (and we) use
    # ``mlp.linear1`` / ``mlp.linear2`` (MONAI's SwinTransformerBlock.load_from does the same copy)
    if ".mlp.fc" in stripped:
        renamed_mlp = stripped.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")
        yield renamed_mlp
        yield "swinViT." + renamed_mlp


def map_state_dict(
    sd: Mapping[str, torch.Tensor], target_keys: Iterable[str]
) -> tuple[dict[str, torch.Tensor], list[str], int]:
    """Rename ``sd``'s keys onto ``target_keys`` -> (mapped dict, unmatched file keys, renamed count)."""
    targets = set(target_keys)
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    renamed = 0
    for k, v in sd.items():
        hit = next((c for c in _candidates(k) if c in targets and c not in mapped), None)
        if hit is None:
            unexpected.append(k)
            continue
        mapped[hit] = v
        renamed += hit != k
    return mapped, unexpected, renamed


def load_backbone_weights(
    model: nn.Module,
    sd: Mapping[str, torch.Tensor],
    source: str,
    backbone_name: str = "swin",
    skip_prefixes: tuple[str, ...] = ("out.",),
    require_encoder: bool = True,
    channel_policy: ChannelPolicy = "mean",
) -> LoadReport:
    """Load ``sd`` (any naming above) into ``model``'s backbone keys; refuse empty or wrong-shape loads.

    ``model`` is a backbone or a network whose state dict is the backbone's plus heads named by
    ``skip_prefixes`` (our segmentation net: SwinUNETR keys). Raises CheckpointError when nothing
    matches (another backbone), when an encoder key is missing (another depth / v2 variant), or when a
    tensor has another shape (another feature_size, depths), listing the keys at fault. Input kernels
    made for another number of input channels are adapted by ``channel_policy``
    (:mod:`anatssl.downstream.channels`) and reported in ``LoadReport.adapted``.
    """
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(skip_prefixes)}
    if not any(k.startswith(_DROP_ON_EXPORT) for k in own):  # SSL-only parts: not worth a warning
        sd = {k: v for k, v in sd.items() if not k.startswith(_DROP_ON_EXPORT)}
    mapped, unexpected, renamed = map_state_dict(sd, own)
    mapped, adapted = adapt_state_dict(mapped, own, source, channel_policy)
    wrong = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in mapped.items()
        if v.shape != own[k].shape
    ]
    if wrong:
        raise CheckpointError(
            f"{source} was trained with another model size: {len(wrong)} tensors differ in shape, e.g. "
            + "; ".join(wrong[:6])
            + ". Use the same model.* settings as the run that produced the weights (feature_size, depths, "
            "num_heads, in_channels)"
        )
    if not mapped:
        raise CheckpointError(
            f"{source} has no tensor that fits this {backbone_name!r} backbone "
            f"(0 of {len(own)} keys matched); "
            f"file keys look like {group_keys(list(sd), 6)}, model keys like {group_keys(list(own), 6)}. "
            "Is it a checkpoint of another backbone (model.backbone)?"
        )
    missing = [k for k in own if k not in mapped]
    enc_prefixes = _ENCODER_PREFIXES.get(backbone_name, ("",))
    missing_enc = [k for k in missing if k.startswith(enc_prefixes)]
    if require_encoder and missing_enc:
        raise CheckpointError(
            f"{source} lacks {len(missing_enc)} of the encoder's tensors: {group_keys(missing_enc, 8)}"
            + (f"; it has tensors the model does not: {group_keys(unexpected, 8)}" if unexpected else "")
            + ". It was made for another backbone variant (model.depths / num_heads / use_v2 / backbone)"
        )
    result = model.load_state_dict({**{k: v for k, v in model.state_dict().items()}, **mapped}, strict=True)
    del result
    return LoadReport(
        source=source,
        loaded=sorted(mapped),
        missing=missing,
        unexpected=unexpected,
        renamed=renamed,
        adapted=adapted,
    )


# -- resolving --init ------------------------------------------------------------------------------
@dataclass
class InitSource:
    """Where a fine-tuned encoder starts: ``scratch``, a pretraining ``run`` or a weights ``file``."""

    kind: str
    path: Path | None = None
    state_dict: dict[str, torch.Tensor] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def model_section(self) -> dict[str, Any] | None:
        m = self.meta.get("model")
        return dict(m) if isinstance(m, Mapping) and m else None

    @property
    def data_section(self) -> dict[str, Any] | None:
        d = self.meta.get("data")
        return dict(d) if isinstance(d, Mapping) and d else None


def resolve_init(init: str | Path) -> InitSource:
    """``scratch`` | a run directory (has ``checkpoints/last.pt``) | one of a run's checkpoints
    (``RUN/checkpoints/step_XXXXXXX.pt``: that step's encoder, e.g. for the pretraining-budget curve) |
    a weights file."""
    if str(init) == "scratch":
        return InitSource(kind="scratch")
    from anatssl.runs import RunDir

    path = Path(init)
    if RunDir.is_run(path):
        sd, meta = load_run_encoder(path)
        return InitSource(kind="run", path=path, state_dict=sd, meta=meta)
    if path.is_file():
        sd, meta = read_weights_file(path)
        return InitSource(kind="file", path=path, state_dict=sd, meta=meta)
    raise CheckpointError(
        f"--init {init}: no such run directory or weights file (use 'scratch', a pretraining run directory, "
        "or a .pt / .safetensors file)"
    )


# -- export ----------------------------------------------------------------------------------------
def export_state_dict(
    backbone_sd: Mapping[str, torch.Tensor], encoder_only: bool = False
) -> dict[str, torch.Tensor]:
    """Backbone state dict -> the exported tensors (SwinUNETR names; ``recon_head`` dropped).

    Every tensor is a copy of its own: ``resenc``'s state dict names some tensors twice (nnU-Net's
    ``ConvDropoutNormReLU`` holds each conv as ``conv`` and ``all_modules.0``; its decoder keeps the
    encoder as ``decoder.encoder``), which safetensors refuses to write as shared memory.
    """
    out = {
        k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
        for k, v in backbone_sd.items()
        if not k.startswith(_DROP_ON_EXPORT)
    }
    if encoder_only:
        out = {k: v for k, v in out.items() if k.startswith("swinViT.")}
    return out


def export_run(
    run_dir: str | Path,
    fmt: str,
    out: str | Path,
    encoder_only: bool = False,
    patch_size: tuple[int, ...] | None = None,
) -> tuple[Path, int]:
    """Write a run's encoder as ``monai-swinunetr`` (torch ``{"state_dict", "anatssl"}``), safetensors,
    or ``nnunet`` (torch ``{"network_weights", "anatssl"}`` + ``<out stem>.plans.json``, resenc runs:
    :mod:`anatssl.downstream.nnunet`; ``patch_size`` is that fragment's).

    Returns (path written, number of tensors). The file is written to a temporary name and renamed.
    """
    if fmt not in EXPORT_FORMATS:
        raise CheckpointError(f"--format {fmt!r}; valid formats: {', '.join(EXPORT_FORMATS)}")
    sd, meta = load_run_encoder(run_dir)
    backbone = (meta.get("model") or {}).get("backbone", "swin")
    if fmt == "monai-swinunetr" and backbone != "swin":
        raise CheckpointError(
            f"{run_dir} trained the {backbone!r} backbone, which has no MONAI SwinUNETR counterpart; "
            "export it with --format safetensors"
        )
    if fmt == "nnunet" and encoder_only:
        raise CheckpointError(
            "--format nnunet writes the whole network: nnU-Net's -pretrained_weights requires every tensor "
            "but the segmentation layers; drop --encoder-only"
        )
    tensors = export_state_dict(sd, encoder_only=encoder_only)
    meta = {**meta, "format": fmt, "encoder_only": encoder_only}
    if fmt == "nnunet":
        from anatssl.downstream.nnunet import write_nnunet_export

        path, _ = write_nnunet_export(tensors, meta, out, patch_size)
        return path, len(tensors)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        tmp = out.with_name(out.name + ".tmp")
        try:
            save_file(tensors, str(tmp), metadata={"anatssl": json.dumps(meta, default=str)})
            tmp.replace(out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    else:  # a full disk names the file and leaves neither a half-written file nor a temp one
        atomic_torch_save({"state_dict": tensors, "anatssl": json.loads(json.dumps(meta, default=str))}, out)
    return out, len(tensors)


def swinvit_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``swinViT.`` part of an exported dict, prefix removed: ``SwinUNETR(...).swinViT``'s keys."""
    return {k[len("swinViT.") :]: v for k, v in sd.items() if k.startswith("swinViT.")}


def encoder_prefixes(backbone_name: str) -> tuple[str, ...]:
    """State-dict prefixes of a backbone's encoder half (what ``freeze_encoder`` freezes)."""
    return _ENCODER_PREFIXES.get(backbone_name, ("",))
