"""View inspectors: draw what a method feeds its networks so a user can see the views are right.

One function per method, registered by name (``@register_inspector("s2dc")``); ``anatssl views``
calls it on a few scans. Each inspector takes the built method, one volume, an rng and the dataset,
and writes one PNG.

* ``s2dc``: the src slab and its warped copy ``aug_full`` side by side (one z-slice through a token
  layer), with every matched token pair drawn as two dots of one colour joined by a line, and
  unmatched token centres as grey crosses. A wrong correspondence shows up as lines whose ends sit on
  different anatomy.
* ``alice``: the anatomical crop pair (q from the scan, k from its partner), central slices along each
  axis, with the mined pair point (each crop's centre) marked and the pairing score in the title.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from anatssl.data.volume import Volume
from anatssl.registry import Registry
from anatssl.views.base import VolumeProvider

if TYPE_CHECKING:
    from anatssl.methods.base import SSLMethod

Inspector = Callable[["SSLMethod", Volume, np.random.Generator, VolumeProvider, Path], Path]
INSPECTORS: Registry[Inspector] = Registry("view inspector")


def register_inspector(name: str) -> Callable[[Inspector], Inspector]:
    return INSPECTORS.register(name)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@register_inspector("s2dc")
def inspect_s2dc(
    method: SSLMethod, volume: Volume, rng: np.random.Generator, source: VolumeProvider, out_png: Path
) -> Path:
    """src | aug_full with matched token centres as pairs (one token layer, the middle one)."""
    from matplotlib.patches import ConnectionPatch

    from anatssl.views.s2dc import S2DCViews, token_centres

    views: S2DCViews = method.views  # type: ignore[assignment]
    sample = views.sample(volume, rng)
    tx, ty, tz = views.token_grid
    s = views.stride
    layer = tz // 2
    zslice = int(token_centres(tz, s)[layer])
    match = sample.match[layer]
    plt = _pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 6.4))
    for ax, img, title in ((ax0, sample.slab, "src"), (ax1, sample.aug_slab, "aug_full")):
        ax.imshow(img[0, :, :, zslice].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        for k in range(1, views.grid):  # crop boundaries
            ax.axhline(k * views.crop - 0.5, color="yellow", lw=0.6, alpha=0.6)
            ax.axvline(k * views.crop - 0.5, color="yellow", lw=0.6, alpha=0.6)
        ax.set_title(f"{title} (z = {zslice}, token layer {layer})")
        ax.set_xlabel("y (voxel)")
        ax.set_ylabel("x (voxel)")
    cx, cy = token_centres(tx, s), token_centres(ty, s)
    colours = plt.get_cmap("hsv")(np.linspace(0, 1, tx * ty, endpoint=False))
    used = set()
    label = int((match >= 0).sum()) <= 64  # number the pairs when there are few enough to read
    for i in range(tx * ty):
        xi, yi = divmod(i, ty)
        j = int(match[i])
        if j < 0:
            ax0.plot(cy[yi], cx[xi], "x", color="0.6", ms=4)
            continue
        used.add(j)
        xj, yj = divmod(j, ty)
        col = colours[(7 * i) % len(colours)]
        ax0.plot(cy[yi], cx[xi], "o", color=col, ms=4)
        ax1.plot(cy[yj], cx[xj], "o", color=col, ms=4)
        if label:
            for ax, pt in ((ax0, (cy[yi], cx[xi])), (ax1, (cy[yj], cx[xj]))):
                ax.annotate(str(i), pt, color=col, fontsize=7, xytext=(3, 3), textcoords="offset points")
        fig.add_artist(
            ConnectionPatch(
                xyA=(cy[yi], cx[xi]),
                xyB=(cy[yj], cx[xj]),
                coordsA="data",
                coordsB="data",
                axesA=ax0,
                axesB=ax1,
                color=col,
                lw=0.4,
                alpha=0.35,
            )
        )
    for j in set(range(tx * ty)) - used:
        xj, yj = divmod(j, ty)
        ax1.plot(cy[yj], cx[xj], "x", color="0.6", ms=4)
    m = sample.matrix
    angle = np.degrees(np.arctan2(m[1, 0], m[0, 0]))
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    fig.suptitle(
        f"{Path(volume.path).name}: slab origin {tuple(int(v) for v in sample.origin)}, "
        f"rotation {angle:+.1f} deg, scale {scale:.3f}; "
        f"{int((match >= 0).sum())}/{tx * ty} tokens matched (stride {s})"
    )
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


@register_inspector("alice")
def inspect_alice(
    method: SSLMethod, volume: Volume, rng: np.random.Generator, source: VolumeProvider, out_png: Path
) -> Path:
    """q (from this scan) | k (from its partner): central slices with the pair point at each centre."""
    out = method.views(volume, rng, source)
    q, k = np.asarray(out["q"])[0], np.asarray(out["k"])[0]
    c = q.shape[0] // 2
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(10, 7))
    for row, (crop, name) in enumerate(((q, "q"), (k, "k"))):
        for col, (sl, lab) in enumerate(((crop[c], "x"), (crop[:, c], "y"), (crop[:, :, c], "z"))):
            ax = axes[row, col]
            ax.imshow(sl, cmap="gray", vmin=0.0, vmax=1.0)
            ax.plot(c, c, "+", color="red", ms=14, mew=2)
            ax.set_title(f"{name}: slice {lab} = centre")
            ax.axis("off")
    score = float(np.asarray(out.get("pair_score", np.nan)))
    fig.suptitle(
        f"{Path(volume.path).name}: p_a {np.asarray(out.get('p_a')).tolist()} <-> "
        f"p_b {np.asarray(out.get('p_b')).tolist()}, score {score:.3f}"
    )
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
