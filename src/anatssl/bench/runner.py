"""Run a benchmark suite as resumable cells: data -> pretrain x seeds -> fine-tune x labels x seeds.

Every cell writes ``DIR/cells/<cell>.json`` when it finishes (atomically); a rerun with the same
``DIR`` skips finished cells, resumes an interrupted pretraining from its ``checkpoints/last.pt`` and
restarts an interrupted fine-tuning (they are short). Cells record wall and CPU seconds
(``time.process_time``: all threads of this process), so ``results.json`` can state what the suite
cost even when it ran in several sittings.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from anatssl.bench.dense import dense_cells, pretrain_checkpoint_overrides
from anatssl.bench.suites import Suite
from anatssl.engine.signals import RunInterrupted
from anatssl.errors import AnatsslError

log = logging.getLogger("anatssl")


class CellStore:
    """``DIR/cells/<name>.json``: one finished unit of work each."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir / "cells"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def get(self, name: str) -> dict[str, Any] | None:
        p = self.path(name)
        return json.loads(p.read_text()) if p.is_file() else None

    def put(self, name: str, record: dict[str, Any]) -> None:
        tmp = self.path(name).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2, default=_jsonable))
        tmp.replace(self.path(name))

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Return the stored record of ``name`` or compute it with ``fn`` (timed) and store it."""
        done = self.get(name)
        if done is not None:
            log.info("cell %s: done earlier, skipped", name)
            return done
        log.info("cell %s: running", name)
        t0, c0 = time.perf_counter(), time.process_time()
        record = fn()
        record = {
            "cell": name,
            **record,
            "wall_seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0,
        }
        self.put(name, record)
        return record


def _jsonable(x: Any) -> Any:
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def make_synthetic_data(out: Path, n: int, seed: int, size: int, lesions: float | None = None) -> Path:
    """``anatssl synth`` into ``out`` (dataset.json, imagesTr, labelsTr, landmarks)."""
    if (out / "dataset.json").is_file():
        return out
    from anatssl.data.synthetic.writer import write_dataset

    write_dataset(out, n=n, seed=seed, size=size, lesions=lesions)
    return out


def pretrain_run(
    method: str,
    data: Path,
    out: Path,
    overrides: Sequence[str],
    preset: str = "tiny",
    data_format: str | None = None,
) -> dict[str, Any]:
    """Pretrain ``method`` into ``out`` (resuming a partial run) as ``anatssl pretrain`` would;
    ``data_format``: the layout of ``data`` (``--format``; None: detected)."""
    from anatssl.runs import RunDir, load_pretrain_config
    from anatssl.runs.pretraining import run_pretraining

    cfg = load_pretrain_config(method, preset, None, list(overrides))
    run = RunDir(out)
    run_pretraining(cfg, str(data), out, resume=run.has_checkpoint(), data_format=data_format)
    return {"run": str(out), "method": method, "steps": cfg.train.max_steps, "loss_curve": run.loss_curve()}


def finetune_cell(
    init: str,
    data: Path,
    out: Path,
    seed: int,
    labeled: int,
    suite: Suite,
    data_format: str | None = None,
) -> dict[str, Any]:
    from anatssl.downstream.config import load_finetune_config
    from anatssl.downstream.runner import run_finetune
    from anatssl.downstream.weights import resolve_init

    src = resolve_init(init)
    overrides = [
        *suite.shared,
        *suite.finetune,
        f"seed={seed}",
        f"split.labeled={labeled}",
        f"split.n_test={suite.n_test}",
        "train.progress=false",
    ]
    from_init = {"model": src.model_section, "data": src.data_section} if src.kind != "scratch" else None
    cfg = load_finetune_config("segmentation", suite.finetune_preset, None, overrides, from_init=from_init)
    m = run_finetune(cfg, data, src, out, data_format=data_format)
    keep = ("labeled", "mean_dice", "mean_hd95_mm", "dice", "hd95_mm", "final_loss", "train_seconds", "init")
    rec = {k: m[k] for k in keep if k in m}
    rec["per_case_mean_dice"] = per_case_mean_dice(m.get("per_case") or {})  # for the paired statistics
    return rec


def per_case_mean_dice(per_case: dict[str, Any]) -> dict[str, float | None]:
    """{case: {"dice": {structure: v}}} -> {case: mean over its scored structures}."""
    import math

    out: dict[str, float | None] = {}
    for case, rec in per_case.items():
        v = [float(x) for x in (rec.get("dice") or {}).values() if x is not None and math.isfinite(float(x))]
        out[case] = sum(v) / len(v) if v else None
    return out


def correspondence_cell(
    run: str, data: Path, suite: Suite, out: Path, data_format: str | None = None, prior: str | None = None
) -> dict[str, Any]:
    """Landmark matching with a pretraining run's dense features on the held-out volumes of ``data``
    (the layout ``data_format``; None: detected).

    Uses the SAM engineer's evaluation (:mod:`anatssl.anatomy.correspondence`): every landmark of each
    held-out subject is matched into every other one with the backbone's stride-2 decoder features; the
    result also carries the two learning-free baselines (same voxel index, random foreground voxel).
    ``prior="affine"``: matching with the affine consistency prior (window 20 mm,
    :func:`anatssl.anatomy.matching.fit_affine_prior`).
    """
    from anatssl.anatomy.correspondence import evaluate_correspondence
    from anatssl.data.layouts import discover
    from anatssl.data.source import VolumeSource
    from anatssl.downstream.config import SplitConfig
    from anatssl.downstream.labelled import read_labelled_dataset, split_cases
    from anatssl.runs.embedding import model_embedder

    cases, _ = read_labelled_dataset(data, fmt=data_format)
    _, test = split_cases(cases, SplitConfig(n_test=suite.n_test))
    test_images = {c.image.resolve() for c in test}
    items = [
        it
        for it in discover(data, data_format)
        if it.image.resolve() in test_images and it.landmarks is not None
    ]
    if len(items) < 2:
        return {"available": False, "reason": "fewer than two held-out volumes carry landmarks"}
    embed, cfg = model_embedder(run, "decoder")
    source = VolumeSource(items, cfg.data, fallback_cache_dir=out / "cache")
    vols = [source.load(i) for i in range(len(source))]
    metrics = evaluate_correspondence(vols, embed, max_subjects=suite.correspondence_subjects, prior=prior)
    return {"available": True, **metrics}


def _run_cell(store_dir: Path, name: str, fn: Callable[[], dict[str, Any]]) -> str | None:
    """Run one cell (in this process or a pool worker); -> None, or the error of a failed cell."""
    try:
        CellStore(store_dir).run(name, fn)
        return None
    except RunInterrupted:
        # a stop request (Ctrl-C, SIGTERM, SIGUSR1) for the benchmark, not a failed cell: the cell saved
        # its checkpoint; end the whole benchmark (rerunning the command resumes it) instead of going on
        # to the next cell
        raise
    except AnatsslError as e:  # one cell failing must not end a long benchmark silently
        log.error("cell %s failed: %s", name, e)
        return str(e)


def _worker_init(threads: int) -> None:
    from anatssl.engine.logger import setup_console_logging

    torch.set_num_threads(threads)
    setup_console_logging()


Cell = tuple[str, Callable[[], dict[str, Any]]]


def _run_cells(store_dir: Path, cells: Sequence[Cell], jobs: int) -> dict[str, str]:
    """Run ``cells`` (independent of each other) one after another, or ``jobs`` at a time in worker
    processes with ``cpu_count // jobs`` torch threads each; -> {cell: error} of the failed ones."""
    store = CellStore(store_dir)
    todo: list[Cell] = []
    for name, fn in cells:
        if store.path(name).is_file():
            log.info("cell %s: done earlier, skipped", name)
        else:
            todo.append((name, fn))
    if jobs <= 1 or len(todo) <= 1:
        errors = {n: _run_cell(store_dir, n, fn) for n, fn in todo}
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // jobs)
        ctx = mp.get_context("spawn")  # fork would copy torch's thread pools and OpenMP state
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(threads,)) as ex:
            futures = {n: ex.submit(_run_cell, store_dir, n, fn) for n, fn in todo}
            try:
                errors = {n: f.result() for n, f in futures.items()}
            except RunInterrupted:
                ex.shutdown(wait=True, cancel_futures=True)  # the running cells save and stop; no new one
                raise
    return {n: e for n, e in errors.items() if e is not None}


