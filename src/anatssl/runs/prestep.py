"""What a method's pre-step is given (:class:`PretrainContext`) and how it is declared (:class:`PreStep`).

The table of pre-steps per method is :data:`anatssl.runs.pretraining.PRE_STEPS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anatssl.config.schema import PretrainConfig
from anatssl.data.manifest import DataItem
from anatssl.data.source import VolumeSource, choose_cache_dir
from anatssl.engine import distributed as D


def training_source(
    cfg: PretrainConfig,
    data: str | Path | Sequence[DataItem],
    run_dir: str | Path,
    items: Sequence[DataItem] | None = None,
) -> VolumeSource:
    """The source pretraining cuts its views from: the scans of ``data`` (or its already discovered
    ``items``) preprocessed as ``cfg.data`` says, with ``model.in_channels`` channels, cached where
    ``anatssl pretrain --out run_dir`` caches them (``data.cache_dir``, the data folder, else
    ``run_dir/cache``). Not validated yet."""
    cache = choose_cache_dir(data, cfg.data.cache_dir, Path(run_dir) / "cache")
    scans = list(items) if items is not None else data
    return VolumeSource(scans, cfg.data, cache_dir=cache, channels=cfg.model.in_channels)


@dataclass
class PretrainContext:
    """What a pre-step sees: the config (mutable until training starts), the data, the run folder."""

    cfg: PretrainConfig
    data: str | Path | Sequence[DataItem]
    """The dataset as given (a folder, dataset.json, CSV or volume path, or a list of items)."""
    out_dir: Path
    items: list[DataItem]
    """The dataset's scans, discovered once."""
    resume: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    """Method-specific command-line options (``embeddings``, ``sam_run`` for Alice)."""
    _source: VolumeSource | None = None

    def make_source(self, cfg: PretrainConfig, run_dir: str | Path) -> VolumeSource:
        """A source over :attr:`items` preprocessed as ``cfg.data`` says, cached where ``anatssl
        pretrain --out run_dir`` would cache it (the data folder, else ``run_dir/cache``)."""
        return training_source(cfg, self.data, run_dir, self.items)

    @property
    def source(self) -> VolumeSource:
        """The run's training source (built on first use)."""
        if self._source is None:
            self._source = self.make_source(self.cfg, self.out_dir)
        return self._source

    def validated_source(self) -> VolumeSource:
        """:attr:`source` with every scan decoded once and the bad ones dropped (done once)."""
        src = self.source
        if not src.validated:
            src.validate(progress=self.cfg.train.progress and D.is_main())
        return src


PreStepFn = Callable[[PretrainContext], None]


@dataclass(frozen=True)
class PreStep:
    """One step a method needs before its training starts."""

    name: str
    run: PreStepFn
    options: tuple[str, ...] = ()
    """The ``run_pretraining`` keyword options this step reads (others given are an error)."""
