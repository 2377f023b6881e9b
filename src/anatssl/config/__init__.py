"""Configuration: dataclass schemas, YAML presets, ``key=value`` overrides, validation.

Imports no method (and not torch): resolving a pretraining config needs the method registry and is
:mod:`anatssl.runs.resolve` (``load_pretrain_config``, ``build_pretrain_config``).
"""

from anatssl.config.loader import from_dict, parse_overrides, read_yaml, save_yaml, to_dict
from anatssl.config.pretrain import pretrain_config_to_dict
from anatssl.config.schema import DataConfig, ModelConfig, OptimConfig, PretrainConfig, TrainConfig

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "PretrainConfig",
    "TrainConfig",
    "from_dict",
    "parse_overrides",
    "pretrain_config_to_dict",
    "read_yaml",
    "save_yaml",
    "to_dict",
]