def run_suite(
    suite: Suite,
    out_dir: str | Path,
    methods: Sequence[str] | None = None,
    data: str | Path | None = None,
    jobs: int = 1,
    data_format: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) every cell of ``suite`` under ``out_dir``; write results.json / results.md / plots.

    ``methods`` restricts the suite's methods; ``data`` replaces its synthetic dataset with a labelled
    dataset (the results then describe that data, not the suite's), which every cell reads as the
    layout ``data_format`` (``--format``; None: detected; recorded in the ``data`` cell). ``jobs`` > 1
    runs that many cells at once in worker processes (all pretrainings first, then all fine-tunings and
    correspondence evaluations), each with ``cpu_count // jobs`` torch threads: on a CPU, two 1-thread
    cells finish sooner than one 2-thread cell after the other. Results do not depend on ``jobs``.
    """
    from anatssl.bench.plots import write_plots
    from anatssl.bench.results import summarise, write_markdown

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = CellStore(out)
    t0, c0 = time.perf_counter(), time.process_time()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    methods = tuple(methods or suite.methods)
    if data is None:
        data = out / "data"
        store.run("data", lambda: {"path": str(make_synthetic_data(out / "data", **suite.data))})
    else:
        data = Path(data)
        store.run("data", lambda: {"path": str(data), "user_data": True, "format": data_format})
    pretrain_cells: list[Cell] = []
    runs: dict[tuple[str, int], Path] = {}
    for method in methods:
        for seed in suite.seeds:
            run_dir = out / "pretrain" / f"{method}_s{seed}"
            overrides = [
                *suite.shared,
                *suite.pretrain,
                *suite.method_overrides.get(method, ()),
                *pretrain_checkpoint_overrides(suite),
                f"seed={seed}",
                "train.progress=false",
                "train.tensorboard=false",
            ]
            pretrain_cells.append(
                (
                    f"pretrain-{method}-s{seed}",
                    partial(pretrain_run, method, data, run_dir, overrides, suite.preset, data_format),
                )
            )
            runs[(method, seed)] = run_dir
    failures = _run_cells(out, pretrain_cells, jobs)
    downstream_cells: list[Cell] = []
    for init in ["scratch", *methods]:
        for seed in suite.seeds:
            if init != "scratch" and f"pretrain-{init}-s{seed}" in failures:
                continue
            src = "scratch" if init == "scratch" else str(runs[(init, seed)])
            for n in suite.labeled if seed in (suite.finetune_seeds or suite.seeds) else ():
                cell_out = out / "finetune" / f"{init}_n{n}_s{seed}"
                fn = partial(finetune_cell, src, data, cell_out, seed, n, suite, data_format)
                downstream_cells.append((f"finetune-{init}-n{n}-s{seed}", fn))
            if suite.correspondence and init != "scratch":
                cache = out / "correspondence" / f"{init}_s{seed}"
                fn = partial(correspondence_cell, src, data, suite, cache, data_format)
                downstream_cells.append((f"correspondence-{init}-s{seed}", fn))
    downstream_cells += dense_cells(suite, methods, runs, data, out, failures, data_format)
    failures.update(_run_cells(out, downstream_cells, jobs))
    cells = {p.stem: json.loads(p.read_text()) for p in sorted(store.dir.glob("*.json"))}
    results = summarise(suite, methods, cells)
    results["failures"] = failures
    results["machine"] = machine_info()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    results["this_invocation"] = {
        "wall_seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time()
        - c0
        + (children.ru_utime + children.ru_stime)
        - (children0.ru_utime + children0.ru_stime),
        "jobs": jobs,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_jsonable))
    write_markdown(results, out / "results.md")
    write_plots(results, out)
    return results
