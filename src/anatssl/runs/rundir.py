"""The one reader of a pretraining run folder: config, checkpoints, metrics, method, preprocessing.

A run folder is what ``anatssl pretrain --out RUN`` writes (see DESIGN.md, *Run directory*)::

    RUN/config.yaml            # the fully resolved config
    RUN/metrics.jsonl          # one JSON object per logged step (step = steps completed, from 1)
    RUN/checkpoints/last.pt    # + step_XXXXXXX.pt with train.keep_checkpoints

Every place that opens a run (resume, export, fine-tuning ``--init``, ``anatssl embed`` / ``match``,
correspondence, Alice's stage 0, the benchmark) goes through :class:`RunDir`; nothing below
``runs/`` reads a run folder. ``open_run(path)`` accepts the folder or one of its checkpoint files
(then that checkpoint is the one loaded, and its embedded config the one used).

Which config: a checkpoint file given directly -> the config stored in it; a folder ->
``config.yaml``, else the config stored in ``checkpoints/last.pt``. Checkpoints are read with
``torch.load(weights_only=True)`` (:func:`anatssl.engine.checkpoint.load_checkpoint`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anatssl.config.loader import read_yaml
from anatssl.config.schema import DataConfig, PretrainConfig
from anatssl.engine.checkpoint import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    METRICS_FILE,
    group_keys,
    load_checkpoint,
    step_checkpoint_name,
)
from anatssl.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    import torch

    from anatssl.methods.base import SSLMethod

CONFIG = CONFIG_FILE
METRICS = METRICS_FILE
CHECKPOINTS = CHECKPOINT_DIR
LAST = LAST_CHECKPOINT.removesuffix(".pt")


def checkpoint_name(name: str | int) -> str:
    """``"last"`` -> ``last.pt``; a step ``1200`` -> ``step_0001200.pt`` (``train.keep_checkpoints``)."""
    if isinstance(name, int):
        return step_checkpoint_name(name)
    return name if name.endswith(".pt") else f"{name}.pt"


class RunDir:
    """A pretraining run folder (or one checkpoint file inside it); see the module docstring.

    Nothing is read until asked for; ``config`` and ``raw_config`` are read once.
    """

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        self.given = p
        self._checkpoint_file: Path | None = None
        if p.is_file():
            self._checkpoint_file = p
            self.root = p.parent.parent if p.parent.name == CHECKPOINTS else p.parent
        else:
            self.root = p

    def __repr__(self) -> str:
        return f"RunDir({str(self.given)!r})"

    # -- paths ---------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.root / METRICS

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / CHECKPOINTS

    def checkpoint_file(self, name: str | int = LAST) -> Path:
        """Where checkpoint ``name`` is (or will be) written; no check that it exists."""
        if self._checkpoint_file is not None and name == LAST:
            return self._checkpoint_file
        return self.checkpoints_dir / checkpoint_name(name)

    @staticmethod
    def is_run(path: str | Path) -> bool:
        """Whether ``path`` is a run folder or a checkpoint inside one (``RUN/checkpoints/*.pt`` next to
        ``RUN/config.yaml``), as opposed to an exported weights file."""
        p = Path(path)
        if p.is_dir():
            return True
        return p.is_file() and p.parent.name == CHECKPOINTS and (p.parent.parent / CONFIG).is_file()

    def has_checkpoint(self, name: str | int = LAST) -> bool:
        if self._checkpoint_file is not None and name == LAST:
            return True
        return (self.checkpoints_dir / checkpoint_name(name)).is_file()

    def checkpoint_path(self, name: str | int = LAST) -> Path:
        """The checkpoint file ``name`` (``"last"``, a step, or a file name); CheckpointError if missing.

        A run opened through a checkpoint file answers ``"last"`` with that file.
        """
        if self._checkpoint_file is not None and name == LAST:
            return self._checkpoint_file
        path = self.checkpoints_dir / checkpoint_name(name)
        if path.is_file():
            return path
        if not self.root.exists():
            raise CheckpointError(f"{self.given} is neither a run directory nor a checkpoint file")
        rel = f"{CHECKPOINTS}/{path.name}"
        raise CheckpointError(
            f"run directory {self.root} has no {rel} ({path} is missing); has its training started? "
            "Run `anatssl pretrain --out RUN` first, or pass an exported weights file"
        )

    # -- contents ------------------------------------------------------------------------------
    def load_checkpoint(
        self, name: str | int = LAST, map_location: str | torch.device = "cpu"
    ) -> dict[str, Any]:
        """The checkpoint dict (``weights_only=True``; CheckpointError for a missing / bad file)."""
        return load_checkpoint(self.checkpoint_path(name), map_location=map_location)

    @cached_property
    def raw_config(self) -> dict[str, Any]:
        """The resolved config as a plain dict (see the module docstring for which file)."""
        if self._checkpoint_file is None and self.config_path.is_file():
            return read_yaml(self.config_path)
        ckpt = self.load_checkpoint()
        raw = ckpt.get("config")
        if isinstance(raw, dict) and raw:
            return dict(raw)
        if self.config_path.is_file():
            return read_yaml(self.config_path)
        raise CheckpointError(
            f"{self.checkpoint_path()}: no resolved config in the checkpoint nor at {self.config_path}"
        )

    @cached_property
    def config(self) -> PretrainConfig:
        """The run's :class:`PretrainConfig`, rebuilt and checked as ``anatssl pretrain`` would."""
        from anatssl.runs.resolve import build_pretrain_config

        try:
            return build_pretrain_config(dict(self.raw_config))
        except ConfigError as e:
            raise CheckpointError(
                f"{self.config_path} cannot be rebuilt into a pretraining config: {e}"
            ) from e

    @property
    def method(self) -> str:
        """The name of the method that made the run (without building its config)."""
        name = self.raw_config.get("method")
        if not isinstance(name, str):
            raise CheckpointError(f"{self.config_path}: no 'method' in the run's config")
        return name

    @property
    def data_config(self) -> DataConfig:
        """The preprocessing the run was trained with (``data:``): what its model expects as input."""
        return self.config.data

    @property
    def exists(self) -> bool:
        return self.root.is_dir()

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl`` (``[]`` if none); a line cut short by a crash is skipped."""
        if not self.metrics_path.is_file():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def loss_curve(self) -> list[list[float]]:
        """``[[step, loss], ...]`` from ``metrics.jsonl``."""
        return [[float(r["step"]), float(r["loss"])] for r in self.metrics() if "step" in r and "loss" in r]

    def resume_config(
        self, method: str, config_file: str | Path | None = None, overrides: Sequence[str] = ()
    ) -> PretrainConfig:
        """``--resume``: the saved ``config.yaml`` <- YAML <- overrides (e.g. a larger max_steps)."""
        from anatssl.runs.resolve import build_pretrain_config, resolve_raw

        if not self.config_path.is_file():
            raise CheckpointError(
                f"--resume: {self.config_path} does not exist; is {self.given} a run directory?"
            )
        raw = resolve_raw("pretrain", "", None, "", config_file, overrides, start=self.raw_config)
        if raw.get("method") != method:
            raise ConfigError(f"{self.config_path} is a {raw.get('method')!r} run, not {method!r}")
        return build_pretrain_config(raw)

    # -- networks ------------------------------------------------------------------------------
    def build_method(self, load: bool = True, name: str | int = LAST) -> SSLMethod:
        """The method rebuilt from the run's config, with checkpoint ``name``'s weights (strictly)."""
        from anatssl.methods import build_method

        method = build_method(self.config)
        if load:
            ckpt = self.load_checkpoint(name)
            state = ckpt.get("model")
            if not isinstance(state, dict):
                raise CheckpointError(
                    f"{self.checkpoint_path(name)} has no 'model' state dict (not an anatssl pretraining "
                    "checkpoint)"
                )
            result = method.load_state_dict(state, strict=False)
            if result.missing_keys or result.unexpected_keys:
                where = self.checkpoint_path(name)
                raise CheckpointError(
                    f"{where} does not match the method rebuilt from {self.config_path}: "
                    f"missing {group_keys(list(result.missing_keys))}, "
                    f"unexpected {group_keys(list(result.unexpected_keys))}"
                )
        return method

    def step(self, name: str | int = LAST) -> int:
        """Steps completed when checkpoint ``name`` was written."""
        return int(self.load_checkpoint(name).get("step", -1))


def resume_pretrain_config(
    run: str | Path, method: str, config_file: str | Path | None = None, overrides: Sequence[str] = ()
) -> PretrainConfig:
    """:meth:`RunDir.resume_config` of the run folder ``run``."""
    return RunDir(run).resume_config(method, config_file, overrides)


def open_run(path: str | Path) -> RunDir:
    """A run folder or one of its checkpoint files -> :class:`RunDir`; CheckpointError if neither."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p} is neither a run directory nor a checkpoint file")
    return RunDir(p)
