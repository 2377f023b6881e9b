"""Benchmark results: per-cell records -> mean +- std over seeds -> ``results.json`` and ``results.md``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anatssl.bench.stats import fmt_delta, paired_delta, verdict
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
            ft_seeds = suite.finetune_seeds or suite.seeds
            seg[init][str(n)] = {
                "mean_dice": mean_std([r.get("mean_dice") for r in recs]),
                "mean_hd95_mm": mean_std([r.get("mean_hd95_mm") for r in recs]),
                "dice_per_structure": {
                    k: mean_std([(r.get("dice") or {}).get(k) for r in recs])["mean"]
                    for k in structures
                    if k != "mean"
                },
            }
            if init != "scratch":
                seg[init][str(n)]["delta_vs_scratch"] = paired(
                    cells,
                    [f"finetune-{init}-n{n}-s{s}" for s in ft_seeds],
                    [f"finetune-scratch-n{n}-s{s}" for s in ft_seeds],
                    lambda r: r.get("per_case_mean_dice"),
                )
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
        "dense": summarise_dense(suite, inits, cells),
        "budget_curve": budget_curve(suite, methods, cells),
        "method_differences": method_differences(suite, methods, cells),
        "correspondence": corr,
        "correspondence_baselines": {k: {"mean_error_mm": mean_std(v)} for k, v in baselines.items()},
        "pretrain": pre,
        "cost": cost,
    }


def paired(
    cells: dict[str, dict[str, Any]],
    arm: Sequence[str],
    control: Sequence[str],
    units: Any,
) -> dict[str, Any]:
    """Paired difference (arm - control) over the seeds (one cell name each, same order) and the units
    ``units(record) -> {unit: value}`` (test volumes, landmarks) of both, with its bootstrap interval."""
    pairs = [(cells.get(a), cells.get(c)) for a, c in zip(arm, control)]
    ua = [units(a) or {} for a, c in pairs if a and c]
    uc = [units(c) or {} for a, c in pairs if a and c]
    keys = sorted({k for u in ua + uc for k in u})
    if not keys:
        return paired_delta(np.full((1, 1), np.nan), np.full((1, 1), np.nan))

    def mat(us: list[dict[str, Any]]) -> np.ndarray:
        return np.array(
            [[np.nan if u.get(k) is None else float(u[k]) for k in keys] for u in us], dtype=float
        )

    return paired_delta(mat(ua), mat(uc))


DENSE_KEYS = ("probe", "label_transfer")


def _dense_entry(
    cells: dict[str, dict[str, Any]], init: str, names: Sequence[str], control: Sequence[str] | None
) -> dict[str, Any]:
    """Dense records of ``init`` (one cell name per seed) -> probe / transfer per N and landmarks, with
    paired deltas against the ``control`` cells (same seeds) when given."""
    out: dict[str, Any] = {}
    recs = [cells.get(n) for n in names]
    for key in DENSE_KEYS:
        per_n: dict[str, Any] = {}
        counts = sorted({int(n) for r in recs if r for n in (r.get(key) or {})})
        for n in counts:
            rs = [r[key][str(n)] for r in recs if r and str(n) in (r.get(key) or {})]
            structures = list(rs[0].get("dice") or {})
            entry = {
                "mean_dice": mean_std([x.get("mean_dice") for x in rs]),
                "dice_per_structure": {
                    k: mean_std([(x.get("dice") or {}).get(k) for x in rs])["mean"] for k in structures
                },
            }
            if control is not None:
                entry["delta_vs_scratch"] = paired(
                    cells,
                    list(names),
                    list(control),
                    lambda r, key=key, n=n: ((r.get(key) or {}).get(str(n)) or {}).get("per_case_mean_dice"),
                )
            per_n[str(n)] = entry
        if per_n:
            out[key] = per_n
    lms = [r["landmarks"] for r in recs if r and (r.get("landmarks") or {}).get("available")]
    if lms:
        # the mean over landmarks of each landmark's mean error: the quantity whose paired difference
        # (per landmark) the interval is about; ``mre_all_matches_mm`` weighs landmarks by their matches
        out["landmark_error_mm"] = mean_std(
            [
                float(np.mean(list(lm["per_landmark_mre_mm"].values())))
                for lm in lms
                if lm["per_landmark_mre_mm"]
            ]
        )
        out["landmark_mre_all_matches_mm"] = mean_std([lm["model"]["mre_mm"] for lm in lms])
        out["landmark_baselines_mm"] = {
            b: mean_std([lm[b]["mre_mm"] for lm in lms if b in lm])
            for b in ("same_voxel", "random_foreground")
        }
        if control is not None:
            out["landmark_error_mm"]["delta_vs_scratch"] = paired(
                cells,
                list(names),
                list(control),
                lambda r: (r.get("landmarks") or {}).get("per_landmark_mre_mm"),
            )
    return out


def summarise_dense(suite: Suite, inits: Sequence[str], cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per arm: probe and label transfer (mean Dice per labelled count), landmark error, each with
    ``delta_vs_scratch`` (paired over seeds x test volumes / landmarks; bench/stats.py)."""
    out: dict[str, Any] = {}
    control = [f"dense-scratch-s{s}" for s in suite.seeds]
    for init in inits:
        names = [f"dense-{init}-s{s}" for s in suite.seeds]
        entry = _dense_entry(cells, init, names, None if init == "scratch" else control)
        if entry:
            out[init] = entry
    return out


