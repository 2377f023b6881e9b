"""Exceptions that carry a message meant for the user (the CLI prints them without a traceback)."""

from __future__ import annotations


class AnatsslError(Exception):
    """Base class: the message names the file / key at fault and what to do about it."""


class ConfigError(AnatsslError, ValueError):
    """A bad configuration key or value."""


class DataError(AnatsslError, ValueError):
    """An unreadable or invalid scan, manifest or data folder."""


class CheckpointError(AnatsslError, ValueError):
    """A checkpoint that is missing, corrupt, or belongs to another model."""


class TrainingError(AnatsslError, RuntimeError):
    """Training cannot continue (e.g. a non-finite loss)."""


# -- library and OS errors, told as one line ------------------------------------------------------
_ERRNO_ADVICE = {
    "ENOSPC": "no space left on the device: free space there or write elsewhere (--out, data.cache_dir); "
    "checkpoints and cache entries are written atomically, so their previous versions are intact",
    "EDQUOT": "disk quota exceeded: free space or write elsewhere (--out, data.cache_dir)",
    "EACCES": "permission denied: make it readable/writable by this user or choose another path",
    "EPERM": "operation not permitted: choose another path or fix its permissions",
    "EROFS": "the file system is read-only: write elsewhere (--out, data.cache_dir)",
    "ENOENT": "no such file or folder: check the path",
    "EISDIR": "is a folder, where a file was expected",
    "ENOTDIR": "a part of the path is a file, where a folder was expected",
    "EMFILE": "too many open files: lower data.num_workers / train.num_workers or raise `ulimit -n`",
}


_TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed")
"""What torch.save's C++ writer says when a write to a path fails (it keeps the errno to itself)."""


def load_failure_reason(e: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line for the user.

    Never repeats PyTorch's advice to retry with ``weights_only=False``: anatssl does not unpickle
    arbitrary objects from a file (DESIGN.md, *Checkpoint loading*), so that advice does not apply.
    Non-checkpoint bytes surface from torch as a bare ``KeyError('101')`` or ``IndexError``, hence the
    classification by type rather than by message.
    """
    text = str(e)
    if "Weights only load failed" in text:
        if "Unsupported global" in text or "GLOBAL" in text:
            found = text[text.find("Unsupported global") :].split("\n")[0].strip() or "a pickled object"
            return (
                f"it holds pickled Python objects, not only tensors ({found[:160]}), which anatssl does not "
                "load; save the model's state dict (torch.save(model.state_dict(), path)) or a .safetensors "
                "file instead"
            )
        return (
            "it is not a checkpoint of tensors and plain values (another format, or pickled Python objects, "
            "which anatssl does not load)"
        )
    if "PytorchStreamReader" in text or "zip archive" in text or "central directory" in text:
        return "it is a corrupt or truncated PyTorch archive; copy or re-export it again"
    if isinstance(e, KeyError | IndexError | EOFError | ValueError | TypeError) or "load key" in text:
        return (
            "it is not a PyTorch checkpoint (e.g. a text file, an image, or another format); check the path"
        )
    return f"{type(e).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _os_message(e: OSError, fallback_path: str | None) -> str:
    import errno as errno_mod

    name = errno_mod.errorcode.get(e.errno or -1, "")
    where = f"{e.filename}: " if e.filename else ""
    if not e.filename and fallback_path and name in ("ENOSPC", "EDQUOT", "EROFS"):
        where = f"writing under {fallback_path}: "  # the error did not say which file; the output did
    if e.filename2:
        where = f"{e.filename} -> {e.filename2}: "
    advice = _ERRNO_ADVICE.get(name)
    if advice:
        return f"{where}{advice} ({name})"
    return f"{where}{e.strerror or e} ({name or type(e).__name__})"


def user_message(e: BaseException, fallback_path: str | None = None) -> str | None:
    """One line for a failure that is the user's or the machine's to fix, or None for a bug.

    Maps :class:`AnatsslError` (its own message), ``OSError`` (disk full, permissions, read-only,
    missing files: named by path, ``fallback_path`` when the error carries none), refused unpickling,
    undecodable text and memory exhaustion. A library error that merely wraps one of these (PyTorch's
    ``RuntimeError: unexpected pos ...`` around a full disk) is told by its cause.
    """
    import pickle

    chain: list[BaseException] = []  # the error, then what it wraps
    cur: BaseException | None = e
    while cur is not None and all(cur is not c for c in chain):
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for cur in chain:
        if isinstance(cur, AnatsslError):
            return str(cur)
        if isinstance(cur, OSError):
            return _os_message(cur, fallback_path)
        if isinstance(cur, pickle.UnpicklingError):
            return f"cannot load a file: {load_failure_reason(cur)}"
        if isinstance(cur, UnicodeDecodeError):
            return (
                f"a file read as text is not UTF-8 text (byte {cur.start}: {cur.reason}); check that each "
                "path points to the kind of file its option expects (--debug shows which read failed)"
            )
        if isinstance(cur, MemoryError):
            return (
                "out of memory: a scan or a batch is larger than this machine holds; lower "
                "train.batch_size or the crop / roi sizes, or data.max_voxels to skip very large scans"
            )
    for cur in chain:  # only when nothing below names the cause: torch's C++ writer keeps the errno
        if isinstance(cur, RuntimeError) and any(t in str(cur) for t in _TORCH_WRITE_FAILURES):
            where = f" under {fallback_path}" if fallback_path else ""
            return (
                f"writing a PyTorch file{where} failed part-way ({str(cur).splitlines()[0][:80]}): usually a "
                "full disk or quota; free space or write elsewhere (--out). Files anatssl writes atomically "
                "keep their previous version"
            )
    return None
