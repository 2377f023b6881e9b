"""SAM's two-crop views: the correspondence between the crops is exact."""

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from anatssl.anatomy.sam_views import SAMViews
from anatssl.data.volume import Volume
from anatssl.errors import DataError

SPACING = np.array([1.5, 1.0, 2.0])


def _linear_volume() -> Volume:
    """A linear ramp: trilinear resampling reproduces it exactly, so both crops can be compared."""
    shape = (96, 100, 64)
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    img = (0.2 + 0.004 * x + 0.003 * y + 0.005 * z)[None].astype(np.float32)
    return Volume(img, np.diag([*SPACING, 1.0]), path="ramp.nii.gz")


def _views(**kw: object) -> SAMViews:
    args = dict(
        crop_size=(24, 24, 24), num_pairs=64, contrast_range=(1.0, 1.0), brightness=0.0, noise_std=0.0
    )
    args.update(kw)
    return SAMViews(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partners_show_the_same_voxel(seed: int) -> None:
    vol = _linear_volume()
    out = _views(rotate_deg=15.0)(vol, np.random.default_rng(seed), None)
    assert out["view1"].shape == (1, 24, 24, 24) and out["pts1"].shape == (64, 3)
    v = out["valid"]
    assert v.sum() > 20
    c1 = 2 * out["pts1"][v].astype(np.float64) + 0.5  # block centres in view voxels
    c2 = 2 * out["pts2"][v].astype(np.float64) + 0.5
    a = map_coordinates(out["view1"][0].astype(np.float64), c1.T, order=1)
    b = map_coordinates(out["view2"][0].astype(np.float64), c2.T, order=1)
    # keep partners whose 8 interpolation corners all lie inside the volume (zero padding outside)
    in1 = map_coordinates((out["view1"][0] > 0).astype(np.float64), c1.T, order=1) > 1 - 1e-9
    in2 = map_coordinates((out["view2"][0] > 0).astype(np.float64), c2.T, order=1) > 1 - 1e-9
    inside = in1 & in2
    assert inside.sum() > 10
    np.testing.assert_allclose(a[inside], b[inside], atol=2e-4)
    assert np.all(out["pts2"][v] >= 0) and np.all(out["pts2"][v] <= 11)


def test_grid2mm_gives_physical_distances() -> None:
    vol = _linear_volume()
    views = _views(rotate_deg=0.0, scale_range=(1.25, 1.25))
    out = views(vol, np.random.default_rng(3), None)
    # no rotation, scale 1.25: a fine step of view 2 = 2 * 1.25 voxels = 2.5 * spacing mm
    np.testing.assert_allclose(out["grid2mm"], np.diag(2.5 * SPACING), atol=1e-6)
    # equal scales, no rotation: partners are translated, so distances in both crops agree
    v = out["valid"]
    p1, p2 = out["pts1"][v], out["pts2"][v]
    d1 = np.linalg.norm((p1[0] - p1[1:]) * 2.5 * SPACING, axis=1)
    d2 = np.linalg.norm((p2[0] - p2[1:]) @ out["grid2mm"].T, axis=1)
    np.testing.assert_allclose(d1, d2, atol=1e-4)


def test_deterministic_given_rng() -> None:
    vol = _linear_volume()
    a = _views(noise_std=0.05)(vol, np.random.default_rng(7), None)
    b = _views(noise_std=0.05)(vol, np.random.default_rng(7), None)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_no_foreground_is_a_clear_error() -> None:
    vol = Volume(np.zeros((1, 32, 32, 32), np.float32), np.eye(4), path="empty_case.nii.gz")
    with pytest.raises(DataError, match="empty_case.nii.gz: no voxel above the foreground threshold"):
        _views()(vol, np.random.default_rng(0), None)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="crop_size"):
        SAMViews(crop_size=(23, 24, 24))
    with pytest.raises(ValueError, match="scale_range"):
        SAMViews(scale_range=(1.2, 0.8))
