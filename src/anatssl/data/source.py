"""The dataset a method's views draw from: ``VolumeSource(data, data_cfg).load(i) -> Volume``.

``data`` is anything :func:`~anatssl.data.layouts.discover` accepts (a folder, a ``dataset.json``, a
CSV, a volume file, a downloaded layout: nnU-Net, BTCV, TotalSegmentator, AbdomenAtlas) or a list of
:class:`~anatssl.data.manifest.DataItem`. A multi-file case (nnU-Net channels) is read with its channel
files stacked, ``(C, X, Y, Z)``; their count must be ``channels``. Volumes come preprocessed
(:mod:`anatssl.data.presets`: for CT the HU window scaled to [0, 1]) and memory-mapped from the
:class:`~anatssl.data.cache.VolumeCache`, with their landmarks when the manifest lists them.

Bad scans: :meth:`VolumeSource.validate` makes sure every scan is in the compressed cache
(:mod:`anatssl.data.packed`, what ``anatssl preprocess`` fills; with a complete one it decodes nothing),
preprocessing the missing ones (under DDP each rank its share), logs a warning naming each bad file and
why, and drops it; ``load(i)`` on a scan that went bad later raises :class:`~anatssl.errors.DataError`
naming the file, which the engine skips with a warning. Before ``validate`` (evaluations, probes)
``load`` uses the ``.npy`` :class:`~anatssl.data.cache.VolumeCache`.
Scans smaller than a method's crop are not bad: views zero-pad them (``shapes()`` lets the engine say so
once).

The cache folder is, in order: ``cache_dir`` (argument), ``data_cfg.cache_dir``, ``<data folder>/
.anatssl_cache``, ``fallback_cache_dir`` (the engine passes ``<run>/cache``), a folder in the system temp
dir; an explicitly given folder that cannot be written is an error, the defaults fall through.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from anatssl.config.schema import DataConfig
from anatssl.data.cache import VolumeCache
from anatssl.data.io import read_landmarks
from anatssl.data.layouts import discover
from anatssl.data.manifest import DataItem
from anatssl.data.packed import PackedCache, Status, fill, other_settings, source_stats
from anatssl.data.presets import check_data_config
from anatssl.data.volume import Volume
from anatssl.errors import DataError

log = logging.getLogger("anatssl")

DEFAULT_CACHE_NAME = ".anatssl_cache"


def _data_folder(data: str | Path | Sequence[DataItem]) -> Path:
    if isinstance(data, str | Path):
        p = Path(os.path.expanduser(str(data)))
        return p if p.is_dir() else p.parent
    parents = [str(it.image.resolve().parent) for it in data]
    return Path(os.path.commonpath(parents)) if parents else Path.cwd()


def choose_cache_dir(
    data: str | Path | Sequence[DataItem],
    cache_dir: str | Path | None,
    fallback_cache_dir: str | Path | None = None,
) -> Path:
    """The first usable cache folder (see the module docstring for the order)."""
    if cache_dir is not None:
        if not VolumeCache.can_write(cache_dir):
            raise DataError(
                f"cache folder {cache_dir} cannot be created or written; set data.cache_dir to a "
                "writable folder"
            )
        return Path(cache_dir)
    default = _data_folder(data) / DEFAULT_CACHE_NAME
    candidates = [default]
    if fallback_cache_dir is not None:
        candidates.append(Path(fallback_cache_dir))
    candidates.append(
        Path(tempfile.gettempdir()) / f"anatssl_cache_{os.getuid() if hasattr(os, 'getuid') else 0}"
    )
    for c in candidates:
        if VolumeCache.can_write(c):
            if c != default:
                log.warning("data folder is not writable (%s); caching preprocessed scans in %s", default, c)
            return c
    raise DataError(f"no writable cache folder among {[str(c) for c in candidates]}; set data.cache_dir")


PEEK_HEADERS = 3
"""Single-file scans whose NIfTI header :func:`check_channel_files` reads before anything is decoded."""


def _header_channels(items: Sequence[DataItem]) -> tuple[int, Path] | None:
    """(channels, file) if the first ``PEEK_HEADERS`` single-file NIfTI scans agree on their channel
    count (a 4D file's 4th axis, else 1); None if they disagree or none could be read (each scan is
    then checked when it is read)."""
    from anatssl.data.header import read_header

    seen: list[tuple[int, Path]] = []
    for it in items:
        if it.channels:
            continue
        try:
            header = read_header(it.image)
        except DataError:
            continue
        if header is None:
            continue
        shape = header.shape
        n = 1
        for s in shape[3:]:
            n *= max(int(s), 1)
        seen.append((n, it.image))
        if len(seen) == PEEK_HEADERS:
            break
    if not seen or len({n for n, _ in seen}) != 1:
        return None
    return seen[0]


def check_channel_files(items: Sequence[DataItem], channels: int) -> None:
    """``model.in_channels`` must match the data, said before anything is decoded: multi-file cases
    (nnU-Net) need that many channel files each; single files are checked from the headers of the first
    few (4D: the 4th axis), each scan again when it is read."""
    peek = _header_channels(items)
    if peek is not None and peek[0] != channels:
        n, path = peek
        kind = f"4D with {n} channels" if n > 1 else "3D (1 channel)"
        raise DataError(
            f"the dataset's images are {kind} (e.g. {path}) but model.in_channels is {channels}; set "
            f"model.in_channels={n} (a key=value override)"
        )
    counts = sorted({len(it.channels) for it in items if it.channels})
    if counts and counts != [channels]:
        odd = next(it for it in items if it.channels and len(it.channels) != channels)
        files = ", ".join(p.name for p in odd.channels)
        raise DataError(
            f"the dataset's cases have {' or '.join(map(str, counts))} channel files each (e.g. case "
            f"{odd.name}: {files}) but model.in_channels is {channels}; "
            f"set model.in_channels={counts[-1]} (a key=value override) to train on every channel"
        )


class VolumeSource:
    """Indexable, picklable collection of preprocessed volumes (see the module docstring).

    Args:
        data: a dataset path (folder, dataset.json, CSV, volume file) or a list of ``DataItem``.
        data_cfg: intensity / spacing / crop settings (``DataConfig``).
        cache_dir: where preprocessed arrays go; None: ``data_cfg.cache_dir`` or the defaults.
        fallback_cache_dir: used when the data folder is read-only (the engine passes ``<run>/cache``).
        channels: expected image channels (``model.in_channels``); 1 for CT and single-sequence MRI.
        nan_policy: ``error`` (a NaN voxel makes the scan bad) or ``fill`` (minimum, with a warning).
    """

    def __init__(
        self,
        data: str | Path | Sequence[DataItem],
        data_cfg: DataConfig,
        cache_dir: str | Path | None = None,
        *,
        fallback_cache_dir: str | Path | None = None,
        channels: int = 1,
        nan_policy: str = "error",
    ) -> None:
        check_data_config(data_cfg)
        if nan_policy not in ("error", "fill"):
            raise ValueError(f"nan_policy must be 'error' or 'fill', got {nan_policy!r}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.data_cfg = data_cfg
        self.items: list[DataItem] = discover(data) if isinstance(data, str | Path) else list(data)
        if not self.items:
            raise DataError("the dataset is empty: no scans were given")
        check_channel_files(self.items, channels)
        root = choose_cache_dir(
            data, cache_dir if cache_dir is not None else data_cfg.cache_dir, fallback_cache_dir
        )
        self.cache = VolumeCache(root)
        self.packed = PackedCache(root, data_cfg, channels, nan_policy)
        """The compressed cache (``anatssl preprocess``) that :meth:`validate` fills and reads."""
        self._packed_meta: dict[str, dict] = {}
        self.channels = channels
        self.nan_policy = nan_policy
        self._shapes: dict[str, tuple[int, int, int]] = {}
        self.validated = False
        """Whether :meth:`validate` has run (every scan decoded once, the bad ones dropped)."""
        self.skipped: dict[str, str] = {}
        """Scans dropped by :meth:`validate` or that failed a later :meth:`load` in this process: image
        path -> reason (for the end-of-run summary; DataLoader workers keep their own copy)."""

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"VolumeSource({len(self)} scans, cache={self.cache.root})"

    def load(self, index: int) -> Volume:
        """Preprocessed volume ``index`` (memory-mapped, read-only), landmarks attached if listed.

        Raises:
            DataError: naming the file, if the scan (or its label / landmarks) cannot be used (the
                failure is recorded in :attr:`skipped`: the engine skips the scan and draws another).
        """
        try:
            return self._load(index)
        except DataError as e:
            self.skipped.setdefault(str(self.items[index].image), str(e))
            raise

    def _load(self, index: int) -> Volume:
        item = self.items[index]
        try:
            packed = self._packed_meta.get(str(item.image))
            if packed is not None:
                try:
                    vol = self.packed.open(item, self._fresh(item, packed))
                except DataError as e:
                    if "is damaged" not in str(e):
                        raise
                    st = self.packed.status(item)  # another process may have replaced it: read that
                    meta = st.meta if st.state == "ok" and st.meta is not None else {}
                    try:
                        vol = self.packed.open(item, self._fresh(item, meta))
                    except DataError:
                        vol = self.packed.open(item, self._fresh(item, {}))  # rebuild it once
            else:
                vol = self.cache.get(item, self.data_cfg, self.channels, self.nan_policy)
            if item.landmarks is not None:
                vol.landmarks = read_landmarks(item.landmarks)
        except DataError:
            raise
        except MemoryError as e:  # a scan this machine cannot hold is a bad scan, not the end of the run
            raise DataError(
                f"ran out of memory reading {item.image}; it is too large for this machine: crop or "
                "downsample it, or set data.max_voxels below its voxel count to skip such scans"
            ) from e
        except Exception as e:  # a reader failure nobody anticipated still names the file
            raise DataError(f"cannot load {item.image}: {type(e).__name__}: {e}") from e
        self._shapes[str(item.image)] = vol.spatial_shape
        vol.meta["fields"] = dict(item.fields)
        return vol

    def _fresh(self, item: DataItem, meta: dict) -> dict:
        """``meta`` if the scan's files are as it records (one ``stat`` each), else the rebuilt entry's."""
        try:
            stats = source_stats(item)
        except OSError as e:
            what = (
                "does not exist (any more)" if isinstance(e, FileNotFoundError) else f"cannot be read ({e})"
            )
            raise DataError(f"{item.image} {what}; restore it or remove it from the data") from e
        if stats == meta.get("sources"):
            return meta
        st = self.packed.build(item)
        if st.state != "ok" or st.meta is None:
            self._packed_meta.pop(str(item.image), None)
            raise DataError(st.reason)
        self._packed_meta[str(item.image)] = st.meta
        return st.meta

    def _check(self, index: int) -> str | None:
        try:
            self.load(index)
        except DataError as e:
            return str(e)
        return None

    def skipped_summary(self) -> str | None:
        """``N scans skipped: path (reason); ...`` for the end of a run, or None if none was."""
        if not self.skipped:
            return None
        rows = [f"  {path}: {reason}" for path, reason in self.skipped.items()]
        return f"{len(rows)} scan(s) skipped in this run:\n" + "\n".join(rows)

    def validate(self, progress: bool = True, workers: int = 0) -> list[tuple[DataItem, str]]:
        """Make sure every scan is in the compressed cache (:attr:`packed`); drop and return the bad ones.

        A scan with a valid entry costs one ``stat`` per file and one small JSON read, so with a cache
        made by ``anatssl preprocess`` this takes time proportional to the manifest, not to the data.
        Scans without one are decoded, preprocessed and stored: under DDP (a process group is up) every
        rank takes every W-th scan and the ranks exchange their results, so all ranks end with the same
        list; a rank that cannot use a scan says which scan on which rank, and a rank whose cache write
        fails still joins the exchange, so every rank stops with that message instead of waiting for it.
        Afterwards :meth:`load` reads the cache (chunk by chunk).

        Args:
            progress: show a progress bar (under DDP: rank 0's share).
            workers: preprocess in this many worker processes (0: in this process; under DDP each rank
                works in its own process).

        Raises:
            DataError: if no scan is left, or a cache entry could not be written (on every rank).
        """
        import torch.distributed as dist

        from anatssl.engine import distributed as D

        n = len(self.items)
        rank, world = D.rank(), D.world_size()
        mine = list(range(rank, n, world))
        try:
            if rank == 0:
                for line in other_settings(self.packed.cache_dir, self.packed.spec):
                    log.warning("preprocessed cache %s", line)
            statuses = fill(
                self.packed,
                [self.items[i] for i in mine],
                workers=workers if world == 1 else 0,
                progress=progress,
                title="preprocessing scans" + (f" (rank {rank}'s share)" if world > 1 else ""),
            )
            local = [(i, st.state, st.reason, st.meta) for i, st in zip(mine, statuses)]
            for k, (i, state, _, _) in enumerate(local):
                lm = self.items[i].landmarks
                if state == "ok" and lm is not None:
                    try:
                        read_landmarks(lm)
                    except DataError as e:
                        local[k] = (i, "bad", str(e), None)
        except Exception as e:  # still join the exchange below: the other ranks must not wait for us
            local = [(mine[0] if mine else -1, "error", f"{type(e).__name__}: {e}", None)]
        if world > 1:
            gathered: list[list] = [[] for _ in range(world)]
            dist.all_gather_object(gathered, local)
            results = [(r, *row) for r, rows in enumerate(gathered) for row in rows]
        else:
            results = [(0, *row) for row in local]
        errors = [
            f"rank {r}: {self.items[i].image if i >= 0 else '(no scan)'}: {reason}"
            for r, i, state, reason, _ in results
            if state == "error"
        ]
        if errors:
            raise DataError(
                f"preprocessing into {self.packed.root} failed on {len(errors)} scan(s):\n  "
                + "\n  ".join(errors)
            )
        reasons: list[str | None] = [None] * n
        for r, i, state, reason, meta in results:
            item = self.items[i]
            if state == "ok" and meta is not None:
                self._packed_meta[str(item.image)] = meta
                st = Status("ok", meta=meta)
                if st.shape is not None:
                    self._shapes[str(item.image)] = st.shape
            else:
                reasons[i] = f"{reason} (rank {r})" if world > 1 else reason
        bad = [(it, r) for it, r in zip(self.items, reasons) if r is not None]
        for item, reason in bad:
            if rank == 0:
                log.warning("skipping scan %s: %s", item.image, reason)
            self.skipped.setdefault(str(item.image), reason)
        if len(bad) == n:
            listing = "\n".join(f"  {it.image}: {r}" for it, r in bad[:5])
            more = f"\n  ... and {n - 5} more" if n > 5 else ""
            raise DataError(f"none of the {n} scans can be used:\n{listing}{more}")
        self.items = [it for it, r in zip(self.items, reasons) if r is None]
        if bad and rank == 0:
            log.warning("%d of %d scans dropped; training on the other %d", len(bad), n, len(self.items))
        self.validated = True
        return bad

    def shapes(self) -> list[tuple[str, tuple[int, int, int]]]:
        """(image path, preprocessed spatial shape) of every scan (decodes any not loaded yet)."""
        out = []
        for i, item in enumerate(self.items):
            key = str(item.image)
            if key not in self._shapes:
                self.load(i)
            out.append((key, self._shapes[key]))
        return out
