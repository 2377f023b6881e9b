"""Cross-patient anatomical pair mining for Alice (Jiang et al., ICCV 2023, sec. 3.1).

Given volume A, its partner B and their SAM embedding maps (fine + coarse, unit-norm; Yan et al.,
IEEE TMI 2022), draw a query voxel p in A's foreground (snapped to the centre of its fine cell, whose
embedding is the query) and find the voxel p' of B that shows the same
anatomy: ``p' = argmax_q  1/2 (<f_A(p), f_B(q)> + <c_A(p), c_B(q)>)`` over B's fine grid, the coarse
cosine map being upsampled (trilinearly, through world coordinates) to the fine grid. A match is
accepted when its score exceeds ``threshold`` (0.7, the public code's value); otherwise another p is
drawn, up to ``max_tries`` (100), and the best try is kept.

Geometry is exact: a voxel index of A goes to world mm through ``Volume.affine`` and to a fractional
embedding-grid index through ``EmbeddingMap.world_to_grid``; the matched fine-grid index of B comes
back the same way (:func:`grid_to_voxel`) and is refined to B's voxel grid by interpolating the
similarity within one fine cell (:func:`refine_to_voxel`: the voxel the public code's full-resolution
upsampling would pick). Spacing, stride, origin and orientation are all in the affines, so scans of
any spacing and orientation pair up correctly.

Speed: the public code scores one query at a time against similarity maps upsampled to the full
volume. Here the query candidates are all drawn up front (so the result does not depend on how they
are batched) and scored in chunks of 1, 2, 4, ... ``chunk`` queries with one matrix product on B's fine
grid, the coarse map being interpolated by a precomputed sparse trilinear matrix
(``benchmarks/bench_pair_mining.py`` measures both ways).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from anatssl.anatomy.embedding import EmbeddingMap
from anatssl.data.volume import Volume
from anatssl.errors import DataError

PAIRING_MODES = ("sam", "random", "same")


@dataclass
class MinedPair:
    """One anatomical pair: voxel ``voxel_a`` of A shows the same anatomy as voxel ``voxel_b`` of B."""

    voxel_a: np.ndarray
    """(3,) int64 voxel index in A."""
    voxel_b: np.ndarray
    """(3,) int64 voxel index in B."""
    score: float
    """Similarity of the kept match (nan for ``random`` / ``same`` pairing)."""
    tries: int
    """Queries scored before acceptance (``max_tries`` when none was accepted)."""
    accepted: bool


def voxel_to_grid(volume: Volume, grid_affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """(..., 3) voxel indices of ``volume`` -> (..., 3) fractional indices of an embedding grid."""
    return EmbeddingMap.world_to_grid(grid_affine, volume.voxel_to_world(ijk))


def grid_to_voxel(volume: Volume, grid_affine: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(..., 3) embedding-grid indices -> (..., 3) fractional voxel indices of ``volume``."""
    return volume.world_to_voxel(EmbeddingMap.grid_to_world(grid_affine, idx))


def _trilinear_table(frac: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) fractional indices into a grid of ``shape`` -> (N, 8) flat corner indices and weights.

    Coordinates outside the grid are clamped to its border (edge replication).
    """
    hi = np.asarray(shape, dtype=np.float64) - 1
    f = np.clip(frac, 0.0, hi)
    i0 = np.floor(f).astype(np.int64)
    i0 = np.minimum(i0, np.maximum(hi.astype(np.int64) - 1, 0))
    t = f - i0
    idx = np.empty((f.shape[0], 8), dtype=np.int64)
    w = np.empty((f.shape[0], 8), dtype=np.float32)
    n = 0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                c = np.minimum(i0 + np.array([dx, dy, dz]), hi.astype(np.int64))
                idx[:, n] = np.ravel_multi_index((c[:, 0], c[:, 1], c[:, 2]), shape)
                w[:, n] = (
                    (t[:, 0] if dx else 1 - t[:, 0])
                    * (t[:, 1] if dy else 1 - t[:, 1])
                    * (t[:, 2] if dz else 1 - t[:, 2])
                )
                n += 1
    return idx, w


def sample_embedding(grid: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """(D, X, Y, Z) unit-norm map sampled trilinearly at (K, 3) fractional indices -> (K, D), renormalised."""
    d = grid.shape[0]
    idx, w = _trilinear_table(np.atleast_2d(frac), grid.shape[1:])
    flat = grid.reshape(d, -1)
    out = np.einsum("dkc,kc->kd", flat[:, idx].astype(np.float32), w)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)


def embedded_box(emb: EmbeddingMap) -> tuple[np.ndarray, np.ndarray]:
    """World (mm) bounding box of the volume an embedding was computed on: ((3,) min, (3,) max)."""
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.float64)
    if "volume_affine" in emb.meta and "volume_shape" in emb.meta:
        aff = np.asarray(emb.meta["volume_affine"], dtype=np.float64)
        shape = np.asarray(emb.meta["volume_shape"], dtype=np.float64)
        pts = corners * (shape - 1) @ aff[:3, :3].T + aff[:3, 3]
    else:
        pts = EmbeddingMap.grid_to_world(emb.fine_affine, corners * (np.asarray(emb.fine_shape) - 1))
    return pts.min(0), pts.max(0)


def check_coverage(volume: Volume, emb: EmbeddingMap, points: np.ndarray | None = None) -> None:
    """Raise a DataError unless ``emb`` covers the part of ``volume`` Alice looks up in it (world boxes,
    one fine cell plus one voxel of slack).

    Alice maps every point through world coordinates, so an embedding computed on another
    preprocessing of the *same* scan (SAM's own spacing, its own foreground crop) is fine as long as it
    covers the part of the scan Alice looks embeddings up for; a point outside it would silently be
    clamped to the embedding's border. That part is ``points``: the (M, 3) voxels Alice draws its
    queries from (:meth:`PairMiner.foreground`: the body, ``border_margin`` voxels inside the border);
    the partner's match is found on its fine grid, so always inside, and the crops come from the scan
    itself, not from the embedding. The whole scan's box is the wrong test: SAM's preset crops the scan
    to the body plus a margin of its own (``data.presets.foreground_box``, at its own 10 mm spacing), so
    the air around the body is legitimately not embedded (measured on ``anatssl synth --size 64``, 6 mm:
    whole scan up to 28 mm short of the embedding, the query region 68 mm or more inside it). With
    ``points=None`` the whole scan must be covered. (Whether the entry belongs to this scan at all is the
    cache's check: the entry is stamped with a hash of the scan file.)
    """
    if points is None:
        corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.float64)
        vw = volume.voxel_to_world(corners * (np.asarray(volume.spatial_shape) - 1))
        what = "the scan"
    else:
        vw = volume.voxel_to_world(np.asarray(points, dtype=np.float64).reshape(-1, 3))
        what = "the scan's query region (its foreground, where Alice draws query points)"
    vmin, vmax = vw.min(0), vw.max(0)
    emin, emax = embedded_box(emb)
    tol = np.linalg.norm(emb.fine_affine[:3, :3], axis=0).max() + max(volume.spacing) + 1e-3
    out = max((emin - vmin).max(), (vmax - emax).max())
    if out > tol:
        raise DataError(
            f"the SAM embedding of {volume.path} does not cover {what}: it spans "
            f"{np.round(vmin, 1).tolist()}..{np.round(vmax, 1).tolist()} mm, the embedding "
            f"{np.round(emin, 1).tolist()}..{np.round(emax, 1).tolist()} mm ({out:.1f} mm short > "
            f"{tol:.1f} mm). It was computed on another geometry (another scan, crop or preprocessing); "
            "recompute the cache with `anatssl embed`."
        )


class _FineIndex:
    """B's embeddings laid out for scoring many queries at once (float32 fine rows + coarse upsampling)."""

    def __init__(self, emb: EmbeddingMap) -> None:
        d = emb.fine.shape[0]
        self.fine_shape = emb.fine_shape
        self.fine = np.ascontiguousarray(emb.fine.reshape(d, -1).T, dtype=np.float32)  # (Nf, D)
        dc = emb.coarse.shape[0]
        self.coarse = np.ascontiguousarray(emb.coarse.reshape(dc, -1).T, dtype=np.float32)  # (Nc, D)
        mask = getattr(emb, "fine_mask", None)
        self.outside = None if mask is None or not np.any(mask) else ~np.asarray(mask, dtype=bool).reshape(-1)
        axes = [np.arange(s) for s in self.fine_shape]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        world = EmbeddingMap.grid_to_world(emb.fine_affine, grid)
        frac = EmbeddingMap.world_to_grid(emb.coarse_affine, world)
        up_idx, up_w = _trilinear_table(frac, emb.coarse.shape[1:])  # (Nf, 8)
        nf = len(up_idx)
        # sparse (Nf, Nc) trilinear upsampling matrix: 8 weights per fine-grid row
        self.upsample = sparse.csr_matrix(
            (up_w.ravel(), up_idx.ravel(), np.arange(0, 8 * nf + 1, 8)), shape=(nf, self.coarse.shape[0])
        )

    def similarity(self, fq: np.ndarray, cq: np.ndarray) -> np.ndarray:
        """(K, D) fine and coarse query vectors -> (Nf, K) ½(fine cos + upsampled coarse cos), fine grid."""
        sim = self.fine @ fq.T  # (Nf, K)
        sim += self.upsample @ (self.coarse @ cq.T)  # (Nf, Nc) @ (Nc, K)
        sim *= 0.5
        sim = np.asarray(sim)
        if self.outside is not None:
            sim[self.outside] = -2.0  # never match into air (SAM's ``fine_mask``)
        return sim

    def scores(self, fq: np.ndarray, cq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, D) query vectors -> best fine-grid flat index (K,) and its score (K,)."""
        sim = self.similarity(fq, cq)
        best = sim.argmax(axis=0)
        return best, sim[best, np.arange(sim.shape[1])]


def snap_to_cells(volume: Volume, emb: EmbeddingMap, ijk: np.ndarray) -> np.ndarray:
    """(K, 3) voxels -> (K, 3) voxels nearest to the centres of the fine cells that hold them.

    SAM's queries are the embeddings of whole fine cells (see :func:`query_vectors`), so the query point
    is moved to its cell's centre: the match then corresponds to the point itself, not to a point up
    to half a cell away.
    """
    g = np.rint(voxel_to_grid(volume, emb.fine_affine, ijk))
    g = np.clip(g, 0, np.asarray(emb.fine_shape) - 1)
    v = np.rint(grid_to_voxel(volume, emb.fine_affine, g)).astype(np.int64)
    return np.clip(v, 0, np.asarray(volume.spatial_shape) - 1)


def query_vectors(volume: Volume, emb: EmbeddingMap, ijk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 3) voxels of ``volume`` -> fine (K, D) and coarse (K, D) float32 query embeddings.

    The embeddings of the cells nearest to the points, not trilinear blends: neighbouring fine cells are
    trained to differ (SAM's hard negatives), so a blend of 8 resembles none of them (the SAM engineer
    measured self-matching misses of tens of mm with blended queries; ``anatomy/matching.py`` does the
    same).
    """
    out = []
    for grid, aff in ((emb.fine, emb.fine_affine), (emb.coarse, emb.coarse_affine)):
        g = np.rint(voxel_to_grid(volume, aff, ijk)).astype(np.int64)
        g = np.clip(g, 0, np.asarray(grid.shape[1:]) - 1)
        q = np.asarray(grid[:, g[:, 0], g[:, 1], g[:, 2]], dtype=np.float32).T
        out.append(q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-8))
    return out[0], out[1]


def refine_to_voxel(
    sim: np.ndarray, flat: int, volume: Volume, emb: EmbeddingMap
) -> tuple[np.ndarray, float]:
    """Sub-cell refinement of a fine-grid match: argmax of the trilinearly interpolated similarity over
    the voxels of ``volume`` within one fine cell of grid point ``flat``.

    ``sim`` is the (Nf,) similarity of one query on the fine grid. This is what upsampling the similarity
    to the full voxel grid (the public code) gives near its maximum, at the cost of a few hundred
    interpolations instead of a full-volume upsampling. Returns the (3,) voxel and its score.
    """
    g = np.array(np.unravel_index(flat, emb.fine_shape), dtype=np.float64)
    centre = grid_to_voxel(volume, emb.fine_affine, g)
    # extent of one fine cell in voxels of ``volume``, per axis
    cell = np.abs(np.linalg.inv(volume.affine)[:3, :3] @ emb.fine_affine[:3, :3]).sum(axis=1)
    half = np.ceil(cell).astype(np.int64)
    shape = np.asarray(volume.spatial_shape)
    lo = np.clip(np.rint(centre).astype(np.int64) - half, 0, shape - 1)
    hi = np.clip(np.rint(centre).astype(np.int64) + half, 0, shape - 1)
    axes = [np.arange(a, b + 1) for a, b in zip(lo, hi)]
    vox = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    idx, w = _trilinear_table(voxel_to_grid(volume, emb.fine_affine, vox), emb.fine_shape)
    s = (sim[idx] * w).sum(axis=1)
    k = int(s.argmax())
    return vox[k].astype(np.int64), float(s[k])


class PairMiner:
    """Finds cross-patient anatomical pairs (see the module docstring).

    ``border_margin`` (voxels) keeps the query away from the volume border so that its crop is mostly
    inside the scan (64^3 crops: 16 keeps at least 3/4 of each side inside); on an axis shorter than
    twice the margin the margin shrinks to what fits. ``foreground_threshold`` is in normalised
    intensity (CT windowed to [0, 1]: 0 is the window floor; MRI percentile-scaled: 0 is the low
    percentile; 0.05 ignores noise in air either way).
    """

    def __init__(
        self,
        threshold: float = 0.7,
        max_tries: int = 100,
        border_margin: int = 16,
        foreground_threshold: float = 0.05,
        chunk: int = 16,
        cache_size: int = 4,
    ) -> None:
        if max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        if border_margin < 0:
            raise ValueError(f"border_margin must be >= 0, got {border_margin}")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.threshold = threshold
        self.max_tries = max_tries
        self.border_margin = border_margin
        self.foreground_threshold = foreground_threshold
        self.chunk = chunk
        self.cache_size = cache_size
        self._fg: OrderedDict[str, np.ndarray] = OrderedDict()
        self._index: OrderedDict[str, _FineIndex] = OrderedDict()

    def __getstate__(self) -> dict[str, object]:  # caches stay in the process that built them
        state = dict(self.__dict__)
        state["_fg"], state["_index"] = OrderedDict(), OrderedDict()
        return state

    def _remember(self, table: OrderedDict[str, Any], key: str, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.cache_size:
            table.popitem(last=False)

    # -- query candidates ---------------------------------------------------------------------
    def foreground(self, volume: Volume) -> np.ndarray:
        """(M, 3) int64 voxels of ``volume`` above the threshold and inside the border margin."""
        key = volume.path
        if key != "<memory>" and key in self._fg:
            self._fg.move_to_end(key)
            return self._fg[key]
        shape = np.asarray(volume.spatial_shape)
        margin = np.minimum(self.border_margin, (shape - 1) // 2)
        inner = volume.image[
            0,
            margin[0] : shape[0] - margin[0],
            margin[1] : shape[1] - margin[1],
            margin[2] : shape[2] - margin[2],
        ]
        fg = np.argwhere(inner > self.foreground_threshold) + margin
        if len(fg) == 0:
            raise DataError(
                f"{volume.path}: no voxel above the foreground threshold {self.foreground_threshold} "
                f"(normalised intensity) at least {self.border_margin} voxels from the border; Alice draws "
                "its query points there. Check the intensity preset (data.modality; data.hu_window for CT, "
                "data.mri_percentiles for MRI) or "
                "lower alice.foreground_threshold / alice.border_margin, or remove the scan."
            )
        if key != "<memory>":
            self._remember(self._fg, key, fg)
        return fg

    def _fine_index(self, volume: Volume, emb: EmbeddingMap) -> _FineIndex:
        key = volume.path
        if key != "<memory>" and key in self._index:
            self._index.move_to_end(key)
            return self._index[key]
        index = _FineIndex(emb)
        if key != "<memory>":
            self._remember(self._index, key, index)
        return index

    # -- pairing ------------------------------------------------------------------------------
    def pair(
        self,
        vol_a: Volume,
        vol_b: Volume,
        rng: np.random.Generator,
        mode: str = "sam",
        emb_a: EmbeddingMap | None = None,
        emb_b: EmbeddingMap | None = None,
    ) -> MinedPair:
        """One pair (p in A, p' in B) by ``mode``: ``sam`` (embedding match), ``random``, ``same``."""
        if mode not in PAIRING_MODES:
            raise ValueError(f"pairing mode {mode!r}; valid: {', '.join(PAIRING_MODES)}")
        fg_a = self.foreground(vol_a)
        if mode == "same":
            p = fg_a[rng.integers(len(fg_a))]
            return MinedPair(p.copy(), p.copy(), float("nan"), 1, True)
        if mode == "random":
            p = fg_a[rng.integers(len(fg_a))]
            fg_b = self.foreground(vol_b)
            return MinedPair(p.copy(), fg_b[rng.integers(len(fg_b))].copy(), float("nan"), 1, True)
        if emb_a is None or emb_b is None:
            raise ValueError("pairing mode 'sam' needs the embedding maps of both volumes")
        return self.mine(vol_a, emb_a, vol_b, emb_b, rng)

    def mine(
        self, vol_a: Volume, emb_a: EmbeddingMap, vol_b: Volume, emb_b: EmbeddingMap, rng: np.random.Generator
    ) -> MinedPair:
        """SAM pairing: candidates drawn up front, scored in growing chunks; the first accepted one wins."""
        fg_a = self.foreground(vol_a)
        cand = snap_to_cells(vol_a, emb_a, fg_a[rng.integers(len(fg_a), size=self.max_tries)])  # (T, 3)
        index = self._fine_index(vol_b, emb_b)
        best_score, best_i, best_flat, best_sim = -np.inf, 0, 0, np.empty(0, np.float32)
        start, size = 0, 1
        while start < self.max_tries:
            # chunks of 1, 2, 4, ... up to ``chunk`` queries: a good SAM accepts the first try, and a
            # bad one is scored in big matrix products; the result does not depend on the chunking
            pts = cand[start : start + size]
            fq, cq = query_vectors(vol_a, emb_a, pts)
            sim = index.similarity(fq, cq)
            flat = sim.argmax(axis=0)
            score = sim[flat, np.arange(sim.shape[1])]
            ok = np.flatnonzero(score > self.threshold)
            if len(ok):
                i = int(ok[0])
                return self._result(
                    cand[start + i],
                    vol_b,
                    emb_b,
                    sim[:, i],
                    int(flat[i]),
                    float(score[i]),
                    start + i + 1,
                    True,
                )
            j = int(score.argmax())
            if score[j] > best_score:
                best_score, best_i, best_flat = float(score[j]), start + j, int(flat[j])
                best_sim = sim[:, j].copy()
            start, size = start + len(pts), min(2 * size, self.chunk)
        return self._result(
            cand[best_i], vol_b, emb_b, best_sim, best_flat, best_score, self.max_tries, False
        )

    @staticmethod
    def _result(
        p: np.ndarray,
        vol_b: Volume,
        emb_b: EmbeddingMap,
        sim: np.ndarray,
        flat: int,
        score: float,
        tries: int,
        accepted: bool,
    ) -> MinedPair:
        """The pair, p' refined to B's voxel grid; ``score`` stays the fine-grid maximum that was tested."""
        vb, _ = refine_to_voxel(sim, flat, vol_b, emb_b)
        return MinedPair(np.asarray(p, dtype=np.int64).copy(), vb, score, tries, accepted)
