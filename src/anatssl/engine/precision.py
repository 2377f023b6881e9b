"""Mixed precision: which autocast dtype a run uses, and whether this machine computes bf16 natively.

``amp`` settings: ``auto`` (bf16 where the device has bf16 matrix units: a CPU with AMX-BF16 or
AVX512-BF16, a CUDA GPU that reports bf16 support; fp32 elsewhere), ``none`` (fp32), ``bf16``,
``fp16`` (CUDA only). On a CPU without those units bf16 is emulated and slower than fp32, so ``auto``
does not pick it there. Under autocast the matrix products and convolutions run in the low precision;
norms, softmax and loss reductions are kept in fp32 by the callers (autocast's own fp32 list covers
norms and softmax; the losses are computed on ``.float()`` logits outside the autocast region).
The autocast region itself is :func:`anatssl.engine.device.autocast`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from anatssl.engine.device import autocast
from anatssl.errors import ConfigError

__all__ = ["AMP_CHOICES", "autocast", "cpu_has_bf16", "precision_name", "resolve_amp"]

AMP_CHOICES = ("auto", "none", "bf16", "fp16")
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@functools.cache
def cpu_has_bf16() -> bool:
    """True when oneDNN can run bf16 on this CPU's matrix units (AMX-BF16 or AVX512-BF16)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return True
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch builds
        pass
    return bool(_cpu_flags() & set(_CPU_BF16_FLAGS))


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto|none|bf16|fp16`` -> the precision that runs: ``bf16``, ``fp16`` or ``none`` (fp32)."""
    if amp not in AMP_CHOICES:
        raise ConfigError(f"train.amp = {amp!r}; valid values: {', '.join(AMP_CHOICES)}")
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs CUDA; on CPU use train.amp=bf16, auto or none")
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16" if cpu_has_bf16() else "none"
    return "none"


def precision_name(amp: str) -> str:
    """Resolved ``amp`` -> the name printed and written to metrics.json (``fp32`` for ``none``)."""
    return "fp32" if amp == "none" else amp
