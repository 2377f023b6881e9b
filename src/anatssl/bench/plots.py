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
