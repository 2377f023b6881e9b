"""Where tensors run: device choice, autocast, moving batches. Imported by every training loop
(pretraining and fine-tuning) without pulling in any method."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch

from anatssl.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA device ``LOCAL_RANK`` if available, else CPU), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:  # torch lists every device type it knows of: too long
        raise ConfigError(
            f"train.device = {name!r} is not a device; use auto, cpu, cuda or cuda:N (or mps)"
        ) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {name!r} but CUDA is not available; use train.device=cpu")
    return dev


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """``amp``: ``none`` (no autocast), ``bf16`` or ``fp16``."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors of a collated batch to ``device`` (non-blocking); other values unchanged."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }
