"""Point matching: exact on known maps, vectorised, through world coordinates, clear errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anatssl.anatomy.embedding import EmbeddingMap
from anatssl.anatomy.matching import fit_affine_prior, match_points, similarity
from anatssl.anatomy.sam_model import grid_affine
from anatssl.errors import DataError


def _map(
    seed: int, shape: tuple[int, int, int] = (20, 16, 24), vol_affine: np.ndarray | None = None, d: int = 32
) -> EmbeddingMap:
    g = torch.Generator().manual_seed(seed)
    aff = np.diag([2.0, 2.0, 3.0, 1.0]) if vol_affine is None else vol_affine
    fshape = tuple(-(-s // 2) for s in shape)
    cshape = tuple(-(-s // 8) for s in shape)
    fine = F.normalize(torch.randn(d, *fshape, generator=g), dim=0).numpy().astype(np.float16)
    coarse = F.normalize(torch.randn(d, *cshape, generator=g), dim=0).numpy().astype(np.float16)
    meta = {"volume_shape": list(shape), "volume_affine": aff.tolist(), "fine_stride": 2, "coarse_stride": 8}
    return EmbeddingMap(fine, coarse, grid_affine(aff, 2), grid_affine(aff, 8), meta)


def _fine_centres(emap: EmbeddingMap, idx: np.ndarray) -> np.ndarray:
    return EmbeddingMap.grid_to_world(emap.fine_affine, idx)


def test_self_match_is_exact_and_vectorised() -> None:
    a = _map(0)
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, n, 50) for n in a.fine_shape], -1)
    pts = _fine_centres(a, idx)
    got, score = match_points(a, a, pts, chunk=7, subcell=False)
    np.testing.assert_allclose(got, pts, atol=1e-9)
    assert np.all(score > 0.6) and np.all(score <= 1.0 + 1e-3)  # fine term 1, coarse interpolated
    # the same, one point at a time
    for i in range(0, 50, 10):
        g1, s1 = match_points(a, a, pts[i : i + 1], subcell=False)
        np.testing.assert_allclose(g1[0], got[i])
        assert s1[0] == pytest.approx(score[i], abs=1e-5)


def test_query_uses_the_cell_that_holds_the_point() -> None:
    """Points anywhere inside a fine cell match like the cell centre (no blend of neighbouring cells)."""
    a = _map(4)
    idx = np.array([[3, 4, 5], [7, 2, 9]])
    centre = _fine_centres(a, idx)
    off = _fine_centres(a, idx + np.array([0.45, -0.4, 0.3])) - centre
    got_c, s_c = match_points(a, a, centre, subcell=False)
    got_o, s_o = match_points(a, a, centre + off, subcell=False)
    np.testing.assert_allclose(got_o, got_c)
    np.testing.assert_allclose(s_o, s_c)


def test_body_mask_restricts_the_argmax() -> None:
    a = _map(5)
    b = _map(5)
    pts = _fine_centres(a, np.array([[2, 2, 2], [6, 5, 4]]))
    b.fine_mask = np.ones(b.fine_shape, dtype=bool)
    b.fine_mask[:4] = False  # the first cells along x are "air"
    got, score = match_points(a, b, pts, subcell=False)
    np.testing.assert_allclose(got[1], pts[1])  # inside the body: found
    assert EmbeddingMap.world_to_grid(b.fine_affine, got[0])[0] >= 4 - 1e-9 and score[0] < score[1]


def test_match_goes_through_world_coordinates() -> None:
    """B is A's embedding placed 10 mm further along x and flipped along y: matches move with it."""
    a = _map(1)
    vol_b = np.diag([2.0, -2.0, 3.0, 1.0])
    vol_b[:3, 3] = [10.0, 30.0, 0.0]  # y flipped: index j of B sits at 30 - 2 j
    b = _map(1, vol_affine=vol_b)
    b.fine = a.fine[:, :, ::-1].copy()
    b.coarse = a.coarse[:, :, ::-1].copy()
    # A's fine cell (i, j, k) is B's cell (i, Fy-1-j, k) -> world differs by a known map
    idx = np.array([[1, 2, 3], [5, 0, 7], [9, 7, 11]])
    pts = _fine_centres(a, idx)
    got, _ = match_points(a, b, pts, subcell=False)
    want = _fine_centres(b, np.stack([idx[:, 0], a.fine_shape[1] - 1 - idx[:, 1], idx[:, 2]], -1))
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_coarse_term_is_upsampled_to_the_fine_grid() -> None:
    """With uninformative fine maps the coarse term alone decides: the match lands in the right cell."""
    a = _map(2)
    a.fine[:] = 0
    a.fine[0] = 1  # every fine vector identical
    cells = np.array([[0, 0, 0], [2, 1, 2], [1, 1, 1]])
    pts = EmbeddingMap.grid_to_world(a.coarse_affine, cells)  # coarse-cell centres
    sim = similarity(a, a, pts)
    assert sim.shape == (3, *a.fine_shape)
    got, _ = match_points(a, a, pts, subcell=False)
    # the match is one of the fine cells next to the coarse centre, i.e. inside that coarse cell
    np.testing.assert_array_equal(np.rint(EmbeddingMap.world_to_grid(a.coarse_affine, got)), cells)
    # interior cells: one voxel from the centre (fine centres sit at 2g + 0.5, coarse at 8c + 3.5);
    # at the border the clamped coarse map is exactly c_0 on the outer fine cells
    np.testing.assert_allclose(np.abs(got[1:] - pts[1:]), [[2.0, 2.0, 3.0]] * 2)


