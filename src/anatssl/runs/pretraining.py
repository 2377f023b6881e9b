"""``run_pretraining``: what ``anatssl pretrain`` and the benchmark run, in one place.

1. the scans are discovered once and one :class:`~anatssl.data.source.VolumeSource` is built for the
   run's preprocessing (validated once, by whichever of a pre-step or the trainer needs it first);
2. the method's declared pre-steps run (:data:`PRE_STEPS`, a table: method name -> steps), e.g.
   Alice's stage 0 (train SAM, embed the scans, check the data; :mod:`anatssl.runs.alice_stage0`);
3. the engine's trainer runs (or resumes) the pretraining on that source.

The run folder is locked (``RUN/run.lock``, :mod:`anatssl.engine.runlock`) from before the first
pre-step to the end: a second process on the same ``--out`` is refused, naming the owner.

Adding a pre-step for a method: write ``def my_step(ctx: PretrainContext) -> None`` (it may change
``ctx.cfg`` before training starts, e.g. set the method's embeddings folder, and reads its
command-line options from ``ctx.options``), then add ``PreStep("name", my_step, options=(...))`` to
``PRE_STEPS["my_method"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anatssl.config.schema import PretrainConfig
from anatssl.data.layouts import discover
from anatssl.data.manifest import DataItem
from anatssl.engine.logger import setup_console_logging
from anatssl.engine.runlock import run_lock
from anatssl.errors import ConfigError
from anatssl.runs.alice_stage0 import alice_stage0
from anatssl.runs.prestep import PreStep, PretrainContext

log = logging.getLogger("anatssl")


PRE_STEPS: dict[str, tuple[PreStep, ...]] = {
    "alice": (
        PreStep("alice stage 0: SAM, embeddings, data check", alice_stage0, ("embeddings", "sam_run")),
    ),
}
"""Method name -> the steps :func:`run_pretraining` runs before training, in order."""

OPTION_FLAGS = {"embeddings": "--embeddings", "sam_run": "--sam"}


def run_pretraining(
    cfg: PretrainConfig,
    data: str | Path | Sequence[DataItem],
    out_dir: str | Path,
    resume: bool = False,
    data_format: str | None = None,
    **options: Any,
) -> Path:
    """Run (or resume) a pretraining: the method's pre-steps, then the trainer; returns the run folder.

    ``data_format``: the layout of ``data`` (:data:`anatssl.data.layouts.KNOWN_FORMATS`; None: detected).

    ``options``: method-specific inputs of the pre-steps (``embeddings=DIR``, ``sam_run=RUN`` for
    Alice); ``None`` values are ignored, one that no pre-step of ``cfg.method`` reads is a ConfigError.
    """
    from anatssl.engine.trainer import pretrain

    setup_console_logging()
    steps = PRE_STEPS.get(cfg.method, ())
    given = {k: v for k, v in options.items() if v is not None}
    known = {o for s in steps for o in s.options}
    unknown = [k for k in given if k not in known]
    if unknown:
        flags = " / ".join(OPTION_FLAGS.get(k, k) for k in unknown)
        users = sorted(m for m, ss in PRE_STEPS.items() if any(k in s.options for s in ss for k in unknown))
        where = f"--method {' / '.join(users)}" if users else "no method"
        raise ConfigError(f"{flags} only apply to {where}")
    out = Path(out_dir)
    with run_lock(out):
        items = discover(data, data_format) if isinstance(data, (str, Path)) else list(data)
        ctx = PretrainContext(cfg, data, out, items, resume, given)
        for step in steps:
            log.debug("pre-step %s", step.name)
            step.run(ctx)
        run = pretrain(ctx.cfg, ctx.source, out, resume=resume)
        summary = ctx.source.skipped_summary()  # the end-of-run list of scans the run went on without
        if summary:
            log.warning(summary)
        return run
