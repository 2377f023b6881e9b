"""Configuration: dataclass schemas, YAML presets, ``key=value`` overrides, validation."""

from anatssl.config.loader import from_dict, parse_overrides, read_yaml, save_yaml, to_dict
from anatssl.config.pretrain import build_pretrain_config, load_pretrain_config, pretrain_config_to_dict
from anatssl.config.schema import DataConfig, ModelConfig, OptimConfig, PretrainConfig, TrainConfig

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "PretrainConfig",
    "TrainConfig",
    "build_pretrain_config",
    "from_dict",
    "load_pretrain_config",
    "parse_overrides",
    "pretrain_config_to_dict",
    "read_yaml",
    "save_yaml",
    "to_dict",
]
