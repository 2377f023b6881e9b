"""VoCo's views: base crops tile the region, random crops are cut where they say, and the overlap
targets are exact fractions on hand-made boxes."""

from __future__ import annotations

import numpy as np
import pytest

from anatssl.data.volume import Volume
from anatssl.views.voco import VoCoViews, base_boxes, overlap_fractions


def test_base_boxes_tile_the_region_row_major() -> None:
    boxes = base_boxes(2, (10, 20, 5))
    assert boxes == [
        ((0, 10), (0, 20), (0, 5)),
        ((0, 10), (20, 40), (0, 5)),
        ((10, 20), (0, 20), (0, 5)),
        ((10, 20), (20, 40), (0, 5)),
    ]


def test_overlap_fractions_hand_made_boxes() -> None:
    bases = base_boxes(2, (10, 10, 4))  # region 20 x 20 x 4
    # centred crop: a quarter in each base crop
    assert overlap_fractions(((5, 15), (5, 15), (0, 4)), bases).tolist() == [0.25, 0.25, 0.25, 0.25]
    # aligned with base crop 3: all of it there
    assert overlap_fractions(((10, 20), (10, 20), (0, 4)), bases).tolist() == [0.0, 0.0, 0.0, 1.0]
    # shifted by 2 in X and 7 in Y from the origin: (8 x 3, 8 x 7, 2 x 3, 2 x 7) / 100
    assert overlap_fractions(((2, 12), (7, 17), (0, 4)), bases).tolist() == [0.24, 0.56, 0.06, 0.14]
    # only half of the crop's depth inside the bases: fractions are of the crop's volume
    assert overlap_fractions(((0, 10), (0, 10), (2, 6)), bases).tolist() == [0.5, 0.0, 0.0, 0.0]
    # touching edges do not overlap
    assert overlap_fractions(((10, 20), (0, 10), (0, 4)), [((0, 10), (0, 10), (0, 4))]).tolist() == [0.0]
    with pytest.raises(ValueError, match="empty"):
        overlap_fractions(((3, 3), (0, 1), (0, 1)), bases)


def _volume() -> Volume:
    img = np.arange(80 * 90 * 40, dtype=np.float32).reshape(1, 80, 90, 40)  # every voxel distinct
    return Volume(img, np.eye(4), "v.nii.gz")


def test_views_bases_tile_the_region_and_crops_sit_where_their_targets_say() -> None:
    views = VoCoViews(grid=3, crop_size=(16, 16, 8), n_random=5)
    out = views(_volume(), np.random.default_rng(0))
    assert out["bases"].shape == (9, 1, 16, 16, 8) and out["crops"].shape == (5, 1, 16, 16, 8)
    assert out["targets"].shape == (5, 9) and out["targets"].dtype == np.float32
    region = np.zeros((1, 48, 48, 8), dtype=np.float32)
    for k, base in enumerate(out["bases"]):
        i, j = divmod(k, 3)
        region[:, 16 * i : 16 * (i + 1), 16 * j : 16 * (j + 1)] = base
    assert np.unique(region).size == region.size  # a real region of the scan, no padding, no repeats
    np.testing.assert_allclose(out["targets"].sum(axis=1), 1.0, atol=1e-6)
    for crop, (x0, y0), target in zip(out["crops"], out["crop_starts"], out["targets"]):
        assert 0 <= x0 <= 32 and 0 <= y0 <= 32
        assert np.array_equal(crop, region[:, x0 : x0 + 16, y0 : y0 + 16])
        want = overlap_fractions(((x0, x0 + 16), (y0, y0 + 16), (0, 8)), base_boxes(3, (16, 16, 8)))
        np.testing.assert_allclose(target, want, atol=1e-7)
        # cross-check through the values: the share of the crop's voxels found in each base crop
        found = [np.isin(crop, base).mean() for base in out["bases"]]
        np.testing.assert_allclose(target, found, atol=1e-7)


def test_views_are_reproducible_and_cover_every_offset() -> None:
    views = VoCoViews(grid=2, crop_size=(8, 8, 8), n_random=4)
    a, b = views(_volume(), np.random.default_rng(3)), views(_volume(), np.random.default_rng(3))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    starts = np.concatenate([views(_volume(), np.random.default_rng(s))["crop_starts"] for s in range(100)])
    assert starts.min() == 0 and starts.max() == 8  # inclusive range 0..(grid - 1) * crop
