"""Resolve a pretraining config: defaults <- preset YAML <- user YAML <- key=value overrides."""

from __future__ import annotations

from collections.abc import Sequence
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
from anatssl.config.schema import DataConfig, ModelConfig, OptimConfig, PretrainConfig, TrainConfig
from anatssl.errors import ConfigError

_SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}
_TOP = ("method", "preset", "seed")


def _valid_top(method: str) -> list[str]:
    return sorted([*_TOP, *_SECTIONS, method])


def build_pretrain_config(raw: dict[str, Any]) -> PretrainConfig:
    """A merged dict (top keys: method, preset, seed, data, model, optim, train, <method>) -> config."""
    from anatssl.methods import METHODS  # late import: methods import the config schema

    method = raw.get("method", "swinssl")
    if not isinstance(method, str):
        raise ConfigError(f"method must be a string, got {method!r}")
    method_cls = METHODS.get(method)
    valid = _valid_top(method)
    for key in raw:
        if key not in valid:
            hint = " (method settings go in the section named after the method)" if key in METHODS else ""
            raise ConfigError(f"unknown config key {key!r}{hint}; valid top-level keys: {', '.join(valid)}")
    kwargs: dict[str, Any] = {k: raw[k] for k in _TOP if k in raw}
    cfg = from_dict(PretrainConfig, kwargs)
    for name, cls in _SECTIONS.items():
        setattr(cfg, name, from_dict(cls, raw.get(name) or {}, name))
    cfg.params = from_dict(method_cls.config_cls, raw.get(method) or {}, method)
    _check(cfg)
    return cfg


def _check(cfg: PretrainConfig) -> None:
    if cfg.train.max_steps < 1:
        raise ConfigError(f"train.max_steps must be >= 1, got {cfg.train.max_steps}")
    if cfg.train.batch_size < 1:
        raise ConfigError(f"train.batch_size must be >= 1, got {cfg.train.batch_size}")
    if cfg.train.max_minutes is not None and not cfg.train.max_minutes > 0:
        raise ConfigError(
            f"train.max_minutes must be > 0 (or null for no limit), got {cfg.train.max_minutes}"
        )
    if cfg.train.grad_accum < 1:
        raise ConfigError(f"train.grad_accum must be >= 1, got {cfg.train.grad_accum}")
    if cfg.train.amp not in ("none", "bf16", "fp16"):
        raise ConfigError(f"train.amp = {cfg.train.amp!r}; valid values: none, bf16, fp16")
    if cfg.optim.lr_scaling not in ("none", "linear"):
        raise ConfigError(f"optim.lr_scaling = {cfg.optim.lr_scaling!r}; valid values: none, linear")
    if cfg.data.modality not in ("ct", "mri"):
        raise ConfigError(f"data.modality = {cfg.data.modality!r}; valid values: ct, mri")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {cfg.optim.lr}")


def load_pretrain_config(
    method: str,
    preset: str | None = "tiny",
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> PretrainConfig:
    """The full resolution chain used by ``anatssl pretrain``."""
    raw: dict[str, Any] = {"method": method}
    if preset:
        preset_raw = read_preset("pretrain", f"{method}_", preset, f"preset {preset!r} for method {method!r}")
        raw = deep_merge(raw, preset_raw)
        raw["preset"] = preset
    if config_file:
        raw = deep_merge(raw, read_yaml(config_file))
    raw = deep_merge(raw, parse_overrides(overrides))
    if raw.get("method", method) != method:
        raise ConfigError(f"config says method {raw['method']!r} but --method is {method!r}")
    raw["method"] = method
    return build_pretrain_config(raw)


def pretrain_config_to_dict(cfg: PretrainConfig) -> dict[str, Any]:
    d = to_dict(cfg)
    d[cfg.method] = d.pop("params")
    return d
