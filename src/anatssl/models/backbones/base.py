"""The backbone interface every method trains, and the registry that builds backbones by name.

A backbone is an encoder-decoder over ``(B, C_in, X, Y, Z)`` volumes:

* :meth:`Backbone.encode` -> multi-scale encoder features, shallow to deep (strides 2..32), each
  ``(B, C_l, X/s_l, ...)`` with ``C_l = feature_channels[l]`` and ``s_l = feature_strides[l]``;
* :meth:`Backbone.decode(x, feats)` -> decoder features (the input ``x`` feeds the full-resolution
  skip), deep to shallow, the last one at full resolution with
  ``decoder_channels[-1]`` channels;
* :meth:`Backbone.reconstruct` -> ``(B, C_in, X, Y, Z)`` from the last decoder feature (1x1x1 conv);
* :func:`tokens` turns a feature map into a token grid ``(B, N, C)`` (x-major flattening).

Inputs must have spatial sizes divisible by ``input_multiple``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from anatssl.config.schema import ModelConfig
from anatssl.errors import ConfigError
from anatssl.registry import Registry

BACKBONES: Registry[Callable[[ModelConfig], Backbone]] = Registry("backbone")


def register_backbone(
    name: str,
) -> Callable[[Callable[[ModelConfig], Backbone]], Callable[[ModelConfig], Backbone]]:
    return BACKBONES.register(name)


class Backbone(nn.Module):
    feature_channels: list[int]
    feature_strides: list[int]
    decoder_channels: list[int]
    decoder_strides: list[int]
    input_multiple: int
    decoder_prefixes: tuple[str, ...] = ()
    """State-dict prefixes of the parts only :meth:`decode` / :meth:`reconstruct` use (an encoder-only
    method leaves them without gradient)."""

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def decode(self, x: torch.Tensor, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def reconstruct(self, dec_last: torch.Tensor) -> torch.Tensor:
        return self.recon_head(dec_last)  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encode(x)

    def check_input(self, shape: tuple[int, ...], where: str = "input") -> None:
        """Raise a ConfigError if a spatial size does not fit the backbone's stride."""
        bad = [s for s in shape if s % self.input_multiple]
        if bad:
            raise ConfigError(
                f"{where} size {tuple(shape)} must be divisible by {self.input_multiple} for this backbone; "
                f"use a crop size that is a multiple of {self.input_multiple}"
            )


def tokens(feat: torch.Tensor) -> torch.Tensor:
    """(B, C, X, Y, Z) -> (B, X*Y*Z, C) token grid."""
    return feat.flatten(2).transpose(1, 2)


def build_backbone(cfg: ModelConfig) -> Backbone:
    """Build the backbone named by ``cfg.backbone``."""
    builder = BACKBONES.get(cfg.backbone)
    model = builder(cfg)
    if cfg.in_channels < 1:
        raise ConfigError(f"model.in_channels must be >= 1, got {cfg.in_channels}")
    return model
