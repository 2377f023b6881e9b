"""PNG overlays of a few axial slices: image, ground-truth contours, predicted labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_overlay(
    image: np.ndarray, target: np.ndarray, pred: np.ndarray, path: Path, title: str, n_slices: int = 3
) -> Path:
    """(X, Y, Z) arrays -> a 2 x n_slices PNG (top: truth, bottom: prediction) at foreground quartiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fg_z = np.nonzero((target > 0).any(axis=(0, 1)))[0]
    lo, hi = (int(fg_z.min()), int(fg_z.max())) if fg_z.size else (0, image.shape[2] - 1)
    zs = np.linspace(lo, hi, n_slices + 2)[1:-1].round().astype(int)
    k = int(max(target.max(), pred.max(), 1))
    fig, axes = plt.subplots(2, n_slices, figsize=(3 * n_slices, 6), squeeze=False)
    for j, z in enumerate(zs):
        for row, (lab, name) in enumerate(((target, "truth"), (pred, "prediction"))):
            ax = axes[row, j]
            ax.imshow(image[:, :, z].T, cmap="gray", origin="lower")
            masked = np.ma.masked_where(lab[:, :, z].T == 0, lab[:, :, z].T)
            ax.imshow(
                masked,
                cmap="tab20",
                vmin=0,
                vmax=max(k, 19),
                alpha=0.5,
                origin="lower",
                interpolation="nearest",
            )
            ax.set_title(f"{name} z={z}", fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
