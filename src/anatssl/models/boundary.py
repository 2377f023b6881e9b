"""The model boundary: networks take plain tensors (DESIGN.md, Contracts: Backbones).

MONAI's dictionary transforms return :class:`monai.data.MetaTensor` (a ``torch.Tensor`` subclass that
carries the affine and the file's metadata). Inside a network the subclass only costs: every op goes
through ``MetaTensor.__torch_function__`` (metadata copied per op) and methods it overrides take other
arguments than ``torch.Tensor``'s (``MetaTensor.new_empty(size)`` takes one tuple, not ``*size``; a
custom autograd backward that calls ``q.new_empty(3, n, d)`` fails there, see issue 19). So every path
that hands a batch to a network calls :func:`plain` once, where the batch reaches it.
"""

from __future__ import annotations

from typing import Any, TypeVar

from monai.data.meta_tensor import MetaTensor

T = TypeVar("T")


def plain(x: T) -> T:
    """``x`` with every MetaTensor replaced by its plain ``torch.Tensor`` (shared storage, no copy).

    Recurses into dicts, lists and tuples (the batch layouts of MONAI's collate and of the methods'
    views); anything else (plain tensors, strings, numbers, None) is returned as it is.
    """
    out: T = _plain(x)
    return out


def _plain(x: Any) -> Any:
    if isinstance(x, MetaTensor):
        return x.as_tensor()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, tuple):
        return type(x)(*map(_plain, x)) if hasattr(x, "_fields") else tuple(_plain(v) for v in x)
    return x
