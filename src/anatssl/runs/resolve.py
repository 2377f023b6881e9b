"""Config resolution, pretraining and fine-tuning alike (DINOv2 style)::

    dataclass defaults <- configs/<kind>/<name>_<preset>.yaml <- [run-derived sections] <- --config YAML
                       <- key=value overrides

:func:`resolve_raw` is the one chain; :func:`load_pretrain_config` / :func:`load_finetune_config`
apply it and build the checked dataclasses. Pretraining needs the method registry (each method
registers the dataclass of its YAML section), which is why this lives above ``config/``: ``config/``
holds the schemas and the loader and imports no method.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from anatssl.config.finetune import FinetuneConfig, check_finetune_config, preset_task
from anatssl.config.loader import deep_merge, from_dict, parse_overrides, read_preset, read_yaml
from anatssl.config.pretrain import SECTIONS, TOP_KEYS, check_pretrain_config
from anatssl.config.schema import DataConfig, PretrainConfig
from anatssl.data.presets import check_data_config, modality_warnings
from anatssl.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_raw(
    kind: str,
    prefix: str,
    preset: str | None,
    what: str,
    config_file: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    start: Mapping[str, Any] | None = None,
    after_preset: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``start`` <- preset ``configs/<kind>/<prefix><preset>.yaml`` <- ``after_preset(raw)`` <- YAML <-
    overrides, as one merged dict. ``what`` names the preset in a "no such preset" error."""
    raw: dict[str, Any] = dict(start or {})
    if preset:
        raw = deep_merge(raw, read_preset(kind, prefix, preset, what))
        raw["preset"] = preset
    if after_preset is not None:
        raw = after_preset(raw)
    if config_file:
        raw = deep_merge(raw, read_yaml(config_file))
    ov = overrides if isinstance(overrides, Mapping) else parse_overrides(overrides)
    return deep_merge(raw, ov)


# -- pretraining -----------------------------------------------------------------------------------
def build_pretrain_config(raw: dict[str, Any]) -> PretrainConfig:
    """A merged dict (top keys: method, preset, seed, data, model, optim, train, <method>) -> config."""
    from anatssl.methods import METHODS

    method = raw.get("method", "swinssl")
    if not isinstance(method, str):
        raise ConfigError(f"method must be a string, got {method!r}")
    method_cls = METHODS.get(method)
    valid = sorted([*TOP_KEYS, *SECTIONS, method])
    for key in raw:
        if key not in valid:
            hint = " (method settings go in the section named after the method)" if key in METHODS else ""
            raise ConfigError(f"unknown config key {key!r}{hint}; valid top-level keys: {', '.join(valid)}")
    kwargs: dict[str, Any] = {k: raw[k] for k in TOP_KEYS if k in raw}
    cfg = from_dict(PretrainConfig, kwargs)
    for name, cls in SECTIONS.items():
        setattr(cfg, name, from_dict(cls, raw.get(name) or {}, name))
    cfg.params = from_dict(method_cls.config_cls, raw.get(method) or {}, method)
    check_pretrain_config(cfg)
    check_data_section(cfg.data)
    return cfg


def check_data_section(data: DataConfig) -> None:
    """Refuse impossible ``data.*`` values now rather than when the first scan is read, and log each
    setting of the other modality that was changed and is not read (``data.hu_window`` with
    ``data.modality=mri``: no HU there), once per resolved config."""
    check_data_config(data)
    for line in modality_warnings(data):
        log.warning(line)


def load_pretrain_config(
    method: str,
    preset: str | None = "tiny",
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> PretrainConfig:
    """The full resolution chain used by ``anatssl pretrain``."""
    raw = resolve_raw(
        "pretrain",
        f"{method}_",
        preset,
        f"preset {preset!r} for method {method!r}",
        config_file,
        overrides,
        start={"method": method},
    )
    if raw.get("method", method) != method:
        raise ConfigError(f"config says method {raw['method']!r} but --method is {method!r}")
    raw["method"] = method
    return build_pretrain_config(raw)


# -- fine-tuning -----------------------------------------------------------------------------------
KEEP_FROM_PRETRAINING = ("modality", "hu_window", "mri_percentiles", "spacing")
"""``data`` settings a fine-tuning takes over from the run that made its weights (input scaling)."""


def build_finetune_config(raw: dict[str, Any]) -> FinetuneConfig:
    cfg = from_dict(FinetuneConfig, raw)
    check_finetune_config(cfg)
    check_data_section(cfg.data)
    return cfg


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

    def take_from_init(raw: dict[str, Any]) -> dict[str, Any]:
        if not from_init:
            return raw
        if from_init.get("model"):
            raw["model"] = dict(from_init["model"])
        data = {k: v for k, v in (from_init.get("data") or {}).items() if k in KEEP_FROM_PRETRAINING}
        return deep_merge(raw, {"data": data})

    raw = resolve_raw(
        "finetune",
        f"{preset_task(task)}_",
        preset,
        f"fine-tuning preset {preset!r} for task {task!r}",
        config_file,
        overrides,
        start={"task": task},
        after_preset=take_from_init,
    )
    raw["task"] = task
    return build_finetune_config(raw)
