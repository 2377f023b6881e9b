"""Preprocessed-array cache: a long run decodes (and resamples, crops, scales) each scan once.

Layout under ``root``::

    <scan name>-<key>/                key = hash(image path, label path, preset_key, read options;
                                      and, for a multi-file case, every channel file and the label table)
        meta.json                     the sidecar: source fingerprints, preset key, affine, shapes, files
        image-<token>.npy             (C, X, Y, Z) float32, preprocessed
        label-<token>.npy             (1, X, Y, Z) int16/int32, if the item has a label

``get`` returns memory-mapped arrays (``np.load(mmap_mode="r")``): DataLoader workers share the page
cache instead of each holding a copy; they are read-only, so views must copy what they cut (slicing
then ``np.array``/``torch.from_numpy(x.copy())``), never write into them.

**Invalidation.** The sidecar records each source's size, mtime (ns) and a BLAKE2 hash of its first and
last MiB (a gzip stream ends with its CRC and length, so any change to a ``.nii.gz`` alters the last
MiB); a DICOM folder's fingerprint is its listing (name, size, mtime of every file). Any difference
rebuilds the entry. A different preset is a different key, hence a different entry (old entries stay
until the folder is deleted). Within one process an entry whose sources' (size, mtime) have not moved
since it was verified is not re-hashed, so the training hot path costs one ``stat`` and two ``mmap``.

**Concurrency.** Arrays are written to ``.tmp-*`` files and ``os.replace``-d to names carrying a fresh
random token; ``meta.json`` is replaced last and names its arrays, so a reader sees either the old entry
or the new one, never a mix, whatever the number of DataLoader workers or DDP ranks writing at once
(each may decode the same scan; the last ``meta.json`` wins, all are complete).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from anatssl.config.schema import DataConfig
from anatssl.data.io import read_scan
from anatssl.data.manifest import DataItem
from anatssl.data.presets import preprocess, preset_key
from anatssl.data.volume import Volume
from anatssl.errors import DataError

CACHE_FORMAT = 1
HASH_BYTES = 1 << 20
"""Bytes hashed at each end of a source file (1 MiB: ~1 ms from the page cache, catches in-place edits
of the header and of the gzip trailer)."""


def fingerprint(path: Path) -> dict[str, Any]:
    """Size, mtime and a head/tail hash of a file; for a DICOM folder, a hash of its listing."""
    st = path.stat()
    if path.is_dir():
        listing = sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file()
        )
        digest = hashlib.blake2b(json.dumps(listing).encode(), digest_size=16).hexdigest()
        return {"size": sum(s for _, s, _ in listing), "mtime_ns": st.st_mtime_ns, "hash": digest}
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        h.update(f.read(HASH_BYTES))
        if st.st_size > HASH_BYTES:
            f.seek(max(HASH_BYTES, st.st_size - HASH_BYTES))
            h.update(f.read(HASH_BYTES))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": h.hexdigest()}


def _quick_stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns)


def source_files(item: DataItem) -> dict[str, Path]:
    """Every file the entry is made from: ``image`` (channel 0), ``channel1``.. of a multi-file case,
    ``label``."""
    out = {"image": item.image}
    out.update({f"channel{k}": p for k, p in enumerate(item.channels[1:], start=1)})
    if item.label is not None:
        out["label"] = item.label
    return out


def item_key(item: DataItem) -> list[Any]:
    """What names an item's entry besides the settings: its files (a single-file item's key is what it
    was before multi-file cases existed, so existing caches stay valid) and its label table."""
    key: list[Any] = [str(item.image.resolve()), str(item.label.resolve()) if item.label else None]
    if item.channels:
        key.append([str(p.resolve()) for p in item.channels])
    if item.label_values is not None:
        key.append(list(item.label_values))
    return key


def _jsonable(obj: Any) -> Any:
    """``json.dumps`` fallback for what volume meta may hold: numpy scalars/arrays, paths."""
    return obj.tolist() if isinstance(obj, np.generic | np.ndarray) else str(obj)


class VolumeCache:
    """Decode-once store of preprocessed volumes under ``root`` (see the module docstring).

    Picklable: DataLoader workers get a copy, including the in-process record of verified entries.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._verified: dict[str, tuple[tuple[tuple[int, int], ...], dict[str, Any]]] = {}

    @staticmethod
    def can_write(root: str | Path) -> bool:
        """Whether ``root`` can be created and written to (tries a small temp file)."""
        root = Path(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-probe-")
            os.close(fd)
            os.unlink(tmp)
            return True
        except OSError:
            return False

    def entry_dir(
        self, item: DataItem, cfg: DataConfig, channels: int = 1, nan_policy: str = "error"
    ) -> Path:
        head = item_key(item)
        spec = [*head[:2], preset_key(cfg), channels, nan_policy, *head[2:]]
        key = hashlib.sha1(json.dumps(spec).encode()).hexdigest()[:16]
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", item.image.name)[:60]
        return self.root / f"{stem}-{key}"

    # -- reading --------------------------------------------------------------------------------------
    def get(self, item: DataItem, cfg: DataConfig, channels: int = 1, nan_policy: str = "error") -> Volume:
        """The preprocessed volume of ``item``: from the cache, or decoded, preprocessed and stored.

        Returns:
            Volume with read-only memory-mapped ``image`` (C, X, Y, Z) float32 and ``label`` (1, X, Y, Z).

        Raises:
            DataError: the scan (or its label) is missing or bad (see ``read_volume``/``preprocess``), or
                the cache folder cannot be written.
        """
        entry = self.entry_dir(item, cfg, channels, nan_policy)
        sources = source_files(item)
        for name, p in sources.items():
            if not p.exists():
                where = f"case {item.case}: " if item.case is not None else ""
                raise DataError(
                    f"{where}{name} {p} does not exist (any more); restore it or remove it from the data"
                )
        stats = tuple(_quick_stat(p) for p in sources.values())
        memo = self._verified.get(str(entry))
        if memo is not None and memo[0] == stats:
            vol = self._open(entry, memo[1], item)
            if vol is not None:
                return vol
        sidecar = self._read_sidecar(entry)
        if sidecar is not None:
            current = {k: fingerprint(p) for k, p in sources.items()}
            if sidecar.get("fingerprint") == current and sidecar.get("preset_key") == preset_key(cfg):
                vol = self._open(entry, sidecar, item)
                if vol is not None:
                    self._verified[str(entry)] = (stats, sidecar)
                    return vol
        sidecar = self._build(entry, item, cfg, channels, nan_policy)
        vol = self._open(entry, sidecar, item)
        if vol is None:  # another writer replaced our entry between our write and our read: read theirs
            sidecar = self._read_sidecar(entry) or sidecar
            vol = self._open(entry, sidecar, item)
        if vol is None:
            raise DataError(f"cache entry {entry} for {item.image} vanished while being read; retry")
        self._verified[str(entry)] = (
            stats,
            sidecar,
        )  # stats from before the decode: a change during it shows
        return vol

    @staticmethod
    def _read_sidecar(entry: Path) -> dict[str, Any] | None:
        try:
            data = json.loads((entry / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("format") == CACHE_FORMAT else None

    @staticmethod
    def _open(entry: Path, sidecar: dict[str, Any], item: DataItem) -> Volume | None:
        """Memory-map the arrays a sidecar names; None if they are missing or damaged (-> rebuild)."""
        try:
            image = np.load(entry / sidecar["image_file"], mmap_mode="r")
            label = (
                np.load(entry / sidecar["label_file"], mmap_mode="r") if sidecar.get("label_file") else None
            )
        except (OSError, ValueError, KeyError, EOFError):
            return None
        if list(image.shape) != sidecar.get("shape") or (
            label is not None and label.shape[1:] != image.shape[1:]
        ):
            return None
        meta = {**sidecar.get("meta", {}), "cache_entry": str(entry)}
        affine = np.asarray(sidecar["affine"], dtype=np.float64)
        return Volume(image=image, affine=affine, path=str(item.image), label=label, meta=meta)

    # -- writing --------------------------------------------------------------------------------------
    def _build(self, entry: Path, item: DataItem, cfg: DataConfig, channels: int, nan_policy: str) -> dict:
        # fingerprint before decoding: if the file changes while we read it, the next get() sees it
        fps = {k: fingerprint(p) for k, p in source_files(item).items()}
        vol = read_scan(
            item.files,
            item.label,
            channels=channels,
            nan_policy=nan_policy,  # type: ignore[arg-type]
            max_voxels=cfg.max_voxels,
            case=item.case,
            label_values=item.label_values,
        )
        out = preprocess(vol, cfg)
        try:
            entry.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(
                f"cannot create cache folder {entry}: {e}; set data.cache_dir to a writable folder"
            ) from e
        old = self._read_sidecar(entry)
        token = uuid.uuid4().hex[:12]
        sidecar: dict[str, Any] = {
            "format": CACHE_FORMAT,
            "source": {k: str(p) for k, p in source_files(item).items()},
            "fingerprint": fps,
            "preset_key": preset_key(cfg),
            "affine": out.affine.tolist(),
            "shape": list(out.image.shape),
            "image_file": f"image-{token}.npy",
            "label_file": f"label-{token}.npy" if out.label is not None else None,
            "meta": out.meta,
        }
        _atomic_write(entry / sidecar["image_file"], lambda f: np.save(f, out.image))
        if out.label is not None:
            _atomic_write(entry / sidecar["label_file"], lambda f: np.save(f, out.label))
        text = json.dumps(sidecar, indent=1, default=_jsonable).encode()
        _atomic_write(entry / "meta.json", lambda f: f.write(text))
        sidecar = json.loads(text)
        if old is not None:  # the arrays the replaced sidecar named are no longer reachable
            for key in ("image_file", "label_file"):
                name = old.get(key)
                if name and name not in (sidecar["image_file"], sidecar["label_file"]):
                    try:
                        (entry / name).unlink()
                    except OSError:  # gone already (a concurrent writer), or open elsewhere on Windows
                        pass
        return sidecar


def _atomic_write(path: Path, write: Any) -> None:
    """Write via a temp file in the same folder, fsync, then ``os.replace`` (atomic on POSIX and NTFS).

    A failed write (a full disk: ``ENOSPC`` from ``write`` or ``fsync``) leaves the previous file as it
    was and raises ``OSError`` naming ``path``, which the bare error from a file object does not."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno is not None and not e.filename:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
