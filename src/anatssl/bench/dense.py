"""Benchmark cells of the frozen-encoder dense evaluation: probe, label transfer and landmarks per arm.

One cell per (arm, seed[, pretraining checkpoint]): the encoder's multi-scale features of the labelled
and held-out volumes are computed once, then the linear probe and the label transfer are scored at
every count of ``Suite.dense`` labelled volumes, and landmarks are matched across the held-out volumes
(:func:`anatssl.downstream.dense_probe.dense_evaluation`). The arm ``scratch`` is the random-init
encoder of the same seed, i.e. the weights the pretraining of that seed started from: the control of
every comparison, and the 0 % point of the pretraining-budget curve (``Suite.budget``), whose other
points evaluate the checkpoints the pretraining kept at those fractions of its steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from anatssl.bench.suites import Suite

Cell = tuple[str, Callable[[], dict[str, Any]]]


def dense_cell(
    init: str,
    data: Path,
    out: Path,
    seed: int,
    suite: Suite,
    counts: Sequence[int] | None = None,
    data_format: str | None = None,
) -> dict[str, Any]:
    """Dense evaluation of one encoder (``scratch``, a run directory or a checkpoint file) at the
    labelled counts ``counts`` (default ``suite.dense``) on ``data`` read as the layout ``data_format``
    (None: detected)."""
    from anatssl.downstream.config import load_finetune_config
    from anatssl.downstream.dense_probe import dense_evaluation
    from anatssl.downstream.weights import resolve_init

    src = resolve_init(init)
    overrides = [
        *suite.shared,
        *suite.dense_overrides,
        f"seed={seed}",
        f"split.n_test={suite.n_test}",
        "train.progress=false",
    ]
    from_init = {"model": src.model_section, "data": src.data_section} if src.kind != "scratch" else None
    cfg = load_finetune_config(
        "segmentation-probe", suite.finetune_preset, None, overrides, from_init=from_init
    )
    m = dense_evaluation(cfg, data, src, out, counts or suite.dense, landmarks=True, data_format=data_format)
    keep = ("mean_dice", "dice", "per_case_mean_dice", "train_cases", "loss_first", "loss_final")
    rec: dict[str, Any] = {
        "init": m["init"],
        "features": m["features"],
        "test_cases": m["test_cases"],
        "seconds": m["seconds"],
    }
    for key in ("probe", "label_transfer"):
        rec[key] = {n: {k: r[k] for k in keep if k in r} for n, r in m.get(key, {}).items()}
    lm = m.get("landmarks")
    if lm is not None:
        rec["landmarks"] = {
            k: lm[k]
            for k in (
                "available",
                "reason",
                "model",
                "same_voxel",
                "random_foreground",
                "per_landmark_mre_mm",
                "vs_baselines",
            )
            if k in lm
        }
    return rec


def checkpoint_steps(suite: Suite) -> list[int]:
    """Pretraining steps whose checkpoints the budget curve evaluates (the fractions of ``Suite.budget``
    strictly between 0 and 1, of ``train.max_steps``)."""
    total = suite.pretrain_steps
    return sorted({max(1, round(f * total)) for f in suite.budget if 0.0 < f < 1.0})


def pretrain_checkpoint_overrides(suite: Suite) -> list[str]:
    """Overrides that make a pretraining keep the budget curve's checkpoints (``step_XXXXXXX.pt``)."""
    steps = checkpoint_steps(suite)
    if not steps:
        return []
    import math

    every = math.gcd(*steps, suite.pretrain_steps)
    return ["train.keep_checkpoints=true", f"train.ckpt_every={every}"]


def checkpoint_path(run_dir: Path, step: int) -> Path:
    from anatssl.runs import RunDir

    return RunDir(run_dir).checkpoint_file(step)


def dense_cells(
    suite: Suite,
    methods: Sequence[str],
    runs: dict[tuple[str, int], Path],
    data: Path,
    out: Path,
    failures: dict[str, str],
    data_format: str | None = None,
) -> list[Cell]:
    """Every dense cell of ``suite``: scratch and each method x seed, plus the budget-curve checkpoints;
    each reads ``data`` as the layout ``data_format`` (None: detected)."""
    if not suite.dense:
        return []
    cells: list[Cell] = []
    for init in ["scratch", *methods]:
        for seed in suite.seeds:
            if init != "scratch" and f"pretrain-{init}-s{seed}" in failures:
                continue
            src = "scratch" if init == "scratch" else str(runs[(init, seed)])
            cell_out = out / "dense" / f"{init}_s{seed}"
            fn = partial(dense_cell, src, data, cell_out, seed, suite, None, data_format)
            cells.append((f"dense-{init}-s{seed}", fn))
            if init == "scratch":
                continue
            for step in checkpoint_steps(suite):
                ckpt = checkpoint_path(runs[(init, seed)], step)
                cell_out = out / "dense" / f"{init}_s{seed}_step{step}"
                fn = partial(
                    dense_cell, str(ckpt), data, cell_out, seed, suite, suite.budget_dense, data_format
                )
                cells.append((f"dense-{init}-s{seed}-step{step}", fn))
    return cells
