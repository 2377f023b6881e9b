"""S2DC views: the token correspondence is exact, checked by warping a coordinate image with the
view's own warp; out-of-view tokens are unmatched; shapes, determinism, padding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anatssl.data.volume import Volume
from anatssl.views.s2dc import (
    S2DCViews,
    crop_affine,
    inplane_matrix,
    match_matrix,
    token_correspondence,
    warp_crops,
    warp_inplane,
)


def _coordinate_slab(nx: int, ny: int, nz: int) -> torch.Tensor:
    """(4, X, Y, Z): channels x, y, z voxel coordinates and a ones channel."""
    x, y, z = torch.meshgrid(torch.arange(nx), torch.arange(ny), torch.arange(nz), indexing="ij")
    return torch.stack([x, y, z, torch.ones_like(x)]).float()


@pytest.mark.parametrize("seed", range(6))
def test_warped_coordinate_image_reproduces_every_matched_pair(seed: int) -> None:
    rng = np.random.default_rng(seed)
    stride, tx, ty, tz = 8, 8, 8, 2
    nx, ny, nz = tx * stride, ty * stride, tz * stride
    matrix = inplane_matrix(
        math.radians(rng.uniform(-30, 30)),
        rng.uniform(0.9, 1.2),
        tuple(rng.uniform(-12, 12, 2)),
        ((nx - 1) / 2, (ny - 1) / 2),
    )
    warped = warp_inplane(_coordinate_slab(nx, ny, nz), matrix)
    # the coordinate image is linear, so its mean over a token's voxels is the src position that the
    # aug token's centre reads from (where the token lies fully inside the src view)
    pooled = F.avg_pool3d(warped.unsqueeze(0), stride)[0]  # (4, Tx, Ty, Tz)
    match = token_correspondence(matrix, (tx, ty), stride)
    assert match.shape == (tx * ty,)
    matched = np.flatnonzero(match >= 0)
    assert len(matched) > tx * ty // 3
    assert len(set(match[matched].tolist())) == len(matched)  # one-to-one
    centre = lambda a: a * stride + (stride - 1) / 2  # noqa: E731
    for i in matched:
        j = int(match[i])
        xi, yi = divmod(int(i), ty)
        xj, yj = divmod(j, ty)
        for k in range(tz):
            if float(pooled[3, xj, yj, k]) < 1.0 - 1e-5:  # token j touches zero padding: mean is biased
                continue
            px, py, pz = (float(pooled[c, xj, yj, k]) for c in range(3))
            assert abs(px - centre(xi)) <= stride / 2 + 1e-4
            assert abs(py - centre(yi)) <= stride / 2 + 1e-4
            assert abs(pz - centre(k)) < 1e-4  # in-plane warp: z untouched
    # every aug token whose whole footprint comes from outside the src slab is unmatched
    outside = {int(x) * ty + int(y) for x, y in zip(*np.nonzero(pooled[3, :, :, 0].numpy() < 1e-6))}
    assert outside.isdisjoint(set(match[matched].tolist()))


def test_matched_pairs_are_the_nearest_tokens_read_off_the_warped_image() -> None:
    """Independent of token_correspondence's arithmetic: read the src token of each aug token from
    the warped coordinate image (nearest centre) and compare with the matrix."""
    stride, t = 4, 16
    n = t * stride
    matrix = inplane_matrix(math.radians(17.0), 1.1, (5.3, -7.1), ((n - 1) / 2, (n - 1) / 2))
    warped = warp_inplane(_coordinate_slab(n, n, stride), matrix)
    centres = (np.arange(t) * stride + (stride - 1) // 2, np.arange(t) * stride + (stride - 1) // 2)
    match = token_correspondence(matrix, (t, t), stride)
    checked = 0
    for i in np.flatnonzero(match >= 0):
        j = int(match[i])
        xj, yj = divmod(j, t)
        # value at the voxel just below the (half-voxel) centre, plus half a voxel of the linear map
        v = warped[:2, centres[0][xj], centres[1][yj], 0].double().numpy()
        v_next = warped[:2, centres[0][xj] + 1, centres[1][yj] + 1, 0].double().numpy()
        inside = warped[3, centres[0][xj] : centres[0][xj] + 2, centres[1][yj] : centres[1][yj] + 2, 0]
        if float(inside.min()) < 1 - 1e-6:  # reads zero padding: not a linear image there
            continue
        src_pos = (v + v_next) / 2  # exact: the map is affine
        nearest = np.rint((src_pos - (stride - 1) / 2) / stride).astype(int)
        assert tuple(nearest) == divmod(int(i), t)
        checked += 1
    assert checked > 100


def test_translation_by_one_token_shifts_matches_and_unmatches_the_edge() -> None:
    stride, t = 8, 4
    matrix = inplane_matrix(0.0, 1.0, (stride, 0.0), (0.0, 0.0))  # +1 token along x
    match = token_correspondence(matrix, (t, t), stride).reshape(t, t)
    for x in range(t - 1):
        for y in range(t):
            assert match[x, y] == (x + 1) * t + y
    assert (match[t - 1] == -1).all()  # pushed out of the aug view


def test_identity_warp_is_exact_and_matches_everything() -> None:
    img = torch.rand(1, 16, 16, 8)
    torch.testing.assert_close(warp_inplane(img, np.eye(3)), img)
    match = token_correspondence(np.eye(3), (4, 4), 4)
    np.testing.assert_array_equal(match, np.arange(16))


def test_match_matrix() -> None:
    g = match_matrix(torch.tensor([[2, -1, 0]]), 3)
    expected = torch.tensor([[[0.0, 0, 1], [0, 0, 0], [1, 0, 0]]])
    torch.testing.assert_close(g, expected)


def test_crop_affine_identity_and_official_scale_range() -> None:
    rng = np.random.default_rng(0)
    theta = crop_affine(rng, 32, rot_deg=0.0, trans=0.0, scale=0.0, scale_mode="fixed")
    torch.testing.assert_close(theta, torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]))
    crops = torch.rand(2, 1, 8, 8, 8)
    torch.testing.assert_close(warp_crops(crops, theta.expand(2, 3, 4)), crops, atol=1e-5, rtol=0)
    diags = np.array(
        [np.diag(crop_affine(rng, 32, 0.0, 0.0, 0.1, "official").numpy()[:, :3]) for _ in range(200)]
    )
    assert diags.min() < 0.3 and diags.max() > 1.7  # U(0, 2) per axis
    fixed = np.array(
        [np.diag(crop_affine(rng, 32, 0.0, 0.0, 0.1, "fixed").numpy()[:, :3]) for _ in range(200)]
    )
    assert fixed.min() >= 0.9 - 1e-6 and fixed.max() <= 1.1 + 1e-6
    assert np.allclose(fixed, fixed[:, :1])  # isotropic


def test_view_function_shapes_determinism_and_padding() -> None:
    views = S2DCViews(grid=2, crop=32, stride=8)
    vol = Volume(np.random.default_rng(0).random((1, 50, 80, 20), dtype=np.float32), np.eye(4))  # < slab
    a = views(vol, np.random.default_rng(7))
    b = views(vol, np.random.default_rng(7))
    for key in ("src", "aug_full", "aug_crop"):
        assert a[key].shape == (4, 1, 32, 32, 32) and a[key].dtype == np.float32
        np.testing.assert_array_equal(a[key], b[key])
    assert a["match"].shape == (4, 64) and a["match"].dtype == np.int64
    assert (a["match"] == a["match"][0]).all()  # in-plane warp: same pairs in every token layer
    assert 0 <= a["crop_k"] < 4
    # the slab is zero-padded where the volume is too small (z: 20 < 32)
    assert views.slab_shape == (64, 64, 32)
    assert float(np.abs(a["src"]).sum()) > 0


def test_src_crops_tile_the_slab() -> None:
    views = S2DCViews(grid=2, crop=32, stride=8)
    img = np.random.default_rng(1).random((1, 64, 64, 32), dtype=np.float32)
    s = views.sample(Volume(img, np.eye(4)), np.random.default_rng(0))
    src = views(Volume(img, np.eye(4)), np.random.default_rng(0))["src"]
    np.testing.assert_array_equal(src[1, 0], s.slab[0, :32, 32:, :].numpy())  # crop k = gx * G + gy
    np.testing.assert_array_equal(src[2, 0], s.slab[0, 32:, :32, :].numpy())
