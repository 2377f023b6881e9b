"""Atomic checkpoints that resume exactly, loaded with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values only (no pickled objects), so loading one a
user downloaded cannot execute code:

``{"format": "anatssl-checkpoint", "version": 1, "step": int, "config": dict, "model": state_dict,
"optimizer": state_dict, "scaler": state_dict | None, "rng": {...}, "extra": dict}``
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anatssl.errors import CheckpointError, load_failure_reason

FORMAT = "anatssl-checkpoint"
VERSION = 1

# the run folder's layout (DESIGN.md, *Run directory*): written by the trainer, read by anatssl.runs.RunDir
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
LOCK_FILE = "run.lock"  # the owning process (engine/runlock.py); present only while a process runs


def step_checkpoint_name(step: int) -> str:
    """The file name of the copy kept at ``step`` (``train.keep_checkpoints``)."""
    return f"step_{step:07d}.pt"


def temp_name_pattern(name: str = "*.pt") -> str:
    """The glob of the temporary files :func:`atomic_torch_save` writes before renaming them to ``name``."""
    return f".{name}.*.tmp"


def remove_orphaned_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary checkpoint files a killed writer left in ``folder`` (``.last.pt.XXXX.tmp``:
    a SIGKILL or power loss between :func:`atomic_torch_save`'s write and its rename); -> the files.

    Only safe while no other process writes there, i.e. under the run folder's lock.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in sorted(folder.glob(temp_name_pattern())):
        try:
            p.unlink()
        except FileNotFoundError:
            continue
        removed.append(p)
    return removed


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write to a temp file in the same folder, fsync, then ``os.replace``: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        cause = e if isinstance(e, OSError) else e.__context__  # torch wraps a failed write in RuntimeError
        if isinstance(e, OSError | RuntimeError) and isinstance(cause, OSError) and cause.errno is not None:
            raise OSError(cause.errno, cause.strerror, str(path)) from e  # name the file (disk full ...)
        raise


def rng_state() -> dict[str, Any]:
    """Every global RNG the training step may draw from, as tensors / lists (weights_only-safe)."""
    np_state: Any = np.random.get_state()  # noqa: NPY002 - the legacy global state is what we save
    state: dict[str, Any] = {
        "python": list(random.getstate()[1]) + [random.getstate()[2] or 0],
        "python_version": random.getstate()[0],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((state["python_version"], tuple(py[:-1]), py[-1] or None))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check an anatssl checkpoint (``weights_only=True``); clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt zip, truncated file, pickled objects refused by weights_only
        raise CheckpointError(
            f"cannot read checkpoint {path}: {load_failure_reason(e)} "
            "(re-export it or resume from an earlier checkpoint)"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an anatssl checkpoint (no 'format: {FORMAT}' entry); "
            "to load plain weights use `anatssl finetune --init FILE`"
        )
    return ckpt


def group_keys(keys: list[str], limit: int = 8) -> list[str]:
    """Collapse state-dict keys to their two leading name parts (``decoder1.*``) so that a key-mismatch
    message stays readable; at most ``limit`` groups, then a count of the rest."""
    out: list[str] = []
    for k in keys:
        parts = k.split(".")
        g = ".".join(parts[:2]) + (".*" if len(parts) > 2 else "")
        if g not in out:
            out.append(g)
    return out[:limit] + ([f"... ({len(out) - limit} more groups)"] if len(out) > limit else [])


def flatten_config(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"feature_size": 12}}`` -> ``{"model.feature_size": 12}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_config(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The resolved-config keys that differ, as ``"model.feature_size: 12 -> 24"`` lines (sorted);
    a key one side lacks reads ``(unset)``."""
    a, b = flatten_config(old), flatten_config(new)

    def show(d: dict[str, Any], k: str) -> str:
        if k not in d:
            return "(unset)"
        v = d[k]
        return str(list(v)) if isinstance(v, tuple) else str(v)

    keys = sorted(a.keys() | b.keys())
    return [f"{k}: {show(a, k)} -> {show(b, k)}" for k in keys if show(a, k) != show(b, k)]
