"""The dataset a method's views draw from: ``VolumeSource(data, data_cfg).load(i) -> Volume``.

``data`` is anything :func:`~anatssl.data.manifest.discover` accepts (a folder, a ``dataset.json``, a
CSV, a volume file) or a list of :class:`~anatssl.data.manifest.DataItem`. Volumes come preprocessed
(:mod:`anatssl.data.presets`: for CT the HU window scaled to [0, 1]) and memory-mapped from the
:class:`~anatssl.data.cache.VolumeCache`, with their landmarks when the manifest lists them.

Bad scans: :meth:`VolumeSource.validate` decodes every scan once before training (which also fills the
cache), logs a warning naming each bad file and why, and drops it; ``load(i)`` on a scan that went bad
later raises :class:`~anatssl.errors.DataError` naming the file, which the engine skips with a warning.
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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from anatssl.config.schema import DataConfig
from anatssl.data.cache import VolumeCache
from anatssl.data.io import read_landmarks
from anatssl.data.manifest import DataItem, discover
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
        root = choose_cache_dir(
            data, cache_dir if cache_dir is not None else data_cfg.cache_dir, fallback_cache_dir
        )
        self.cache = VolumeCache(root)
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
        """Decode every scan once (filling the cache); drop and return the bad ones with their reasons.

        Args:
            progress: show a rich progress bar.
            workers: decode in this many threads (0: in this thread). Decoding (zlib, numpy, torch)
                releases the GIL, so threads help; each holds one raw scan in memory.

        Raises:
            DataError: if no scan is left.
        """
        n = len(self.items)
        reasons: list[str | None] = [None] * n
        with _progress(progress, n) as advance:
            if workers > 0:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for i, reason in enumerate(pool.map(self._check, range(n))):
                        reasons[i] = reason
                        advance()
            else:
                for i in range(n):
                    reasons[i] = self._check(i)
                    advance()
        bad = [(it, r) for it, r in zip(self.items, reasons) if r is not None]
        for item, reason in bad:
            log.warning("skipping scan %s: %s", item.image, reason)
            self.skipped.setdefault(str(item.image), reason)
        if len(bad) == n:
            listing = "\n".join(f"  {it.image}: {r}" for it, r in bad[:5])
            more = f"\n  ... and {n - 5} more" if n > 5 else ""
            raise DataError(f"none of the {n} scans can be used:\n{listing}{more}")
        self.items = [it for it, r in zip(self.items, reasons) if r is None]
        if bad:
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


@contextmanager
def _progress(show: bool, total: int) -> Iterator[Callable[[], None]]:
    """``with _progress(show, total) as advance:`` a rich progress bar, or a no-op when ``show`` is False."""
    if not show:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("checking scans"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    ) as bar:
        task = bar.add_task("check", total=total)
        yield lambda: bar.advance(task)
