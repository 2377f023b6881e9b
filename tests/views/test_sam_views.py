"""SAM's two-crop views: the correspondence between the crops is exact."""

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from anatssl.data.volume import Volume
from anatssl.errors import DataError
from anatssl.views.sam import SAMViews, tissue_remap

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


def _partner_values(out: dict, min_pairs: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Intensities of view 1 and view 2 at the partners whose interpolation corners are all inside."""
    v = out["valid"]
    assert v.sum() > min_pairs
    c1 = 2 * out["pts1"][v].astype(np.float64) + 0.5  # block centres in view voxels
    c2 = 2 * out["pts2"][v].astype(np.float64) + 0.5
    a = map_coordinates(out["view1"][0].astype(np.float64), c1.T, order=1)
    b = map_coordinates(out["view2"][0].astype(np.float64), c2.T, order=1)
    # keep partners whose 8 interpolation corners all lie inside the volume (zero padding outside)
    in1 = map_coordinates((out["view1"][0] > 0).astype(np.float64), c1.T, order=1) > 1 - 1e-9
    in2 = map_coordinates((out["view2"][0] > 0).astype(np.float64), c2.T, order=1) > 1 - 1e-9
    inside = in1 & in2
    assert inside.sum() > min_pairs // 2
    return a[inside], b[inside]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partners_show_the_same_voxel(seed: int) -> None:
    vol = _linear_volume()
    out = _views(rotate_deg=15.0)(vol, np.random.default_rng(seed), None)
    assert out["view1"].shape == (1, 24, 24, 24) and out["pts1"].shape == (64, 3)
    a, b = _partner_values(out)
    np.testing.assert_allclose(a, b, atol=2e-4)
    v = out["valid"]
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


def test_tissue_remap_moves_only_the_soft_tissue_band() -> None:
    x = np.linspace(0.0, 1.0, 2001)
    rng = np.random.default_rng(0)
    y = tissue_remap(x, rng, shift=0.08, bands=3, centre_range=(0.45, 0.65))
    # air (0), lung (~0.07), fat (~0.45 - 3 widths) and bone (>0.6 + a margin) are untouched
    far = (x < 0.3) | (x > 0.85)
    np.testing.assert_allclose(y[far], x[far], atol=1e-9)
    moved = np.abs(y - x)
    assert 0.005 < moved.max() <= 3 * 0.08 + 1e-12
    # hand-computed: one band of amplitude a at centre c, width w
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    a, _, w = rng_b.uniform(-0.1, 0.1), rng_b.uniform(0.5, 0.5), rng_b.uniform(0.01, 0.04)
    one = tissue_remap(np.array([0.5, 0.5 + w]), rng_a, 0.1, 1, (0.5, 0.5))
    np.testing.assert_allclose(one, [0.5 + a, 0.5 + w + a * np.exp(-0.5)], rtol=1e-12)


def test_tissue_remap_is_per_view_and_keeps_the_correspondence() -> None:
    vol = _linear_volume()  # intensities 0.2 .. 1.1
    # bands far above the ramp's values: the remap is drawn but moves nothing, partners still agree
    views = _views(rotate_deg=10.0, tissue_shift=0.1, tissue_range=(5.0, 5.0))
    out = views(vol, np.random.default_rng(4), None)
    a, b = _partner_values(out)
    np.testing.assert_allclose(a, b, atol=2e-4)
    # bands inside the ramp's values: each view is remapped differently, so partners now differ
    views = _views(rotate_deg=10.0, tissue_shift=0.1, tissue_range=(0.9, 1.0))
    out = views(vol, np.random.default_rng(4), None)
    a, b = _partner_values(out)
    assert np.abs(a - b).max() > 1e-2


def test_fov_cut_blanks_view_edges_and_drops_pairs_there() -> None:
    vol = _linear_volume()
    views = _views(rotate_deg=0.0, fov_cut=0.3)
    cut_any = False
    for seed in range(6):
        out = views(vol, np.random.default_rng(seed), None)
        a, b = _partner_values(out, 4)  # partners outside the blanked parts still show the same voxel
        np.testing.assert_allclose(a, b, atol=2e-4)
        v = out["valid"]
        for view, pts in (("view1", out["pts1"][v]), ("view2", out["pts2"][v])):
            img = out[view][0]
            vox = np.rint(2 * pts + 0.5).astype(int).clip(0, 23)  # voxel next to each used block centre
            assert np.all(img[vox[:, 0], vox[:, 1], vox[:, 2]] > 0), (seed, view)
            # a blanked slab is a whole face layer of zeros (the ramp itself is > 0.2 inside the volume)
            faces = [img[0], img[-1], img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]]
            cut_any |= any(np.all(f == 0) for f in faces)
    assert cut_any
