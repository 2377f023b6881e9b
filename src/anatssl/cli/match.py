"""``anatssl match``: where is this point of scan A in scan B? (SAM anatomical embeddings)"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from anatssl.cli.args import add_match_prior, command_parser, match_prior
from anatssl.errors import ConfigError

EPILOG = """\
examples:
  anatssl match --model runs/sam --a data/imagesTr/case_000.nii.gz --b data/imagesTr/case_001.nii.gz \\
      --point 10.5,-32,120
  anatssl match --model runs/sam --a A.nii.gz --b B.nii.gz --point 48,40,60 --voxel --png match.png

Prints the matched point of B in world mm (RAS, the NIfTI convention) and as voxel indices of B's file,
and the similarity score 1/2 (fine cos + coarse cos) in [-1, 1] (higher = more confident; the Alice pair
miner accepts matches above 0.7). Both scans are preprocessed with the SAM run's data preset and
embedded on the fly, or read from a cache made by `anatssl embed` (--embeddings).
For many points at once use the Python API: anatssl.anatomy.matching.match_points.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = command_parser(
        sub,
        "match",
        help="find the anatomical counterpart of a point of scan A in scan B (SAM)",
        description="Match one point of scan A into scan B with a trained SAM model.",
        epilog=EPILOG,
    )
    p.add_argument("--model", required=True, metavar="RUN", help="a SAM run directory or its checkpoint file")
    p.add_argument("--a", required=True, metavar="IMG", help="scan A (NIfTI file, DICOM series folder, ...)")
    p.add_argument("--b", required=True, metavar="IMG", help="scan B")
    p.add_argument(
        "--point",
        required=True,
        metavar="x,y,z",
        help="the query point in A: world mm (RAS), or voxel indices of A's file with --voxel",
    )
    p.add_argument("--voxel", action="store_true", help="--point holds voxel indices (i,j,k) of A's file")
    p.add_argument(
        "--png", metavar="FILE", help="also draw the query in A and the match in B on three orthogonal slices"
    )
    p.add_argument(
        "--embeddings",
        metavar="DIR",
        help="read both embeddings from this cache (`anatssl embed`) instead of computing them",
    )
    add_match_prior(p)
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=run)
    return p


def parse_point(text: str) -> np.ndarray:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        vals = []
    if len(vals) != 3 or not np.all(np.isfinite(vals)):
        raise ConfigError(f"--point {text!r} must be three numbers x,y,z (e.g. --point 10.5,-32,120)")
    return np.asarray(vals, dtype=np.float64)


def file_affine(path: str | Path) -> np.ndarray:
    """Voxel -> world (RAS mm) affine of a scan *as stored* (NIfTI header; else the RAS-reoriented grid)."""
    name = str(path).lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asarray(nib.load(str(path)).affine, dtype=np.float64)  # type: ignore[attr-defined]
    from anatssl.data.io import read_volume

    return np.asarray(read_volume(path).affine, dtype=np.float64)


def _apply(affine: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ affine[:3, :3].T + affine[:3, 3]


def run(args: argparse.Namespace) -> int:
    from anatssl.anatomy.cache import embed_volume, load_preprocessed
    from anatssl.anatomy.matching import fit_affine_prior, match_points
    from anatssl.runs.embedding import embedding_cache, load_sam

    point = parse_point(args.point)
    net, cfg, _ = load_sam(args.model, args.device)
    vol_a = load_preprocessed(args.a, cfg.data, cfg.model.in_channels)
    vol_b = load_preprocessed(args.b, cfg.data, cfg.model.in_channels)
    if args.voxel:
        point = _apply(file_affine(args.a), point)
    if args.embeddings:
        cache = embedding_cache(args.embeddings)
        map_a, map_b = cache.get(args.a, volume=vol_a), cache.get(args.b, volume=vol_b)
    else:
        map_a = embed_volume(net, vol_a, device=args.device)
        map_b = embed_volume(net, vol_b, device=args.device)
    prior = None
    if match_prior(args) == "affine":
        prior = fit_affine_prior(map_a, map_b, window_mm=args.window_mm)
        print(
            f"prior  affine A -> B fitted to {prior.num_points} matches, {100 * prior.inlier_fraction:.0f} % "
            f"within 10 mm of it; searching within {prior.window_mm:g} mm of its prediction"
        )
    match, score = match_points(map_a, map_b, point[None], prior=prior)
    vox_b = _apply(np.linalg.inv(file_affine(args.b)), match)[0]
    print(f"query  A: world {_fmt(point)} mm")
    print(f"match  B: world {_fmt(match[0])} mm  voxel {_fmt(vox_b, 1)}  score {score[0]:.3f}")
    if args.png:
        draw_match(vol_a, point, vol_b, match[0], float(score[0]), args.png)
        print(f"figure -> {args.png}")
    return 0


def draw_match(
    vol_a: Any, point_a: np.ndarray, vol_b: Any, point_b: np.ndarray, score: float, path: str | Path
) -> None:
    """Rows A / B, columns axial / coronal / sagittal slices through the query and the match (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from anatssl.anatomy.cache import atomic_write_bytes

    fig, axes = plt.subplots(2, 3, figsize=(10, 6.8))
    for row, (vol, pt, name) in enumerate(((vol_a, point_a, "A: query"), (vol_b, point_b, "B: match"))):
        img = np.asarray(vol.image[0], dtype=np.float32)
        v = np.clip(np.rint(vol.world_to_voxel(pt)), 0, np.asarray(img.shape) - 1).astype(int)
        sp = vol.spacing
        # (slice, horizontal axis, vertical axis) in RAS voxel axes
        views = (
            ("axial", img[:, :, v[2]], 0, 1),
            ("coronal", img[:, v[1], :], 0, 2),
            ("sagittal", img[v[0], :, :], 1, 2),
        )
        for col, (title, sl, h, w) in enumerate(views):
            ax = axes[row, col]
            ax.imshow(sl.T, cmap="gray", origin="lower", aspect=sp[w] / sp[h], vmin=0, vmax=1)
            ax.plot(v[h], v[w], "r+", markersize=14, markeredgewidth=2)
            ax.set_title(
                f"{name} {title}" + (f" (score {score:.2f})" if row == 1 and col == 0 else ""), fontsize=9
            )
            ax.axis("off")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(buf.getvalue(), Path(path))


def _fmt(v: np.ndarray, nd: int = 2) -> str:
    return "(" + ", ".join(f"{x:.{nd}f}" for x in v) + ")"