def method_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """(a, b) for every two methods, a the later one in the suite's order (the suites list the
    baselines swinssl, simmim first and the anatomy-aware S2DC, Alice last: ``s2dc - swinssl``)."""
    return [(a, b) for i, a in enumerate(methods) for b in methods[:i]]


def method_differences(
    suite: Suite, methods: Sequence[str], cells: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``{"a - b": {metric: paired delta}}`` for every two pretrained methods: the same paired
    bootstrap as ``delta_vs_scratch`` (seeds x held-out volumes; landmarks: seeds x landmarks), with
    method b in the control's place, so a ranking says where its order is outside the noise.
    Metrics are named as in :func:`delta_rows` (``probe Dice @1``, ``landmark error mm``, ...)."""
    out: dict[str, dict[str, Any]] = {}
    ft_seeds = suite.finetune_seeds or suite.seeds
    for a, b in method_pairs(methods):
        rows: dict[str, Any] = {}
        da = [f"dense-{a}-s{s}" for s in suite.seeds]
        db = [f"dense-{b}-s{s}" for s in suite.seeds]
        for key, label in (("probe", "probe"), ("label_transfer", "transfer")):
            for n in suite.dense or ():
                d = paired(
                    cells,
                    da,
                    db,
                    lambda r, key=key, n=n: ((r.get(key) or {}).get(str(n)) or {}).get("per_case_mean_dice"),
                )
                if d["n"]:
                    rows[f"{label} Dice @{n}"] = d
        d = paired(cells, da, db, lambda r: (r.get("landmarks") or {}).get("per_landmark_mre_mm"))
        if d["n"]:
            rows["landmark error mm"] = d
        for n in suite.labeled:
            d = paired(
                cells,
                [f"finetune-{a}-n{n}-s{s}" for s in ft_seeds],
                [f"finetune-{b}-n{n}-s{s}" for s in ft_seeds],
                lambda r: r.get("per_case_mean_dice"),
            )
            if d["n"]:
                rows[f"fine-tuned Dice @{n}"] = d
        if rows:
            out[f"{a} - {b}"] = rows
    return out


def budget_curve(suite: Suite, methods: Sequence[str], cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per method: the dense evaluation at 0 % (random init), the kept checkpoints and 100 % of its steps."""
    from anatssl.bench.dense import checkpoint_steps

    if not suite.dense or not suite.budget:
        return {}
    total = suite.pretrain_steps
    control = [f"dense-scratch-s{s}" for s in suite.seeds]
    out: dict[str, Any] = {}
    for method in methods:
        rows = []
        for step in [0, *checkpoint_steps(suite), total]:
            if step == 0:
                names = control
            elif step == total:
                names = [f"dense-{method}-s{s}" for s in suite.seeds]
            else:
                names = [f"dense-{method}-s{s}-step{step}" for s in suite.seeds]
            entry = _dense_entry(cells, method, names, None if step == 0 else control)
            if entry:
                rows.append({"step": step, "fraction": step / total, **entry})
        if rows:
            out[method] = rows
    return out


def fmt(ms: dict[str, Any] | None, digits: int = 3) -> str:
    if not ms or not math.isfinite(ms.get("mean", math.nan)):
        return "-"
    if ms["n"] > 1 and math.isfinite(ms["std"]):
        return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"
    return f"{ms['mean']:.{digits}f}"


def markdown_table(results: dict[str, Any]) -> str:
    """Methods x metrics: Dice at each label count, HD95 at the largest, correspondence error."""
    labeled = [str(n) for n in results["spec"]["labeled"]]
    if not labeled:
        return ""
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


def dense_table(results: dict[str, Any]) -> str:
    """Arms x (probe @N, label transfer @N, landmark error): mean ± std over seeds."""
    dense = results.get("dense") or {}
    if not dense:
        return ""
    counts = [str(n) for n in results["spec"]["dense"]]
    head = ["init"] + [f"probe @{n}" for n in counts] + [f"transfer @{n}" for n in counts]
    with_lm = any("landmark_error_mm" in e for e in dense.values())
    if with_lm:
        head.append("landmark error mm (mean over landmarks)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for init in results["inits"]:
        e = dense.get(init, {})
        label = "random init (control)" if init == "scratch" else init
        row = [label] + [
            fmt((e.get(k) or {}).get(n, {}).get("mean_dice")) for k in DENSE_KEYS for n in counts
        ]
        if with_lm:
            row.append(fmt(e.get("landmark_error_mm"), 1))
        lines.append("| " + " | ".join(row) + " |")
    base = (dense.get("scratch") or {}).get("landmark_baselines_mm") or {}
    names = {
        "same_voxel": "same voxel index (no learning; all matches)",
        "random_foreground": "random body voxel (chance; all matches)",
    }
    for b, ms in base.items() if with_lm else ():
        lines.append("| " + " | ".join([names[b]] + ["-"] * (len(head) - 2) + [fmt(ms, 1)]) + " |")
    return "\n".join(lines)


def delta_rows(results: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], bool]]:
    """(arm, metric, delta, higher is better) for every comparison with the random-init control."""
    out = []
    spec = results["spec"]
    for init in results["inits"]:
        if init == "scratch":
            continue
        e = (results.get("dense") or {}).get(init, {})
        for key, label in (("probe", "probe"), ("label_transfer", "transfer")):
            for n in spec.get("dense") or ():
                d = (e.get(key) or {}).get(str(n), {}).get("delta_vs_scratch")
                if d:
                    out.append((init, f"{label} Dice @{n}", d, True))
        d = (e.get("landmark_error_mm") or {}).get("delta_vs_scratch")
        if d:
            out.append((init, "landmark error mm", d, False))
        for n in spec["labeled"]:
            d = (results["segmentation"].get(init) or {}).get(str(n), {}).get("delta_vs_scratch")
            if d:
                out.append((init, f"fine-tuned Dice @{n}", d, True))
    return out


