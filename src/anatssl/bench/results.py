"""Benchmark results: per-cell records -> mean +- std over seeds -> ``results.json`` and ``results.md``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anatssl.bench.suites import Suite


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """Finite values -> {"mean", "std" (sample, ddof=1; NaN for one value), "n", "values"}."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return {
        "mean": float(np.mean(v)) if v else math.nan,
        "std": float(np.std(v, ddof=1)) if len(v) > 1 else math.nan,
        "n": len(v),
        "values": v,
    }


def summarise(suite: Suite, methods: Sequence[str], cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    inits = ["scratch", *methods]
    seg: dict[str, Any] = {}
    corr: dict[str, Any] = {}
    pre: dict[str, Any] = {}
    baselines: dict[str, list[float]] = {}
    for init in inits:
        seg[init] = {}
        for n in suite.labeled:
            recs = [cells[k] for k in (f"finetune-{init}-n{n}-s{s}" for s in suite.seeds) if cells.get(k)]
            if not recs:
                continue
            structures = list((recs[0].get("dice") or {}).keys())
            seg[init][str(n)] = {
                "mean_dice": mean_std([r.get("mean_dice") for r in recs]),
                "mean_hd95_mm": mean_std([r.get("mean_hd95_mm") for r in recs]),
                "dice_per_structure": {
                    k: mean_std([(r.get("dice") or {}).get(k) for r in recs])["mean"]
                    for k in structures
                    if k != "mean"
                },
            }
        keys = (f"correspondence-{init}-s{s}" for s in suite.seeds)
        recs = [cells[k] for k in keys if k in cells and cells[k].get("available")]
        if recs:
            corr[init] = {
                "mean_error_mm": mean_std([r["model"]["mre_mm"] for r in recs]),
                "median_error_mm": mean_std([r["model"]["median_mm"] for r in recs]),
            }
            for base in ("same_voxel", "random_foreground"):
                baselines.setdefault(base, []).extend(r[base]["mre_mm"] for r in recs if base in r)
        if init != "scratch":
            pre[init] = {
                str(s): {
                    k: cells[f"pretrain-{init}-s{s}"].get(k)
                    for k in ("loss_curve", "wall_seconds", "cpu_seconds", "steps")
                }
                for s in suite.seeds
                if f"pretrain-{init}-s{s}" in cells
            }
    cost: dict[str, float] = {}
    for name, rec in cells.items():
        stage = name.split("-", 1)[0]
        cost[f"{stage}_wall_seconds"] = cost.get(f"{stage}_wall_seconds", 0.0) + float(
            rec.get("wall_seconds", 0)
        )
        cost[f"{stage}_cpu_seconds"] = cost.get(f"{stage}_cpu_seconds", 0.0) + float(
            rec.get("cpu_seconds", 0)
        )
    cost["wall_seconds"] = sum(v for k, v in cost.items() if k.endswith("_wall_seconds"))
    cost["cpu_seconds"] = sum(v for k, v in cost.items() if k.endswith("_cpu_seconds"))
    return {
        "suite": suite.name,
        "description": suite.description,
        "spec": dataclasses.asdict(suite),
        "inits": inits,
        "segmentation": seg,
        "correspondence": corr,
        "correspondence_baselines": {k: {"mean_error_mm": mean_std(v)} for k, v in baselines.items()},
        "pretrain": pre,
        "cost": cost,
    }


def fmt(ms: dict[str, Any] | None, digits: int = 3) -> str:
    if not ms or not math.isfinite(ms.get("mean", math.nan)):
        return "-"
    if ms["n"] > 1 and math.isfinite(ms["std"]):
        return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"
    return f"{ms['mean']:.{digits}f}"


def markdown_table(results: dict[str, Any]) -> str:
    """Methods x metrics: Dice at each label count, HD95 at the largest, correspondence error."""
    labeled = [str(n) for n in results["spec"]["labeled"]]
    top = labeled[-1]
    head = ["init"] + [f"Dice @{n}" for n in labeled] + [f"HD95 mm @{top}"]
    with_corr = bool(results["correspondence"])
    if with_corr:
        head.append("landmark error mm")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for init in results["inits"]:
        seg = results["segmentation"].get(init, {})
        row = [init] + [fmt(seg.get(n, {}).get("mean_dice")) for n in labeled]
        row.append(fmt(seg.get(top, {}).get("mean_hd95_mm"), 1))
        if with_corr:
            row.append(fmt(results["correspondence"].get(init, {}).get("mean_error_mm"), 1))
        lines.append("| " + " | ".join(row) + " |")
    labels = {
        "same_voxel": "same voxel index (no learning)",
        "random_foreground": "random body voxel (chance)",
    }
    for base, rec in (results.get("correspondence_baselines") or {}).items() if with_corr else ():
        row = [labels.get(base, base)] + ["-"] * (len(head) - 2) + [fmt(rec.get("mean_error_mm"), 1)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def structure_table(results: dict[str, Any]) -> str:
    top = str(results["spec"]["labeled"][-1])
    names: list[str] = []
    for init in results["inits"]:
        for k in results["segmentation"].get(init, {}).get(top, {}).get("dice_per_structure", {}):
            if k not in names:
                names.append(k)
    if not names:
        return ""
    lines = ["| init | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for init in results["inits"]:
        d = results["segmentation"].get(init, {}).get(top, {}).get("dice_per_structure", {})
        lines.append(
            f"| {init} | "
            + " | ".join(
                f"{d[k]:.3f}" if isinstance(d.get(k), float) and math.isfinite(d[k]) else "-" for k in names
            )
            + " |"
        )
    return "\n".join(lines)


def _threads(results: dict[str, Any]) -> str:
    """How the cells of the last invocation ran (``run_suite(jobs=...)``: cpu_count // jobs threads)."""
    m, inv = results.get("machine", {}), results.get("this_invocation", {})
    jobs = int(inv.get("jobs", 1))
    if jobs <= 1:
        return f"{m.get('torch_threads', '?')} threads"
    threads = max(1, int(m.get("cpu_count") or 1) // jobs)
    return (
        f"{jobs} cells at a time with {threads} torch thread{'s' if threads > 1 else ''} each: "
        f"{inv.get('wall_seconds', 0) / 60:.1f} wall-minutes for the invocation"
    )


def write_markdown(results: dict[str, Any], path: Path) -> None:
    spec = results["spec"]
    cost = results["cost"]
    m = results.get("machine", {})
    text = [
        f"# Benchmark `{results['suite']}`",
        "",
        results["description"],
        "",
        f"Seeds {list(spec['seeds'])}; mean ± sample std over seeds. Dice and HD95 (mm) are means over the "
        f"foreground structures of {spec['n_test']} fixed held-out volumes (sliding-window inference on "
        "whole volumes); the landmark error is the mean radial error (mm, lower is better) of "
        "matching held-out landmarks between subjects with each run's stride-2 decoder features (scratch "
        "has no run to match with; two learning-free baselines are listed instead).",
        "",
        markdown_table(results),
        "",
        f"Per-structure Dice with {spec['labeled'][-1]} labelled volumes (mean over seeds):",
        "",
        structure_table(results),
        "",
        f"Cost: {cost.get('cpu_seconds', 0) / 60:.1f} CPU-minutes in total "
        f"({cost.get('pretrain_cpu_seconds', 0) / 60:.1f} pretraining, "
        f"{cost.get('finetune_cpu_seconds', 0) / 60:.1f} fine-tuning), "
        f"{cost.get('wall_seconds', 0) / 60:.1f} wall-minutes summed over cells, on "
        f"{m.get('processor', '?')} ({m.get('cpu_count', '?')} logical CPUs, torch {m.get('torch', '?')}, "
        f"{_threads(results)}).",
    ]
    if results.get("failures"):
        text += ["", "Failed cells:", ""] + [f"- `{k}`: {v}" for k, v in results["failures"].items()]
    path.write_text("\n".join(text) + "\n")
