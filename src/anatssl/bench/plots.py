"""Benchmark plots: Dice vs labelled volumes, pretraining loss curves, correspondence error."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def write_plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """-> the PNGs written under ``out_dir/plots``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = out_dir / "plots"
    d.mkdir(parents=True, exist_ok=True)
    written = []

    if any(results["segmentation"].values()):  # fine-tuning cells (the quickstart has none)
        fig, ax = plt.subplots(figsize=(5, 4))
        for init in results["inits"]:
            seg = results["segmentation"].get(init, {})
            ns = sorted(int(n) for n in seg)
            if not ns:
                continue
            mean = [seg[str(n)]["mean_dice"]["mean"] for n in ns]
            std = [seg[str(n)]["mean_dice"]["std"] for n in ns]
            std = [s if math.isfinite(s) else 0.0 for s in std]
            ax.errorbar(
                ns,
                mean,
                yerr=std,
                marker="o",
                capsize=3,
                label=init,
                linestyle="--" if init == "scratch" else "-",
            )
        ax.set_xlabel("labelled training volumes")
        ax.set_ylabel("mean Dice (held-out)")
        ax.set_title(f"{results['suite']}: Dice vs labels")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(d / "dice_vs_labeled.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    for k, (method, seeds) in enumerate(results["pretrain"].items()):
        for j, rec in enumerate(seeds.values()):
            curve = np.asarray(rec.get("loss_curve") or [], dtype=float)
            if curve.size:
                ax.plot(curve[:, 0], curve[:, 1], color=f"C{k}", alpha=0.8, label=method if j == 0 else None)
    ax.set_xlabel("pretraining step")
    ax.set_ylabel("loss (each method its own objective)")
    ax.set_title("pretraining loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(d / "pretrain_loss.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    dense = results.get("dense") or {}
    if dense:
        fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
        for ax, key, title in zip(axes, ("probe", "label_transfer"), ("linear probe", "label transfer")):
            for init in results["inits"]:
                per_n = (dense.get(init) or {}).get(key) or {}
                ns = sorted(int(n) for n in per_n)
                if not ns:
                    continue
                mean = [per_n[str(n)]["mean_dice"]["mean"] for n in ns]
                std = [per_n[str(n)]["mean_dice"]["std"] for n in ns]
                ax.errorbar(
                    ns,
                    mean,
                    yerr=[x if math.isfinite(x) else 0.0 for x in std],
                    marker="o",
                    capsize=3,
                    label="random init" if init == "scratch" else init,
                    linestyle="--" if init == "scratch" else "-",
                )
            ax.set_xlabel("labelled volumes")
            ax.set_title(f"frozen encoder: {title}")
        axes[0].set_ylabel("mean Dice (held-out)")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        written.append(d / "dense_vs_labeled.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)

    budget = results.get("budget_curve") or {}
    if budget:
        n = str(min(results["spec"]["dense"]))
        fig, axes = plt.subplots(1, 2, figsize=(9, 4))
        for k, (method, rows) in enumerate(budget.items()):
            steps = [r["step"] for r in rows]
            probe = [
                ((r.get("probe") or {}).get(n) or {}).get("mean_dice", {}).get("mean", math.nan) for r in rows
            ]
            lm = [(r.get("landmark_error_mm") or {}).get("mean", math.nan) for r in rows]
            axes[0].plot(steps, probe, marker="o", color=f"C{k}", label=method)
            axes[1].plot(steps, lm, marker="o", color=f"C{k}", label=method)
        base = ((dense.get("scratch") or {}).get("landmark_baselines_mm") or {}).get("same_voxel")
        if base and math.isfinite(base.get("mean", math.nan)):
            axes[1].axhline(base["mean"], color="grey", linestyle=":", label="same voxel (no learning)")
        axes[0].set_xlabel("pretraining step (0 = random init)")
        axes[0].set_ylabel(f"probe mean Dice @{n} labelled")
        axes[1].set_xlabel("pretraining step (0 = random init)")
        axes[1].set_ylabel("landmark error mm (lower is better)")
        axes[0].legend(fontsize=8)
        axes[1].legend(fontsize=8)
        fig.suptitle("pretraining budget")
        fig.tight_layout()
        written.append(d / "budget_curve.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)

    if results["correspondence"]:
        fig, ax = plt.subplots(figsize=(5, 4))
        rows = {**results["correspondence"], **results.get("correspondence_baselines", {})}
        names = list(rows)
        means = [rows[n]["mean_error_mm"]["mean"] for n in names]
        stds = [rows[n]["mean_error_mm"]["std"] for n in names]
        ax.bar(
            names,
            means,
            yerr=[s if math.isfinite(s) else 0.0 for s in stds],
            capsize=3,
            color=[f"C{i}" for i in range(len(names))],
        )
        ax.set_ylabel("landmark matching error (mm)")
        ax.set_title("correspondence (lower is better)")
        fig.tight_layout()
        written.append(d / "correspondence.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written
