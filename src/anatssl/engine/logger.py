"""Run logging: ``metrics.jsonl`` (one JSON object per logged step), TensorBoard, a rich progress bar."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from anatssl.engine.checkpoint import METRICS_FILE

log = logging.getLogger("anatssl")


def quiet_library_warnings() -> None:
    """Keep library notices that a user cannot act on off the console (the CLI and its workers).

    MONAI and torch emit ``DeprecationWarning`` / ``FutureWarning`` about their own APIs (MONAI's
    transforms once per call site and worker, i.e. by the hundred in a benchmark), and MONAI logs that
    the optional nvImageCodec DICOM plugin is absent. Set ``ANATSSL_SHOW_WARNINGS=1`` to see them.
    Warnings about the user's data or settings (``UserWarning`` and anatssl's own log) still show.
    """
    import os
    import warnings

    if os.environ.get("ANATSSL_SHOW_WARNINGS"):
        return
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=r".*nvImageCodec")
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)


def setup_console_logging(level: int = logging.INFO) -> None:
    """Route the ``anatssl`` logger through rich (once per process); quiet library notices."""
    quiet_library_warnings()
    if any(isinstance(h, RichHandler) for h in log.handlers):
        return
    handler = RichHandler(console=Console(stderr=True), show_path=False, show_time=False, markup=False)
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


class RunLogger:
    """Writes metrics on the main process only; no-op elsewhere."""

    def __init__(
        self,
        out_dir: Path,
        total_steps: int,
        start_step: int,
        enabled: bool = True,
        tensorboard: bool = True,
        progress: bool = True,
        description: str = "pretrain",
    ) -> None:
        self.enabled = enabled
        self.metrics_path = out_dir / METRICS_FILE
        self._file = None
        self._tb = None
        self._progress: Progress | None = None
        self._task = None
        if not enabled:
            return
        self._file = self.metrics_path.open("a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(
                    log_dir=str(out_dir), purge_step=start_step + 1 if start_step else None
                )
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                log.warning("tensorboard is not installed; only metrics.jsonl is written")
        if progress:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[speed]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task(
                description, total=total_steps, completed=start_step, loss="-", speed=""
            )

    def __enter__(self) -> RunLogger:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        assert self._file is not None
        try:
            self._file.write(json.dumps(row) + "\n")
        except OSError as e:  # a full disk: say which file (the bare error from write() names none)
            raise OSError(e.errno, e.strerror, str(self.metrics_path)) from e
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"train/{k}", v, row["step"])

    def advance(self, step_done: int, loss: float, seconds: float) -> None:
        if self._progress is not None and self._task is not None:
            speed = f"{seconds:.2f} s/step" if seconds >= 0.5 else f"{1 / max(seconds, 1e-9):.1f} step/s"
            self._progress.update(self._task, completed=step_done, loss=f"{loss:.4f}", speed=speed)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
        if self._file is not None:
            self._file.close()
            self._file = None
