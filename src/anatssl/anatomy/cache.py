"""The SAM embedding cache: one ``.npz`` per scan, float16 fine/coarse maps with their grid geometry.

Layout of a cache directory ``DIR`` (written by ``anatssl embed``)::

    DIR/cache.json            # model run, weights hash, preprocessing preset (+ its hash), strides
    DIR/<stem>-<key>.npz      # fine, coarse (float16), fine_affine, coarse_affine, meta (JSON)

An entry is *fresh* when its recorded source hash (the bytes of every file of the scan: all channel
files of a multi-file case), weights hash and preset hash all equal the current ones; ``embed``
recomputes stale entries and skips fresh ones, and :meth:`EmbeddingCache.get` refuses stale or missing
ones with a message that says what to run. Every file is written to a temporary name and renamed, so
an interrupted ``embed`` never leaves a half-written entry behind.

A scan is a path or a :class:`~anatssl.data.manifest.DataItem`. A multi-channel case (nnU-Net's
``{case}_0000``, ``{case}_0001``, ... files, or one 4D file) is embedded with all its channels stacked
``(C, X, Y, Z)``, as the SAM network was trained (``SAMNet(in_channels=model.in_channels)``); its entry
is keyed by the first channel file (``DataItem.image``, the path of the loaded :class:`Volume`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anatssl.anatomy.embedding import EmbeddingMap
from anatssl.anatomy.sam_model import SAMNet, embed_tensor, grid_affine
from anatssl.config.loader import to_dict
from anatssl.config.schema import DataConfig
from anatssl.data.jsonfile import read_json
from anatssl.data.manifest import DataItem
from anatssl.data.presets import preset_key
from anatssl.data.volume import Volume
from anatssl.errors import DataError

CACHE_FORMAT = "anatssl-sam-embeddings"
CACHE_VERSION = 1
MANIFEST = "cache.json"
FG_THRESHOLD = 0.05
"""Body = normalised intensity above this, as SAM's views (CT: -900 HU for the default window; MRI: 5 % of
the way from the low to the high ``data.mri_percentiles`` value)."""


Scan = str | Path | DataItem
"""A scan as the cache takes it: its image path, or its :class:`DataItem` (every channel file)."""


def scan_key(scan: Scan) -> Path:
    """The path an entry is keyed by: the image file (a multi-file case's first channel file)."""
    return Path(scan.image) if isinstance(scan, DataItem) else Path(scan)


def scan_files(scan: Scan) -> tuple[Path, ...]:
    """The files whose bytes a scan's entry depends on, in channel order."""
    return tuple(Path(f) for f in scan.files) if isinstance(scan, DataItem) else (Path(scan),)


# -- hashes ---------------------------------------------------------------------------------------
def source_hash(scan: Scan) -> str:
    """sha256 (16 hex digits) of a scan's bytes; a DICOM folder hashes its files in name order, a
    multi-file case (a :class:`DataItem` with ``channels``) every channel file in channel order (a
    single file hashes as before, so existing caches stay fresh)."""
    h = hashlib.sha256()
    for path in scan_files(scan):
        if not path.exists():
            raise DataError(f"scan {path} does not exist")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def preset_hash(data: DataConfig) -> str:
    """The preprocessing preset's key (``data.presets.preset_key``): spacing, intensity, foreground crop."""
    return preset_key(data)


# -- atomic files ---------------------------------------------------------------------------------
def atomic_write_bytes(data: bytes, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_map(emap: EmbeddingMap, path: str | Path) -> None:
    buf = io.BytesIO()
    extra: dict[str, Any] = (
        {} if emap.fine_mask is None else {"fine_mask": np.asarray(emap.fine_mask, dtype=bool)}
    )
    np.savez(
        buf,
        fine=emap.fine.astype(np.float16),
        coarse=emap.coarse.astype(np.float16),
        fine_affine=emap.fine_affine,
        coarse_affine=emap.coarse_affine,
        meta=np.array(json.dumps(emap.meta)),
        **extra,
    )
    atomic_write_bytes(buf.getvalue(), Path(path))


def load_map(path: str | Path) -> EmbeddingMap:
    try:
        with np.load(path, allow_pickle=False) as z:
            emap = EmbeddingMap(
                z["fine"],
                z["coarse"],
                z["fine_affine"],
                z["coarse_affine"],
                json.loads(str(z["meta"])),
                z["fine_mask"] if "fine_mask" in z else None,
            )
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"cannot read embedding {path}: {e}; delete it and re-run `anatssl embed`") from e
    check_consistent(emap, str(path))
    return emap


# -- geometry -------------------------------------------------------------------------------------
def check_consistent(emap: EmbeddingMap, where: str) -> None:
    """The arrays must have the shapes their recorded volume geometry implies."""
    if emap.fine.ndim != 4 or emap.coarse.ndim != 4 or emap.fine.shape[0] != emap.coarse.shape[0]:
        raise DataError(
            f"{where}: embedding arrays have shapes {emap.fine.shape} / {emap.coarse.shape}; "
            "expected (D, X, Y, Z) each with the same D"
        )
    if emap.fine_mask is not None and tuple(emap.fine_mask.shape) != tuple(emap.fine.shape[1:]):
        raise DataError(
            f"{where}: fine_mask {tuple(emap.fine_mask.shape)} does not match the fine grid "
            f"{tuple(emap.fine.shape[1:])}; re-run `anatssl embed`"
        )
    raw = emap.meta.get("volume_shape")
    if isinstance(raw, (list, tuple)):
        shape = tuple(int(n) for n in raw)
        for key, arr in (("fine", emap.fine), ("coarse", emap.coarse)):
            s = int(str(emap.meta[f"{key}_stride"]))
            want = tuple(-(-n // s) for n in shape)
            if tuple(arr.shape[1:]) != want:
                raise DataError(
                    f"{where}: {key} grid {tuple(arr.shape[1:])} does not fit a volume of "
                    f"{shape} at stride {s} (expected {want}); re-run `anatssl embed`"
                )


def check_geometry(emap: EmbeddingMap, volume: Volume) -> None:
    """Raise :class:`DataError` if ``emap`` was not computed on (a grid of) the same world box as ``volume``.

    The world boxes of the embedded volume and of ``volume`` must agree within one fine-grid cell plus
    one voxel per side (the embedding may come from a resampled copy of the scan).
    """
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.float64)
    vw = volume.voxel_to_world(corners * (np.asarray(volume.spatial_shape) - 1))
    if "volume_affine" in emap.meta:
        a = np.asarray(emap.meta["volume_affine"], dtype=np.float64)
        shape = np.asarray(emap.meta["volume_shape"], dtype=np.float64)
        ew = (corners * (shape - 1)) @ a[:3, :3].T + a[:3, 3]
    else:
        ew = EmbeddingMap.grid_to_world(emap.fine_affine, corners * (np.asarray(emap.fine_shape) - 1))
    tol = np.linalg.norm(emap.fine_affine[:3, :3], axis=0).max() + max(volume.spacing) + 1e-3
    off = max(np.abs(vw.min(0) - ew.min(0)).max(), np.abs(vw.max(0) - ew.max(0)).max())
    if off > tol:
        raise DataError(
            f"the embedding of {emap.meta.get('source', '?')} is of another geometry than {volume.path}: the "
            f"scan spans {np.round(vw.min(0), 1).tolist()}..{np.round(vw.max(0), 1).tolist()} mm, the "
            f"embedding {np.round(ew.min(0), 1).tolist()}..{np.round(ew.max(0), 1).tolist()} mm (off by "
            f"{off:.1f} mm > {tol:.1f} mm); it belongs to another scan or another preprocessing: "
            "re-run `anatssl embed` with the same data preset"
        )


# -- embedding ------------------------------------------------------------------------------------
def fine_foreground(volume: Volume, stride: int = 2, threshold: float = FG_THRESHOLD) -> np.ndarray:
    """(Fx, Fy, Fz) bool: fine cells (stride-``stride`` blocks) with any voxel above ``threshold``."""
    img = np.asarray(volume.image[0]) > threshold
    pad = [(0, (-s) % stride) for s in img.shape]
    img = np.pad(img, pad)
    x, y, z = (s // stride for s in img.shape)
    return np.asarray(img.reshape(x, stride, y, stride, z, stride).any(axis=(1, 3, 5)))


def embed_volume(
    net: SAMNet,
    volume: Volume,
    window: int | None = 128,
    device: str | torch.device = "cpu",
    extra_meta: dict[str, Any] | None = None,
) -> EmbeddingMap:
    """One preprocessed :class:`Volume` -> its :class:`EmbeddingMap` (float16, unit-norm, with affines, and
    the body mask of the fine grid)."""
    x = torch.from_numpy(np.array(volume.image, dtype=np.float32))[None].to(device)
    fine, coarse = embed_tensor(net, x, window=window)
    meta: dict[str, Any] = {
        "source": str(volume.path),
        "volume_shape": list(volume.spatial_shape),
        "volume_affine": np.asarray(volume.affine, dtype=np.float64).tolist(),
        "spacing": list(volume.spacing),
        "fine_stride": net.fine_stride,
        "coarse_stride": net.coarse_stride,
        "embed_dim": net.embed_dim,
    }
    meta.update(extra_meta or {})
    return EmbeddingMap(
        fine=fine.cpu().numpy().astype(np.float16),
        coarse=coarse.cpu().numpy().astype(np.float16),
        fine_affine=grid_affine(volume.affine, net.fine_stride),
        coarse_affine=grid_affine(volume.affine, net.coarse_stride),
        meta=meta,
        fine_mask=fine_foreground(volume, net.fine_stride),
    )


class EmbeddingCache:
    """Read (and write) a cache directory made by ``anatssl embed``.

    ``EmbeddingCache(dir).get(volume_path)`` returns the fresh :class:`EmbeddingMap` of a scan, or
    raises :class:`DataError` saying why not (no cache, no entry, stale entry, other geometry).
    ``model_hash``: ``run -> weights hash`` of the SAM run the manifest records; given, ``get`` also
    verifies that those weights have not changed since (``anatssl.runs.embedding.embedding_cache``
    passes the run reader's; this module never opens a run folder).
    """

    def __init__(self, root: str | Path, model_hash: Callable[[Path], str] | None = None) -> None:
        self.root = Path(root)
        self.model_hash = model_hash
        self._current_model_hash: str | None = None

    # -- manifest --------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.is_file():
            raise DataError(
                f"{self.root} is not a SAM embedding cache (no {MANIFEST}); create it with "
                "`anatssl embed --model RUN --data PATH --out DIR`"
            )
        m = read_json(
            self.manifest_path,
            "SAM embedding cache manifest",
            fix="the cache is corrupt: delete it and re-run `anatssl embed`",
        )
        if m.get("format") != CACHE_FORMAT:
            raise DataError(f"{self.manifest_path} is not a SAM embedding cache manifest")
        return dict(m)

    def write_manifest(self, model_run: str, model_hash: str, data: DataConfig, net: SAMNet) -> None:
        m = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "model_run": str(Path(model_run).resolve()),
            "model_hash": model_hash,
            "preset": to_dict(data),
            "preset_hash": preset_hash(data),
            "fine_stride": net.fine_stride,
            "coarse_stride": net.coarse_stride,
            "embed_dim": net.embed_dim,
        }
        atomic_write_bytes(json.dumps(m, indent=1).encode(), self.manifest_path)

    # -- entries ---------------------------------------------------------------------------------
    def entry_path(self, volume_path: Scan) -> Path:
        p = scan_key(volume_path).resolve()
        stem = p.name.split(".")[0] or "scan"
        return self.root / f"{stem}-{hashlib.sha1(str(p).encode()).hexdigest()[:10]}.npz"

    def stale_reason(
        self, volume_path: Scan, model_hash: str, preset: str, check_source: bool = True
    ) -> str | None:
        """None when the entry of ``volume_path`` is fresh for these hashes, else why not.

        ``check_source=False`` skips hashing the scan file (a full read; done once per dataset at
        start-up by Alice's stage 0, not in every DataLoader worker)."""
        path = self.entry_path(volume_path)
        if not path.is_file():
            return "missing"
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
        except (OSError, ValueError, KeyError):
            return "unreadable"
        if meta.get("model_hash") != model_hash:
            return "computed with other model weights"
        if meta.get("preset_hash") != preset:
            return "computed with another preprocessing preset"
        if check_source and meta.get("source_hash") != source_hash(volume_path):
            return "the scan file changed since"
        return None

    def put(self, volume_path: Scan, emap: EmbeddingMap, model_hash: str, preset: str) -> Path:
        """Store ``emap`` as the entry of ``volume_path``, stamped with the hashes that make it fresh."""
        emap.meta.update(
            {
                "source": str(scan_key(volume_path)),
                "source_hash": source_hash(volume_path),
                "model_hash": model_hash,
                "preset_hash": preset,
            }
        )
        path = self.entry_path(volume_path)
        save_map(emap, path)
        return path

    def _model_hash_now(self, manifest: dict[str, Any]) -> str | None:
        if self._current_model_hash is None and self.model_hash is not None:
            run = Path(manifest.get("model_run", ""))
            if not run.exists():
                return None  # the run was moved or deleted: nothing to compare with
            self._current_model_hash = self.model_hash(run)
        return self._current_model_hash

    def get(self, volume_path: Scan, volume: Volume | None = None, check_source: bool = True) -> EmbeddingMap:
        """The fresh embedding of ``volume_path``; with ``volume`` also check it covers that scan's grid.

        The one freshness check (Alice's views call it with ``check_source=False``, see
        :meth:`stale_reason`)."""
        m = self.manifest()
        redo = f"re-run `anatssl embed --model {m.get('model_run')} --data PATH --out {self.root}`"
        reason = self.stale_reason(volume_path, m["model_hash"], m["preset_hash"], check_source)
        volume_path = scan_key(volume_path)
        if reason == "missing":
            raise DataError(f"no embedding of {volume_path} in {self.root}; {redo} with a PATH that holds it")
        if reason is not None:
            raise DataError(f"the embedding of {volume_path} in {self.root} is stale ({reason}); {redo}")
        if self.model_hash is not None:
            now = self._model_hash_now(m)
            if now is not None and now != m["model_hash"]:
                raise DataError(
                    f"the embeddings in {self.root} are stale: the weights of {m['model_run']} "
                    f"changed since they were computed; {redo}"
                )
        emap = load_map(self.entry_path(volume_path))
        if volume is not None:
            check_geometry(emap, volume)
        return emap


# -- a whole dataset --------------------------------------------------------------------------------
def load_preprocessed(scan: Scan, data: DataConfig, channels: int = 1) -> Volume:
    """Read one scan with its ``channels`` channels (``(C, X, Y, Z)``: a multi-file case's channel files
    stacked, or a 4D file) and apply the run's preprocessing preset (resampling, intensity, foreground
    crop). A channel count other than ``channels`` is a :class:`DataError` naming the case and file."""
    from anatssl.data.io import read_scan
    from anatssl.data.presets import preprocess

    case = scan.case if isinstance(scan, DataItem) else None
    vol = read_scan(scan_files(scan), channels=channels, max_voxels=data.max_voxels, case=case)
    return preprocess(vol, data)


def progress_bar(enabled: bool) -> Any:
    """A rich progress bar (disabled: a no-op one) for per-scan loops."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*cols, disable=not enabled, transient=False)
