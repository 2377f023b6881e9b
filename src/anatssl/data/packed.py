"""Compressed, chunked cache of preprocessed scans: what ``anatssl preprocess`` writes and training reads.

Why not the ``.npy`` cache (:mod:`anatssl.data.cache`): it stores float32 uncompressed (~45 MB per CT,
450 GB for 10k scans) and is filled by decoding every scan before step 1. This cache is filled once by
``anatssl preprocess --workers N`` (or by the ranks of a run, each its own share), compresses the
arrays, and a run that finds it complete starts after one ``stat`` and one small JSON read per scan.

Layout under ``<cache dir>/packed-<settings key>/``::

    settings.json                       the preprocessing settings (data.*, channels, NaN policy, format)
    report.json                         the last ``anatssl preprocess``: counts and the scans it could not use
    entries/<scan name>-<path hash>/
        meta.json                       sources' (size, mtime), settings key, affine, arrays, file size
        data-<token>.bin                every chunk of the image (and label), then the chunk index
        failed.json                     instead of the two above: why the scan cannot be used

**Arrays.** The spatial grid is cut into ``CHUNK`` = 32^3 blocks (per channel); each block's bytes are
byte-shuffled (the n-th byte of every element together) and compressed with zlib level 1 (the
standard library's: no new dependency; shuffling gives zlib the runs that blosc's shuffle filter
gives it). A 96^3 crop decompresses only the blocks it touches. CT images whose values are exactly
``(HU - low) / (high - low)`` for integer HU (any CT scan not resampled: ``data.spacing`` null) are
stored as uint16 HU codes plus the float32 table of the 2001 (by default) possible values, checked
voxel by voxel at write time, so decoding gives back the identical float32 bits; anything else
(resampled CT, MRI) is stored as float32, lossless as well. No value is ever rounded.

**Validity.** An entry is valid when its ``meta.json`` has this format and settings key, names a data
file of the recorded size, and records the sources' current size and mtime (ns). The data file is
written under a ``.tmp-`` name, fsync-ed and renamed; ``meta.json`` is written the same way, last. A
preprocess killed mid-file leaves a ``.tmp-`` file that nothing reads (removed by a later build of the
entry once older than ``GRACE_S``) and no ``meta.json``, so the scan is simply done again: a killed
preprocess continues where it stopped. Several processes may build one entry at once (two runs
sharing a cache, every rank of an Alice pre-step): each writes its own file, the last ``meta.json``
wins, and no file younger than ``GRACE_S`` is removed, so none is pulled from under a writer or reader.
(size, mtime) rather than a content hash keeps start-up proportional to the manifest: a file
rewritten in place with the same size and mtime to the nanosecond is not noticed; ``touch`` it.

**Settings.** The folder name carries a hash of the settings, and each entry records it again: a run
with other settings never reads these arrays. It finds no folder for its own settings, says which
settings the folders that are there were made with (:func:`other_settings`), and builds its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anatssl.config.schema import DataConfig
from anatssl.data.cache import item_key, source_files
from anatssl.data.manifest import DataItem
from anatssl.data.presets import preset_spec
from anatssl.data.volume import Volume
from anatssl.errors import DataError

PACKED_FORMAT = 1
CHUNK = 32
"""Edge of a chunk, in voxels (recorded per array, so a cache written with another edge still reads).
A random 96^3 crop touches up to 4^3 chunks of 32^3 (<= 2.4x the crop's voxels) but up to 3^3 of 64^3
(<= 8x); benchmarks/bench_packed_cache.py measured both within noise of each other, in size (0.233x
vs 0.231x raw float32) and in crops/s (docs/data.md), so the smaller over-read was kept."""
ZLIB_LEVEL = 1
"""zlib level: 6 stored 3-5 % less than 1 for 0-10 % more write time (decoding the NIfTI dominates) in
benchmarks/bench_packed_cache.py; either is defensible, 1 was kept as the cheaper one."""
GRACE_S = 3600.0
"""Age (s) after which a leftover ``.tmp-`` file or an unnamed data file of an entry is removed."""
CODEC = "shuffle+zlib"
"""Recorded per array; the only one read so far."""
PREFIX = "packed-"


# -- settings --------------------------------------------------------------------------------------------
def settings_spec(cfg: DataConfig, channels: int = 1, nan_policy: str = "error") -> dict[str, Any]:
    """Everything that changes what this cache holds for a scan (and which scans it refuses)."""
    return {
        "format": PACKED_FORMAT,
        "preprocessing": preset_spec(cfg),
        "channels": int(channels),
        "nan_policy": nan_policy,
        "max_voxels": int(cfg.max_voxels),
    }


def settings_key(spec: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def settings_diff(made: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``key: made-value there, wanted-value here`` for every setting that differs."""
    a, b = _flat(made), _flat(wanted)
    return [
        f"{k}: {a.get(k, '-')} there, {b.get(k, '-')} here"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def other_settings(cache_dir: Path, spec: dict[str, Any]) -> list[str]:
    """One line per packed folder in ``cache_dir`` made with other settings, saying which ones differ."""
    lines: list[str] = []
    if not cache_dir.is_dir():
        return lines
    own = PREFIX + settings_key(spec)
    for d in sorted(cache_dir.glob(PREFIX + "*")):
        if d.name == own or not d.is_dir():
            continue
        try:
            made = json.loads((d / "settings.json").read_text())
        except (OSError, ValueError):
            lines.append(f"{d}: no readable settings.json (an interrupted start); not used")
            continue
        lines.append(f"{d} was made with other settings ({'; '.join(settings_diff(made, spec))}); not used")
    return lines


# -- chunked arrays --------------------------------------------------------------------------------------
def _shuffle(a: np.ndarray) -> bytes:
    item = a.dtype.itemsize
    raw = np.ascontiguousarray(a).view(np.uint8)
    return raw.reshape(-1, item).T.tobytes() if item > 1 else raw.tobytes()


def _unshuffle(b: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    item = dtype.itemsize
    raw = np.frombuffer(b, dtype=np.uint8)
    if item == 1:
        return raw.view(dtype).reshape(shape)
    n = raw.size // item
    out = np.empty(n, dtype=dtype)
    out8 = out.view(np.uint8)
    for k in range(item):  # strided byte copies: ~8x faster than a transposed copy of the (item, n) bytes
        out8[k::item] = raw[k * n : (k + 1) * n]
    return out.reshape(shape)


def _grid(shape: Sequence[int], chunk: int) -> list[tuple[int, int, int, int]]:
    """(channel, i, j, k) of every chunk, in file order."""
    c, *sp = shape
    n = [-(-s // chunk) for s in sp]
    return [(ch, i, j, k) for ch in range(c) for i in range(n[0]) for j in range(n[1]) for k in range(n[2])]


def ct_codes(image: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """(uint16 codes, float32 table) with ``table[codes]`` bit-identical to ``image``, or None.

    Only for CT whose values are ``(HU - low) / (high - low)`` of integer HU (scans not resampled)."""
    if cfg.modality != "ct":
        return None
    lo, hi = (float(v) for v in cfg.hu_window)
    n = hi - lo
    if n != int(n) or lo != int(lo) or not 0 < n < 65535:
        return None
    table = ((np.arange(int(n) + 1, dtype=np.float32) + np.float32(lo)) - lo) / (hi - lo)
    table = table.astype(np.float32)
    codes = np.clip(np.rint(image * np.float32(n)), 0, n).astype(np.uint16)
    if not np.array_equal(table[codes], image):
        return None
    return codes, table


@dataclass(eq=False)
class ChunkedArray:
    """A read-only array in a data file, decoded chunk by chunk on slicing (picklable: a path, no handle).

    ``a[:, x0:x1, y0:y1, z0:z1]`` reads only the chunks the box touches; ``np.asarray(a)`` decodes it all.
    """

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    stored: np.dtype
    offsets: np.ndarray
    """(n_chunks + 1,) int64 byte offsets of the chunks in the file (the last: the end)."""
    table: np.ndarray | None = None
    chunk: int = CHUNK

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getattr__(self, name: str) -> Any:
        """Any other ndarray attribute (``max``, ``mean``, ``astype``, ...) on the decoded array."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(np.asarray(self), name)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """``a + 1``, ``np.clip(a, ...)``, ``a > 0.5``: on the decoded array."""
        args = [np.asarray(x) if isinstance(x, ChunkedArray) else x for x in inputs]
        return getattr(ufunc, method)(*args, **kwargs)

    def __add__(self, other: Any) -> Any:
        return np.asarray(self) + other

    def __sub__(self, other: Any) -> Any:
        return np.asarray(self) - other

    def __mul__(self, other: Any) -> Any:
        return np.asarray(self) * other

    def __gt__(self, other: Any) -> Any:
        return np.asarray(self) > other

    def __lt__(self, other: Any) -> Any:
        return np.asarray(self) < other

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self.read((0, 0, 0), self.shape[1:])
        return a if dtype is None else a.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        basic = all(isinstance(k, slice) and k.step in (None, 1) for k in key[1:4]) and len(key) <= 4
        if not basic or not isinstance(key[0], slice | int):
            return np.asarray(self)[key]
        box = [k.indices(n)[:2] for k, n in zip(key[1:], self.shape[1:])]
        box += [(0, n) for n in self.shape[1 + len(box) :]]
        lo = tuple(a for a, _ in box)
        hi = tuple(max(a, b) for a, b in box)
        return self.read(lo, hi)[key[0]]

    def read(self, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
        """(C, *(hi - lo)) for the spatial box [lo, hi)."""
        c, *sp = self.shape
        e = self.chunk
        out = np.empty((c, *(b - a for a, b in zip(lo, hi))), dtype=self.stored)
        if out.size == 0:
            return out.astype(self.dtype) if self.table is None else np.empty(out.shape, self.dtype)
        n = [-(-s // e) for s in sp]
        rng = [range(a // e, (b - 1) // e + 1) for a, b in zip(lo, hi)]
        with open(self.path, "rb") as f:
            for ch in range(c):
                for i in rng[0]:
                    for j in rng[1]:
                        for k in rng[2]:
                            idx = ((ch * n[0] + i) * n[1] + j) * n[2] + k
                            a, b = int(self.offsets[idx]), int(self.offsets[idx + 1])
                            f.seek(a)
                            org = (i * e, j * e, k * e)
                            cshape = tuple(min(e, s - o) for s, o in zip(sp, org))
                            block = _unshuffle(zlib.decompress(f.read(b - a)), self.stored, cshape)
                            src: list[slice] = []
                            dst: list[slice] = []
                            for o, s, l0, h0 in zip(org, cshape, lo, hi):
                                x0, x1 = max(o, l0), min(o + s, h0)
                                src.append(slice(x0 - o, x1 - o))
                                dst.append(slice(x0 - l0, x1 - l0))
                            out[ch][(*dst,)] = block[(*src,)]
        if self.table is not None:
            return self.table.take(out)
        return out


def _write_array(f: Any, a: np.ndarray) -> tuple[int, list[int]]:
    """Append ``a``'s chunks to ``f``; return (where the chunk offsets begin, the offsets)."""
    offsets = [f.tell()]
    e = CHUNK
    for ch, i, j, k in _grid(a.shape, e):
        block = a[ch, i * e : (i + 1) * e, j * e : (j + 1) * e, k * e : (k + 1) * e]
        f.write(zlib.compress(_shuffle(block), ZLIB_LEVEL))
        offsets.append(f.tell())
    return offsets[0], offsets


# -- entries ---------------------------------------------------------------------------------------------
def source_stats(item: DataItem) -> dict[str, list[int]]:
    """(size, mtime ns) of the scan's files; a DICOM folder: (sum of file sizes, newest mtime)."""
    out = {}
    for name, p in source_files(item).items():
        st = p.stat()
        if p.is_dir():
            files = [q.stat() for q in p.iterdir() if q.is_file()]
            out[name] = [
                sum(s.st_size for s in files),
                max([st.st_mtime_ns, *(s.st_mtime_ns for s in files)]),
            ]
        else:
            out[name] = [st.st_size, st.st_mtime_ns]
    return out


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _jsonable(obj: Any) -> Any:
    return obj.tolist() if isinstance(obj, np.generic | np.ndarray) else str(obj)


@dataclass
class Status:
    """What the cache knows of one scan: ``ok`` (``meta`` set), ``bad`` or ``todo`` (``reason``)."""

    state: str
    reason: str = ""
    meta: dict[str, Any] | None = None

    @property
    def shape(self) -> tuple[int, int, int] | None:
        if not self.meta:
            return None
        x, y, z = self.meta["arrays"]["image"]["shape"][1:]
        return (int(x), int(y), int(z))


class PackedCache:
    """The ``packed-<settings key>`` folder of one set of preprocessing settings (module docstring)."""

    def __init__(
        self, cache_dir: str | Path, cfg: DataConfig, channels: int = 1, nan_policy: str = "error"
    ) -> None:
        self.cfg = cfg
        self.channels = channels
        self.nan_policy = nan_policy
        self.spec = settings_spec(cfg, channels, nan_policy)
        self.key = settings_key(self.spec)
        self.cache_dir = Path(cache_dir)
        self.root = self.cache_dir / f"{PREFIX}{self.key}"

    def __repr__(self) -> str:
        return f"PackedCache({self.root})"

    def entry_dir(self, item: DataItem) -> Path:
        spec = item_key(item)  # every channel file of a multi-file case, and its label table
        h = hashlib.sha1(json.dumps(spec).encode()).hexdigest()[:12]
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", item.image.name)[:60]
        return self.root / "entries" / f"{stem}-{h}"

    def ensure_root(self) -> None:
        """Create the folder and its ``settings.json`` (once)."""
        try:
            (self.root / "entries").mkdir(parents=True, exist_ok=True)
            if not (self.root / "settings.json").is_file():
                _atomic_write_bytes(self.root / "settings.json", json.dumps(self.spec, indent=1).encode())
        except OSError as e:
            raise DataError(
                f"cannot create the preprocessed cache {self.root}: {e}; set data.cache_dir to a "
                "writable folder"
            ) from e

    # -- reading ---------------------------------------------------------------------------------------
    def status(self, item: DataItem) -> Status:
        """Whether ``item`` has a valid entry (one stat per file and one small JSON read; no decoding)."""
        entry = self.entry_dir(item)
        try:
            stats = source_stats(item)
        except OSError as e:
            what = getattr(e, "filename", None) or item.image
            where = f"case {item.case}: " if item.case is not None else f"{item.image}: "
            gone = isinstance(e, FileNotFoundError)
            return Status(
                "bad",
                f"{where}{what} {'does not exist' if gone else f'cannot be read ({e})'}; restore it or "
                "remove the case from the data",
            )
        why = "not preprocessed yet"
        for name in ("meta.json", "failed.json"):
            try:
                rec = json.loads((entry / name).read_text())
            except (OSError, ValueError):
                continue
            if (
                not isinstance(rec, dict)
                or rec.get("format") != PACKED_FORMAT
                or rec.get("settings") != self.key
            ):
                continue
            if rec.get("sources") != stats:
                why = "its source changed since it was preprocessed"
                continue
            if name == "failed.json":
                return Status("bad", str(rec.get("reason")))
            try:
                size = (entry / rec["file"]).stat().st_size
            except (OSError, KeyError):
                continue
            if size == rec.get("file_size"):
                return Status("ok", meta=rec)
        return Status("todo", why)

    def open(self, item: DataItem, meta: dict[str, Any] | None = None) -> Volume:
        """The preprocessed volume of ``item`` from its entry (``meta``: its ``meta.json``, if read already).

        Raises:
            DataError: the entry is missing, stale or damaged (say ``anatssl preprocess`` again)."""
        if meta is None:
            st = self.status(item)
            if st.state != "ok" or st.meta is None:
                raise DataError(f"{item.image} has no valid entry in {self.root} ({st.reason})")
            meta = st.meta
        path = str(self.entry_dir(item) / meta["file"])
        arrays = {}
        try:
            with open(path, "rb") as f:
                for name, a in meta["arrays"].items():
                    if a.get("codec") != CODEC:
                        raise ValueError(f"codec {a.get('codec')!r}, not {CODEC!r}")
                    n = len(_grid(a["shape"], a["chunk"])) + 1
                    f.seek(a["index"])
                    offsets = np.frombuffer(f.read(8 * n), dtype="<i8")
                    table = None
                    if a.get("table") is not None:
                        f.seek(a["table"])
                        table = np.frombuffer(f.read(4 * a["table_len"]), dtype="<f4").copy()
                    if len(offsets) != n or (table is not None and len(table) != a["table_len"]):
                        raise ValueError("truncated index")
                    arrays[name] = ChunkedArray(
                        path,
                        tuple(a["shape"]),
                        np.dtype(a["dtype"]),
                        np.dtype(a["stored"]),
                        offsets,
                        table,
                        int(a["chunk"]),
                    )
        except (OSError, ValueError, KeyError) as e:
            raise DataError(
                f"cache entry {path} for {item.image} is damaged ({e}); run anatssl preprocess again",
            ) from e
        meta_out = {**meta.get("meta", {}), "cache_entry": str(self.entry_dir(item))}
        return Volume(
            image=arrays["image"],  # type: ignore[arg-type]  # duck-typed: shape, dtype, slicing, np.asarray
            affine=np.asarray(meta["affine"], dtype=np.float64),
            path=str(item.image),
            label=arrays.get("label"),  # type: ignore[arg-type]
            meta=meta_out,
        )

    # -- writing ---------------------------------------------------------------------------------------
    def build(self, item: DataItem) -> Status:
        """Decode, preprocess and store ``item``; a scan that cannot be used is recorded (``failed.json``).

        Raises:
            DataError / OSError: the cache cannot be written (not the scan's fault)."""
        from anatssl.data.io import read_scan
        from anatssl.data.presets import preprocess

        entry = self.entry_dir(item)
        stats = source_stats(item)  # before decoding: a change during the decode shows next time
        try:
            vol = read_scan(
                item.files,
                item.label,
                channels=self.channels,
                nan_policy=self.nan_policy,  # type: ignore[arg-type]
                max_voxels=self.cfg.max_voxels,
                case=item.case,
                label_values=item.label_values,
            )
            out = preprocess(vol, self.cfg)
        except DataError as e:
            reason = str(e)
        except MemoryError:
            reason = f"ran out of memory reading {item.image}; it is too large for this machine"
        except Exception as e:  # a reader failure nobody anticipated still names the file
            reason = f"cannot load {item.image}: {type(e).__name__}: {e}"
        else:
            return Status("ok", meta=self._write(entry, item, stats, out))
        entry.mkdir(parents=True, exist_ok=True)
        rec = {"format": PACKED_FORMAT, "settings": self.key, "sources": stats, "reason": reason}
        _atomic_write_bytes(entry / "failed.json", json.dumps(rec).encode())
        try:  # readers hold their meta in memory; its data file stays for GRACE_S (below)
            (entry / "meta.json").unlink()
        except OSError:
            pass
        self._remove(entry, keep=("failed.json",))
        return Status("bad", reason)

    def _write(self, entry: Path, item: DataItem, stats: dict[str, list[int]], vol: Volume) -> dict[str, Any]:
        entry.mkdir(parents=True, exist_ok=True)
        self._remove(entry, keep=("meta.json", "failed.json"))  # what a killed build left
        name = f"data-{uuid.uuid4().hex[:12]}.bin"
        arrays: dict[str, Any] = {}
        fd, tmp = tempfile.mkstemp(dir=entry, prefix=".tmp-", suffix=".bin")
        try:
            with os.fdopen(fd, "wb") as f:
                parts: list[tuple[str, np.ndarray]] = [("image", vol.image)]
                if vol.label is not None:
                    parts.append(("label", vol.label))
                for key, a in parts:
                    a = np.asarray(a)
                    rec: dict[str, Any] = {
                        "shape": list(a.shape),
                        "dtype": a.dtype.str,
                        "chunk": CHUNK,
                        "codec": CODEC,
                    }
                    coded = ct_codes(a, self.cfg) if key == "image" else None
                    if coded is not None:
                        a, table = coded
                    _, offsets = _write_array(f, a)
                    rec["stored"] = a.dtype.str
                    rec["index"] = f.tell()
                    f.write(np.asarray(offsets, dtype="<i8").tobytes())
                    if coded is not None:
                        rec["table"], rec["table_len"] = f.tell(), len(table)
                        f.write(table.astype("<f4").tobytes())
                    arrays[key] = rec
                size = f.tell()
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, entry / name)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        meta = {
            "format": PACKED_FORMAT,
            "settings": self.key,
            "sources": stats,
            "source": {k: str(p) for k, p in source_files(item).items()},
            "file": name,
            "file_size": size,
            "arrays": arrays,
            "affine": np.asarray(vol.affine).tolist(),
            "meta": vol.meta,
        }
        text = json.dumps(meta, default=_jsonable).encode()
        _atomic_write_bytes(entry / "meta.json", text)  # last: the entry is valid from here on
        self._remove(entry, keep=("meta.json", name))
        return dict(json.loads(text))

    @staticmethod
    def _remove(entry: Path, keep: tuple[str, ...]) -> None:
        """Remove from ``entry`` the files ``keep`` does not name that are older than ``GRACE_S``: what a
        killed build left (``.tmp-``) and data files no ``meta.json`` names any more. Younger ones may
        be another process's write in progress, or a file a DataLoader worker is reading (arrays are
        read lazily, by path), so they stay until a later build of the entry."""
        import time

        old = time.time() - GRACE_S
        for p in entry.iterdir():
            if p.name in keep:
                continue
            try:
                if p.stat().st_mtime < old:
                    p.unlink() if p.is_file() else shutil.rmtree(p)
            except OSError:  # a concurrent writer removed it first
                pass

    def write_report(self, report: dict[str, Any]) -> None:
        _atomic_write_bytes(self.root / "report.json", json.dumps(report, indent=1).encode())


# -- worker processes ------------------------------------------------------------------------------------
_WORKER_CACHE: PackedCache | None = None


def _init_worker(cache: PackedCache) -> None:
    global _WORKER_CACHE
    import torch

    torch.set_num_threads(1)  # N workers on N cores; the resampling would otherwise start N threads each
    _WORKER_CACHE = cache


def _build_in_worker(item: DataItem) -> tuple[str, str, list[int] | None]:
    assert _WORKER_CACHE is not None
    try:
        st = _WORKER_CACHE.build(item)
    except Exception as e:  # the cache cannot be written: the whole job's problem, told by the parent
        return ("error", f"{type(e).__name__}: {e}", None)
    return (st.state, st.reason, list(st.shape) if st.shape else None)


def fill(
    cache: PackedCache,
    items: Sequence[DataItem],
    workers: int = 0,
    progress: bool = False,
    title: str = "preprocessing",
) -> list[Status]:
    """The status of every item, preprocessing those without a valid entry (``workers`` processes; 0:
    in this process). A scan the cache cannot be written for gets state ``error`` (not raised: under
    DDP every rank must reach the exchange of results, see :meth:`VolumeSource.validate`).

    Start-up cost with a complete cache: :meth:`PackedCache.status` per item, no decoding."""
    from anatssl.data.progress import progress_bar as _progress

    statuses = [cache.status(it) for it in items]
    todo = [i for i, st in enumerate(statuses) if st.state == "todo"]
    if not todo:
        return statuses
    cache.ensure_root()
    with _progress(progress, len(todo), title) as advance:
        if workers > 0:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            with ProcessPoolExecutor(workers, mp.get_context(method), _init_worker, (cache,)) as pool:
                for i, (state, reason, _shape) in zip(
                    todo, pool.map(_build_in_worker, [items[i] for i in todo])
                ):
                    if state == "ok":  # re-read the small meta.json rather than ship it back
                        statuses[i] = cache.status(items[i])
                        if statuses[i].state != "ok":
                            statuses[i] = Status(
                                "error",
                                f"its entry vanished after it was written ({statuses[i].reason})",
                            )
                    else:
                        statuses[i] = Status(state, reason)
                    advance()
        else:
            for i in todo:
                try:
                    statuses[i] = cache.build(items[i])
                except Exception as e:
                    statuses[i] = Status("error", f"{type(e).__name__}: {e}")
                advance()
    return statuses
