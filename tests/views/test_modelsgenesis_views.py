"""Models Genesis' corruptions on known arrays: shuffling permutes within blocks, in-painting changes only
inside its boxes, out-painting only outside, the intensity curve is monotone with fixed endpoints, and
the views draw each corruption at the public code's rate."""

from __future__ import annotations

import numpy as np
import pytest

from anatssl.data.volume import Volume
from anatssl.views.modelsgenesis import (
    ModelsGenesisViews,
    bezier_curve,
    box_mask,
    in_painting,
    inpaint_boxes,
    intensity_curve,
    local_pixel_shuffling,
    nonlinear_transform,
    out_painting,
    outpaint_boxes,
    shuffle_blocks,
    shuffle_boxes,
)


def _arange(shape: tuple[int, int, int] = (20, 30, 40)) -> np.ndarray:
    """(1, *shape) float32 with every voxel a distinct value: its flat index."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(1, *shape)


# -- local pixel shuffling --------------------------------------------------------------------------------
def test_shuffling_preserves_the_multiset_of_each_block_and_nothing_else_moves() -> None:
    x = _arange()
    boxes = [((2, 6), (3, 8), (0, 4)), ((10, 13), (20, 30), (30, 31)), ((0, 1), (0, 1), (0, 1))]
    out = shuffle_blocks(x, boxes, np.random.default_rng(0))
    inside = box_mask(x.shape, boxes)
    assert np.array_equal(out[0][~inside], x[0][~inside])
    for (x0, x1), (y0, y1), (z0, z1) in boxes:
        a, b = x[0, x0:x1, y0:y1, z0:z1], out[0, x0:x1, y0:y1, z0:z1]
        assert np.array_equal(np.sort(a, axis=None), np.sort(b, axis=None))
    big = boxes[0]
    assert not np.array_equal(out[0, 2:6, 3:8, 0:4], x[0, 2:6, 3:8, 0:4])  # 80 voxels: really permuted
    assert np.array_equal(out[0, 0, 0, 0], x[0, 0, 0, 0])  # a 1-voxel block cannot change
    assert big == ((2, 6), (3, 8), (0, 4))


def test_shuffling_moves_all_channels_together_and_later_blocks_win() -> None:
    x = np.concatenate([_arange(), 2 * _arange()])
    out = shuffle_blocks(x, [((0, 4), (0, 4), (0, 4))], np.random.default_rng(1))
    assert np.array_equal(out[1], 2 * out[0])
    # overlapping blocks: the second one re-permutes the *original* values of its box
    y = _arange((4, 4, 4))
    out = shuffle_blocks(y, [((0, 4), (0, 4), (0, 4)), ((0, 2), (0, 2), (0, 2))], np.random.default_rng(2))
    assert np.array_equal(np.sort(out[0, :2, :2, :2], axis=None), np.sort(y[0, :2, :2, :2], axis=None))


def test_local_pixel_shuffling_draws_small_blocks_and_moves_voxels_only_locally() -> None:
    shape = (40, 50, 30)
    boxes = shuffle_boxes((1, *shape), np.random.default_rng(0), 2000)
    sizes = np.array([[b - a for a, b in box] for box in boxes])
    assert sizes.min() == 1 and sizes.max(axis=0).tolist() == [4, 5, 3]  # 1..dim // 10 per axis
    assert all(0 <= a < b <= d for box in boxes for (a, b), d in zip(box, shape))
    x = _arange(shape)
    out = local_pixel_shuffling(x, np.random.default_rng(3), 2000)
    rng = np.random.default_rng(3)
    assert np.array_equal(out, shuffle_blocks(x, shuffle_boxes(x.shape, rng, 2000), rng))  # = the two parts
    src = np.stack(np.unravel_index(out[0].astype(np.int64).ravel(), shape))  # where each value came from
    dst = np.stack(np.unravel_index(np.arange(np.prod(shape)), shape))
    moved = np.abs(src - dst)
    assert (moved.max(axis=1) <= np.array([3, 4, 2])).all()  # never further than a block edge - 1
    assert (moved.sum(axis=0) > 0).mean() > 0.3  # and many voxels did move
    assert np.array_equal(local_pixel_shuffling(x, np.random.default_rng(3), 2000), out)  # rng decides


# -- non-linear intensity transform -----------------------------------------------------------------------
def test_bezier_curve_hand_values() -> None:
    pts = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    xs, ys = bezier_curve(pts, n=3)  # t = 0, 1/2, 1; B(1/2) = (P0 + 3 P1 + 3 P2 + P3) / 8
    np.testing.assert_allclose(xs, [0.0, 0.5, 1.0], atol=1e-15)
    np.testing.assert_allclose(ys, [0.0, 0.5, 1.0], atol=1e-15)
    pts = np.array([[0.0, 0.0], [0.2, 0.9], [0.4, 0.1], [1.0, 1.0]])
    xs, ys = bezier_curve(pts, n=5)  # t = 1/4: weights 27/64, 27/64, 9/64, 1/64
    assert xs[1] == pytest.approx((27 * 0.2 + 9 * 0.4 + 1) / 64, abs=1e-15)
    assert ys[1] == pytest.approx((27 * 0.9 + 9 * 0.1 + 1) / 64, abs=1e-15)


def test_straight_control_points_give_the_identity() -> None:
    xs, ys = intensity_curve((1 / 3, 1 / 3), (2 / 3, 2 / 3), invert=False)
    np.testing.assert_allclose(ys, xs, atol=1e-12)
    xs, ys = intensity_curve((1 / 3, 1 / 3), (2 / 3, 2 / 3), invert=True)
    np.testing.assert_allclose(ys, 1 - xs, atol=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_intensity_curve_is_monotone_with_fixed_endpoints(seed: int) -> None:
    p = np.random.default_rng(seed).random(4)
    if seed == 0:
        p = np.array([1.0, 0.0, 0.0, 1.0])  # the extreme controls: still monotone
    for invert in (False, True):
        xs, ys = intensity_curve(p[:2], p[2:], invert)
        assert np.all(np.diff(xs) >= -1e-12)
        d = np.diff(ys)
        assert np.all(d <= 1e-12) if invert else np.all(d >= -1e-12)
        grid = np.linspace(0, 1, 1001)
        f = np.interp(grid, xs, ys)
        assert (f[0], f[-1]) == ((1.0, 0.0) if invert else (0.0, 1.0))
        assert f.min() >= 0.0 and f.max() <= 1.0


def test_nonlinear_transform_keeps_the_order_of_intensities() -> None:
    x = np.random.default_rng(0).random((1, 8, 8, 8)).astype(np.float32)
    order = np.argsort(x, axis=None)
    for seed in range(6):
        y = nonlinear_transform(x, np.random.default_rng(seed), invert_rate=0.5).ravel()[order]
        assert y.dtype == np.float32 and np.all(y >= 0) and np.all(y <= 1)
        assert np.all(np.diff(y) >= -1e-6) or np.all(np.diff(y) <= 1e-6)
    up = nonlinear_transform(x, np.random.default_rng(0), invert_rate=0.0).ravel()[order]
    down = nonlinear_transform(x, np.random.default_rng(0), invert_rate=1.0).ravel()[order]
    assert np.all(np.diff(up) >= -1e-6) and np.all(np.diff(down) <= 1e-6)


# -- in-painting and out-painting -------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
def test_in_painting_changes_only_inside_its_boxes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.full((2, 36, 48, 30), 5.0, dtype=np.float32)
    boxes = inpaint_boxes(x.shape, rng)
    assert len(boxes) <= 5
    for box in boxes:
        for (a, b), d in zip(box, x.shape[1:]):
            assert d // 6 <= b - a <= d // 3 and a >= 3 and b <= d - 3
    out = in_painting(x, boxes, rng)
    inside = box_mask(x.shape, boxes)
    assert np.array_equal(out[:, ~inside], x[:, ~inside])
    assert np.all(out[:, inside] < 1.0) and np.all(out[:, inside] >= 0.0)  # every inside voxel is noise


@pytest.mark.parametrize("seed", range(8))
def test_out_painting_changes_only_outside_its_boxes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.full((1, 35, 49, 28), 5.0, dtype=np.float32)
    boxes = outpaint_boxes(x.shape, rng)
    assert 1 <= len(boxes) <= 5
    for box in boxes:
        for (a, b), d in zip(box, x.shape[1:]):
            assert d - 4 * d // 7 <= b - a <= d - 3 * d // 7 and a >= 3 and b <= d - 3
    out = out_painting(x, boxes, rng)
    inside = box_mask(x.shape, boxes)
    assert np.array_equal(out[:, inside], x[:, inside])
    assert np.all(out[:, ~inside] < 1.0) and np.all(out[:, ~inside] >= 0.0)
    assert (~inside).any()


def test_painting_box_counts_follow_the_095_rule() -> None:
    """P(no in-painting box) = 0.05; P(5 boxes) = 0.95^5; out-painting always has its first box."""
    rng = np.random.default_rng(0)
    counts = np.array([len(inpaint_boxes((1, 30, 30, 30), rng)) for _ in range(4000)])
    assert abs((counts == 0).mean() - 0.05) < 0.015
    assert abs((counts == 5).mean() - 0.95**5) < 0.03
    out_counts = np.array([len(outpaint_boxes((1, 30, 30, 30), rng)) for _ in range(2000)])
    assert out_counts.min() == 1 and abs((out_counts == 5).mean() - 0.95**4) < 0.03


# -- the views --------------------------------------------------------------------------------------------
def _volume(shape: tuple[int, int, int] = (40, 40, 40)) -> Volume:
    img = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    return Volume(img, np.eye(4), "v.nii.gz")


def test_views_without_corruptions_return_the_crop_twice_and_are_reproducible() -> None:
    none = ModelsGenesisViews((16, 16, 16), flip_rate=0.0, local_rate=0.0, nonlinear_rate=0.0, paint_rate=0.0)
    out = none(_volume(), np.random.default_rng(0))
    assert out["x"].shape == out["target"].shape == (1, 16, 16, 16)
    assert np.array_equal(out["x"], out["target"]) and out["applied"].tolist() == [0, 0, 0, 0]
    full = ModelsGenesisViews((16, 16, 16), shuffle_blocks=50)
    a, b = full(_volume(), np.random.default_rng(5)), full(_volume(), np.random.default_rng(5))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_flips_apply_to_input_and_target_alike() -> None:
    flip = ModelsGenesisViews((16, 16, 16), flip_rate=1.0, local_rate=0.0, nonlinear_rate=0.0, paint_rate=0.0)
    out = flip(_volume(), np.random.default_rng(0))
    assert np.array_equal(out["x"], out["target"])
    crop = _volume().image
    # the target is a flipped crop of the volume: its multiset of values is that of some 16^3 crop
    assert np.isin(out["target"], crop).all()


def test_views_draw_each_corruption_at_the_public_rate() -> None:
    views = ModelsGenesisViews((16, 16, 16), shuffle_blocks=5)
    vol = _volume((20, 20, 20))
    applied = np.stack([views(vol, np.random.default_rng(i))["applied"] for i in range(600)])
    rates = applied.mean(axis=0)
    want = np.array([0.5, 0.9, 0.9 * 0.2, 0.9 * 0.8])
    sd = np.sqrt(want * (1 - want) / 600)
    assert np.all(np.abs(rates - want) < 4 * sd), rates
    assert np.all(applied[:, 2] * applied[:, 3] == 0)  # in- or out-painting, never both