def test_point_outside_volume() -> None:
    a = _map(3)
    with pytest.raises(DataError, match=r"point 1 \[100.0, 5.0, 5.0\] mm .* is outside volume A"):
        match_points(a, a, np.array([[5.0, 5.0, 5.0], [100.0, 5.0, 5.0]]))


def test_models_of_different_width() -> None:
    with pytest.raises(DataError, match="different models"):
        match_points(_map(0, d=16), _map(1, d=32), np.array([[5.0, 5.0, 5.0]]))


def test_subcell_peak_and_query_offset() -> None:
    """A smooth map whose similarity peaks between grid points: the parabola finds the peak, and a query
    off its cell centre moves the answer by the same offset."""
    shape = (12, 10, 14)
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    fshape = tuple(-(-s // 2) for s in shape)
    a = _map(6, shape=shape, vol_affine=aff, d=3)
    # fine vectors of B point along a direction that turns slowly with x: cos(angle(x) - angle(x0))
    # peaks at the continuous x0 and falls off like a parabola near it
    x = np.arange(fshape[0], dtype=np.float64)
    ang = 0.3 * x
    fine = np.zeros((3, *fshape), np.float32)
    fine[0] = np.cos(ang)[:, None, None]
    fine[1] = np.sin(ang)[:, None, None]
    a.fine = fine.astype(np.float16)
    a.coarse[:] = 0
    a.coarse[2] = 1  # uninformative coarse term
    b = _map(6, shape=shape, vol_affine=aff, d=3)
    b.fine, b.coarse = a.fine.copy(), a.coarse.copy()
    # query: cell (3, 2, 2) of A, whose vector is at angle 0.9; in B make the exact angle sit at x = 4.3
    b.fine[0] = np.cos(0.3 * (x - 1.3))[:, None, None]
    b.fine[1] = np.sin(0.3 * (x - 1.3))[:, None, None]
    centre = EmbeddingMap.grid_to_world(a.fine_affine, np.array([[3.0, 2.0, 2.0]]))
    plain, _ = match_points(a, b, centre, subcell=False)
    sub, _ = match_points(a, b, centre, subcell=True)
    gx_plain = EmbeddingMap.world_to_grid(b.fine_affine, plain)[0, 0]
    gx_sub = EmbeddingMap.world_to_grid(b.fine_affine, sub)[0, 0]
    assert gx_plain == pytest.approx(4.0)
    assert abs(gx_sub - 4.3) < 0.05  # parabola of a cosine near its peak (float16 maps)
    # y and z: every cell alike along them, no peak, no offset: the answer stays on the cell centre
    np.testing.assert_allclose(sub[0, 1:], plain[0, 1:])
    # a query 1.5 mm off its cell centre along z moves the answer by 1.5 mm
    moved, _ = match_points(a, b, centre + np.array([[0.0, 0.0, 1.5]]), subcell=True)
    np.testing.assert_allclose(moved - sub, [[0.0, 0.0, 1.5]], atol=1e-9)


def _affine_pair(swap_share: float) -> tuple[EmbeddingMap, EmbeddingMap, np.ndarray, np.ndarray]:
    """B = A's fine embedding on a rotated, scaled, shifted grid (so A -> B is a known affine T), with
    ``swap_share`` of B's cells exchanging their vectors with a far-away cell (gross mismatches).
    Returns A, B, T (4, 4) and the swapped cells' A-indices."""
    a = _map(7, shape=(24, 24, 24))
    c, s = np.cos(0.2), np.sin(0.2)
    vol_b = np.eye(4)
    vol_b[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([2.2, 1.9, 2.0])
    vol_b[:3, 3] = [12.0, -8.0, 5.0]
    b = _map(7, shape=(24, 24, 24), vol_affine=vol_b)
    b.coarse = np.ones_like(a.coarse) / np.sqrt(a.coarse.shape[0])  # a neutral coarse term
    a.coarse = b.coarse.copy()
    fine = a.fine.reshape(a.fine.shape[0], -1).copy()
    rng = np.random.default_rng(0)
    m = fine.shape[1]
    cells = rng.permutation(m)[: int(swap_share * m) // 2 * 2].reshape(-1, 2)
    fine[:, cells[:, 0]], fine[:, cells[:, 1]] = fine[:, cells[:, 1]].copy(), fine[:, cells[:, 0]].copy()
    b.fine = fine.reshape(a.fine.shape)
    t = b.fine_affine @ np.linalg.inv(a.fine_affine)
    return a, b, t, cells.reshape(-1)


def test_affine_prior_recovers_the_map_despite_gross_mismatches() -> None:
    a, b, t, swapped = _affine_pair(0.3)
    prior = fit_affine_prior(a, b, window_mm=6.0, num_points=300, inlier_mm=3.0, seed=0)
    np.testing.assert_allclose(prior.matrix[:3, :3], t[:3, :3], atol=0.02)
    np.testing.assert_allclose(prior.matrix[:3, 3], t[:3, 3], atol=0.5)
    assert 0.6 < prior.inlier_fraction < 0.8  # ~70 % of the cells kept their vector
    # queries at swapped cells: the plain argmax goes to the swap partner, the windowed one stays near
    idx = np.stack(np.unravel_index(swapped[:40], a.fine_shape), -1)
    pts = _fine_centres(a, idx)
    truth = pts @ t[:3, :3].T + t[:3, 3]
    plain, _ = match_points(a, b, pts)
    windowed, _ = match_points(a, b, pts, prior=prior)
    err_plain = np.linalg.norm(plain - truth, axis=1)
    err_win = np.linalg.norm(windowed - truth, axis=1)
    assert np.median(err_plain) > 15.0
    assert err_win.max() <= 6.0 + 0.5 * np.linalg.norm(
        [4.4, 3.8, 4.0]
    )  # window + half a cell (sub-cell offsets)
    # an intact cell is still found exactly by both
    ok = np.setdiff1d(np.arange(np.prod(a.fine_shape)), swapped)[:5]
    pts_ok = _fine_centres(a, np.stack(np.unravel_index(ok, a.fine_shape), -1))
    want = pts_ok @ t[:3, :3].T + t[:3, 3]
    for got in (
        match_points(a, b, pts_ok, subcell=False)[0],
        match_points(a, b, pts_ok, subcell=False, prior=prior)[0],
    ):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_affine_prior_window_without_body_falls_back_to_the_whole_scan() -> None:
    a, b, t, _ = _affine_pair(0.0)
    prior = fit_affine_prior(a, b, window_mm=5.0, seed=1)
    prior.matrix = prior.matrix.copy()
    prior.matrix[:3, 3] += 500.0  # every prediction far outside B
    pts = _fine_centres(a, np.array([[3, 4, 5], [8, 2, 6]]))
    got, _ = match_points(a, b, pts, subcell=False, prior=prior)
    np.testing.assert_allclose(got, pts @ t[:3, :3].T + t[:3, 3], atol=1e-6)


def test_affine_prior_bad_arguments() -> None:
    a, b, _, _ = _affine_pair(0.0)
    with pytest.raises(ValueError, match="window_mm"):
        fit_affine_prior(a, b, window_mm=0.0)
    a.fine_mask = np.zeros(a.fine_shape, dtype=bool)
    a.fine_mask[0, 0, :3] = True
    with pytest.raises(DataError, match="3 body cells"):
        fit_affine_prior(a, b)
