"""Backbone registry: ``build_backbone(ModelConfig)``; ``swin`` (default), ``conv`` and ``resenc``."""

from anatssl.models.backbones import conv, resenc, swin  # noqa: F401  (registration)
from anatssl.models.backbones.base import BACKBONES, Backbone, build_backbone, register_backbone, tokens

__all__ = ["BACKBONES", "Backbone", "build_backbone", "register_backbone", "tokens"]
