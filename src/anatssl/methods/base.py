"""The method contract: what a self-supervised method computes; ``engine/`` decides how it runs.

A method is an ``nn.Module`` built from a :class:`~anatssl.config.PretrainConfig`:

* ``views``: a light, picklable callable ``(volume, rng, source) -> dict[str, Tensor]`` that cuts one
  sample's inputs from one :class:`~anatssl.data.volume.Volume` (the contract is
  :mod:`anatssl.views.base`; the callables live in ``views/``).
* ``training_step(batch, step) -> dict`` with ``loss`` (scalar to backpropagate) and one entry per
  named term (detached scalars are fine). ``forward`` is ``training_step`` so that DDP hooks in.
* ``on_step_end(step)`` after the optimizer step: EMA teachers, centres, queues.
* ``encoder()`` the backbone to export.
* ``param_groups(weight_decay)`` parameter groups for AdamW (default: no decay on < 2-D tensors).
* ``clip_gradients(max_norm)`` (default: global norm; Alice clips per parameter).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from anatssl.config.schema import PretrainConfig
from anatssl.registry import Registry
from anatssl.views.base import ViewFn, VolumeProvider

__all__ = ["METHODS", "SSLMethod", "ViewFn", "VolumeProvider", "build_method", "register_method"]


class SSLMethod(nn.Module):
    config_cls: ClassVar[type]
    """The dataclass of the method's own settings (YAML section named after the method)."""
    min_volume_shape: tuple[int, ...] | None = None
    """The (X, Y, Z) a scan needs for the views to cut without padding; the engine names the scans
    that are smaller at start-up (they are zero-padded, not an error). ``None``: no such size."""

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_steps = cfg.train.max_steps

    # -- data side ---------------------------------------------------------------------------
    @property
    def views(self) -> ViewFn:
        raise NotImplementedError

    # -- model side --------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        return self.training_step(batch, step)

    def on_step_end(self, step: int) -> None:
        """Called after each optimizer step with the global step just completed (0-based)."""

    def encoder(self) -> nn.Module:
        raise NotImplementedError

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Decay on >= 2-D weights only (biases, norms, gains are not decayed), as DINO / iBOT."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for _, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim >= 2 else no_decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay, "apply_wd_schedule": True},
            {"params": no_decay, "weight_decay": 0.0, "apply_wd_schedule": False},
        ]

    def clip_gradients(self, max_norm: float) -> float:
        """Clip by the global norm of all trainable gradients; returns the norm before clipping."""
        params = [p for p in self.parameters() if p.grad is not None]
        if not params:
            return 0.0
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def untrained_parameters(self) -> tuple[str, ...]:
        """Name prefixes of trainable parameters a training step leaves without gradient on purpose
        (e.g. a backbone's decoder under an encoder-only method); the registry-wide test checks that
        every other trainable parameter gets one."""
        return ()

    def extra_state_dict(self) -> dict[str, Any]:
        """Non-tensor state to checkpoint (tensors belong in buffers, saved with the state dict)."""
        return {}

    def load_extra_state_dict(self, state: dict[str, Any]) -> None:
        pass


METHODS: Registry[type[SSLMethod]] = Registry("method")


def register_method(name: str) -> Callable[[type[SSLMethod]], type[SSLMethod]]:
    return METHODS.register(name)


def build_method(cfg: PretrainConfig) -> SSLMethod:
    return METHODS.get(cfg.method)(cfg)
