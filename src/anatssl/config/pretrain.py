"""The pretraining config's layout and checks; resolution (preset <- YAML <- overrides, which needs the
method registry) is :mod:`anatssl.runs.resolve`."""

from __future__ import annotations

from typing import Any

from anatssl.config.loader import to_dict
from anatssl.config.schema import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    PretrainConfig,
    TrainConfig,
    check_common,
)
from anatssl.errors import ConfigError

SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
}
TOP_KEYS = ("method", "preset", "seed")


def check_pretrain_config(cfg: PretrainConfig) -> None:
    """Range checks across fields (types and enumerated values are checked by the loader)."""
    check_common(cfg.train.max_steps, cfg.train.batch_size, cfg.optim.lr)
    if cfg.train.max_minutes is not None and not cfg.train.max_minutes > 0:
        raise ConfigError(
            f"train.max_minutes must be > 0 (or null for no limit), got {cfg.train.max_minutes}"
        )
    if cfg.train.grad_accum < 1:
        raise ConfigError(f"train.grad_accum must be >= 1, got {cfg.train.grad_accum}")
    if cfg.optim.min_lr > cfg.optim.lr:
        raise ConfigError(f"optim.min_lr ({cfg.optim.min_lr}) must be <= optim.lr ({cfg.optim.lr})")
    if len(cfg.model.num_heads) != len(cfg.model.depths):
        raise ConfigError(
            f"model.num_heads {list(cfg.model.num_heads)} needs one value per stage of model.depths "
            f"{list(cfg.model.depths)}"
        )


def pretrain_config_to_dict(cfg: PretrainConfig) -> dict[str, Any]:
    """The config as written to ``RUN/config.yaml``: the method's settings under its own name."""
    d = to_dict(cfg)
    d[cfg.method] = d.pop("params")
    return d