def delta_table(results: dict[str, Any]) -> str:
    rows = delta_rows(results)
    if not rows:
        return ""
    metrics = list(dict.fromkeys(m for _, m, _, _ in rows))
    arms = list(dict.fromkeys(a for a, _, _, _ in rows))
    cell = {(a, m): (d, hib) for a, m, d, hib in rows}
    lines = ["| metric | " + " | ".join(arms) + " |", "|" + "---|" * (len(arms) + 1)]
    for m in metrics:
        row = [m]
        for a in arms:
            if (a, m) not in cell:
                row.append("-")
                continue
            d, hib = cell[(a, m)]
            v = verdict(d, hib)
            txt = fmt_delta(d, 1 if "mm" in m else 3)
            row.append(f"**{txt} {v}**" if v in ("helps", "hurts") else txt)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def method_table(results: dict[str, Any]) -> str:
    """Rows: metrics; columns: method pairs ``a - b``; bold with the better method's name where the
    interval of the paired difference excludes 0."""
    diffs = results.get("method_differences") or {}
    if not diffs:
        return ""
    pairs = list(diffs)
    metrics = list(dict.fromkeys(m for p in pairs for m in diffs[p]))
    lines = ["| metric | " + " | ".join(pairs) + " |", "|" + "---|" * (len(pairs) + 1)]
    for m in metrics:
        row = [m]
        for p in pairs:
            d = diffs[p].get(m)
            txt = fmt_delta(d, 1 if "mm" in m else 3)
            v = verdict(d, "mm" not in m)
            a, b = p.split(" - ")
            row.append(f"**{txt} {a if v == 'helps' else b}**" if v in ("helps", "hurts") else txt)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def budget_table(results: dict[str, Any]) -> str:
    curve = results.get("budget_curve") or {}
    if not curve:
        return ""
    n = str(min(results["spec"]["dense"]))
    head = ["method", "pretraining step", f"probe @{n}", f"transfer @{n}", "landmark error mm"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, rows in curve.items():
        for r in rows:
            lines.append(
                "| "
                + " | ".join(
                    [
                        method,
                        f"{r['step']} ({100 * r['fraction']:.0f} %)",
                        fmt((r.get("probe") or {}).get(n, {}).get("mean_dice")),
                        fmt((r.get("label_transfer") or {}).get(n, {}).get("mean_dice")),
                        fmt(r.get("landmark_error_mm"), 1),
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def loss_table(results: dict[str, Any]) -> str:
    """Method x seed: pretraining loss at the start and at the end (has the objective left its start?)."""
    lines = []
    for method, seeds in (results.get("pretrain") or {}).items():
        for seed, rec in seeds.items():
            curve = np.asarray(rec.get("loss_curve") or [], dtype=float)
            if curve.size == 0:
                continue
            k = max(1, len(curve) // 10)
            first, last = float(curve[:k, 1].mean()), float(curve[-k:, 1].mean())
            ratio = last / first if first else math.nan
            lines.append(
                f"| {method} | {seed} | {int(curve[-1, 0])} | {first:.4g} | {last:.4g} | {ratio:.2f} |"
            )
    if not lines:
        return ""
    return "\n".join(
        [
            "| method | seed | steps | loss, first 10 % | loss, last 10 % | last / first |",
            "|---|---|---|---|---|---|",
            *lines,
        ]
    )


def reading(results: dict[str, Any]) -> str:
    """One sentence per verdict: which arms help where (interval excludes 0), and the rest."""
    rows = delta_rows(results)
    if not rows:
        return ""
    clear = [(a, m, d, hib) for a, m, d, hib in rows if verdict(d, hib) in ("helps", "hurts")]
    if not clear:
        return "No difference from the random-init control is clear: every 95 % interval contains 0."
    parts = [f"{a} {verdict(d, hib)} {m} ({fmt_delta(d, 1 if 'mm' in m else 3)})" for a, m, d, hib in clear]
    return (
        "Differences whose 95 % interval excludes 0: "
        + "; ".join(parts)
        + f". The other {len(rows) - len(clear)} comparisons are not clear (interval contains 0)."
    )


def structure_table(results: dict[str, Any]) -> str:
    if not results["spec"]["labeled"]:
        return ""
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
    ]
    if results.get("dense"):
        text += [
            "Frozen-encoder dense evaluation (downstream/dense_probe.py; the encoder is not fine-tuned): "
            "mean Dice over the held-out volumes of a linear probe on the multi-scale encoder features and "
            "of "
            "training-free label transfer (nearest labelled voxel in feature space) with N labelled volumes, "
            "and the landmark error with the same features. The random-init control is the encoder each "
            "pretraining started from.",
            "",
            dense_table(results),
            "",
        ]
    deltas = delta_table(results)
    if deltas:
        text += [
            "Difference from the random-init control (arm minus control, paired over seeds x held-out "
            "volumes; landmarks: over seeds x landmarks) with its 95 % bootstrap interval; **helps** / "
            "**hurts** only "
            "where the interval excludes 0 (bench/stats.py):",
            "",
            deltas,
            "",
            reading(results),
            "",
        ]
    between = method_table(results)
    if between:
        text += [
            "Method against method (column a - b, paired over the same seeds x held-out volumes; "
            "landmarks: x landmarks) with its 95 % bootstrap interval; bold, with the better method's "
            "name, only where the interval excludes 0. Fine-tuning rows pair the fine-tuning seeds only.",
            "",
            between,
            "",
        ]
    if results.get("budget_curve"):
        text += [
            "Pretraining-budget curve (step 0 = the random-init control; plots/budget_curve.png):",
            "",
            budget_table(results),
            "",
        ]
    losses = loss_table(results)
    if losses:
        text += [
            "Pretraining objectives (each method its own loss; plots/pretrain_loss.png): the mean of the "
            "first and of the last 10 % of the logged steps, per seed.",
            "",
            losses,
            "",
        ]
    if spec["labeled"]:
        text += [
            f"Per-structure Dice with {spec['labeled'][-1]} labelled volumes (mean over seeds):",
            "",
            structure_table(results),
            "",
        ]
    text += [
        f"Cost: {cost.get('cpu_seconds', 0) / 60:.1f} CPU-minutes in total "
        f"({cost.get('pretrain_cpu_seconds', 0) / 60:.1f} pretraining, "
        f"{cost.get('finetune_cpu_seconds', 0) / 60:.1f} fine-tuning, "
        f"{cost.get('dense_cpu_seconds', 0) / 60:.1f} dense evaluation, "
        f"{cost.get('correspondence_cpu_seconds', 0) / 60:.1f} decoder-feature correspondence), "
        f"{cost.get('wall_seconds', 0) / 60:.1f} wall-minutes summed over cells, on "
        f"{m.get('processor', '?')} ({m.get('cpu_count', '?')} logical CPUs, torch {m.get('torch', '?')}, "
        f"{_threads(results)}).",
    ]
    if results.get("failures"):
        text += ["", "Failed cells:", ""] + [f"- `{k}`: {v}" for k, v in results["failures"].items()]
    path.write_text("\n".join(text) + "\n")
