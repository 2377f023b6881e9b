"""One entry point for every fine-tuning task: ``run_finetune(cfg, data, init, out) -> metrics``.

``out`` is locked for the run (``out/run.lock``, :mod:`anatssl.engine.runlock`): a second fine-tuning
(or pretraining) into the same folder is refused, naming the process that owns it. Under torchrun only
segmentation fine-tuning runs (DDP); the other tasks are single-process and refuse to start there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from anatssl.downstream.config import FinetuneConfig
from anatssl.downstream.weights import InitSource, resolve_init
from anatssl.engine.distributed import launched_by_torchrun
from anatssl.engine.runlock import run_lock
from anatssl.errors import ConfigError


def run_finetune(
    cfg: FinetuneConfig,
    data: str | Path,
    init: InitSource | str,
    out_dir: str | Path,
    data_format: str | None = None,
) -> dict[str, Any]:
    """Dispatch on ``cfg.task`` (segmentation | classification | probe | segmentation-probe |
    label-transfer); writes ``out_dir/metrics.json``. ``data_format``: the dataset layout of every task
    (:data:`anatssl.data.layouts.KNOWN_FORMATS`; None: detected)."""
    if cfg.task != "segmentation" and launched_by_torchrun():
        raise ConfigError(
            f"--task {cfg.task} runs in one process, but this is one of {os.environ['WORLD_SIZE']} torchrun "
            "processes (each would run the whole task into the same --out); start it without torchrun. "
            "Only --task segmentation fine-tunes under DDP (docs/scaling.md)"
        )
    init = resolve_init(init) if isinstance(init, str) else init
    with run_lock(out_dir):
        return _dispatch(cfg, data, init, out_dir, data_format)


def _dispatch(
    cfg: FinetuneConfig, data: str | Path, init: InitSource, out_dir: str | Path, data_format: str | None
) -> dict[str, Any]:
    if cfg.task == "segmentation":
        from anatssl.downstream.segmentation import finetune_segmentation

        return finetune_segmentation(cfg, data, init, out_dir, data_format)
    if cfg.task == "classification":
        from anatssl.downstream.classification import finetune_classification

        return finetune_classification(cfg, data, init, out_dir, data_format)
    if cfg.task in ("segmentation-probe", "label-transfer"):
        from anatssl.downstream.dense_probe import run_dense_task

        return run_dense_task(cfg, data, init, out_dir, data_format)
    from anatssl.downstream.probe import run_probe

    return run_probe(cfg, data, init, out_dir, data_format)
