"""Intensity presets, resampling and foreground crop: hand-computed values and world-coordinate invariance."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from anatssl.config.schema import DataConfig
from anatssl.data.presets import CROP_MARGIN, preprocess, preset_key, scale_intensity
from anatssl.data.volume import Volume
from anatssl.errors import ConfigError, DataError


def grid_world(shape, affine) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def ramp(world: np.ndarray) -> np.ndarray:
    """A linear HU field inside the window: bilinear resampling reproduces it exactly."""
    return 2.0 * world[..., 0] - 3.0 * world[..., 1] + 1.5 * world[..., 2]


def phantom(shape=(64, 56, 48), box=((12, 40), (10, 30), (8, 36)), affine=None, noise=20.0, seed=0) -> Volume:
    """Air (-1000 HU + noise) with a body box filled with a HU ramp, and a label block inside the body."""
    rng = np.random.default_rng(seed)
    if affine is None:
        affine = np.diag([1.25, 0.8, 2.0, 1.0])
        affine[:3, 3] = [-30.0, 12.0, 100.0]
    image = -1000.0 + noise * rng.standard_normal(shape)
    world = grid_world(shape, affine)
    sl = tuple(slice(a, b) for a, b in box)
    image[sl] = ramp(world)[sl] - ramp(world)[sl].mean()  # centred on 0 HU, well inside (-1000, 1000)
    label = np.zeros((1, *shape), np.int16)
    label[0, 20:26, 14:20, 12:18] = 7
    return Volume(image=image[None].astype(np.float32), affine=affine, path="phantom.nii.gz", label=label)


def test_ct_window_hand_values():
    hu = np.array([-2000.0, -1000.0, -500.0, 0.0, 500.0, 1000.0, 3000.0], np.float32).reshape(1, 7, 1, 1)
    out = scale_intensity(hu, DataConfig(modality="ct"))
    np.testing.assert_allclose(out.ravel(), [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    narrow = scale_intensity(hu, DataConfig(modality="ct", hu_window=(-500.0, 500.0)))
    np.testing.assert_allclose(narrow.ravel(), [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0])


def test_mri_percentiles_hand_values():
    image = np.arange(1000, dtype=np.float32).reshape(1, 10, 10, 10)
    out = scale_intensity(image, DataConfig(modality="mri", mri_percentiles=(10.0, 90.0)))
    lo, hi = 0.1 * 999, 0.9 * 999  # numpy's linear-interpolation percentiles of 0..999
    assert out.min() == 0.0 and out.max() == 1.0
    assert out[0, 5, 0, 0] == pytest.approx((500 - lo) / (hi - lo), abs=1e-6)
    assert out[0, 1, 5, 0] == pytest.approx((150 - lo) / (hi - lo), abs=1e-6)
    assert out[0, 0, 5, 0] == 0.0  # 50 is below the 10th percentile: clipped
    # per channel: a second channel 10x brighter scales to the same numbers
    two = scale_intensity(np.concatenate([image, 10 * image]), DataConfig(modality="mri"))
    np.testing.assert_allclose(two[0], two[1], atol=1e-6)


def test_mri_constant_is_an_error():
    with pytest.raises(DataError, match="constant") as e:
        scale_intensity(np.ones((1, 4, 4, 4), np.float32), DataConfig(modality="mri"), "t1.nii.gz")
    assert "t1.nii.gz" in str(e.value)


def test_foreground_crop_box_and_world_positions():
    vol = phantom()
    out = preprocess(vol, DataConfig(modality="ct", foreground_crop=True))
    # the body box (12:40, 10:30, 8:36) plus the margin; single noisy air voxels do not stretch it
    assert out.meta["crop_start"] == [12 - CROP_MARGIN, 10 - CROP_MARGIN, 8 - CROP_MARGIN]
    assert out.spatial_shape == (28 + 2 * CROP_MARGIN, 20 + 2 * CROP_MARGIN, 28 + 2 * CROP_MARGIN)
    # every kept voxel has the value the original had at the same world point
    src_idx = np.round(vol.world_to_voxel(grid_world(out.spatial_shape, out.affine))).astype(int)
    expected = scale_intensity(vol.image, DataConfig())[0][tuple(np.moveaxis(src_idx, -1, 0))]
    np.testing.assert_allclose(out.image[0], expected, atol=1e-6)
    np.testing.assert_array_equal(out.label[0], vol.label[0][tuple(np.moveaxis(src_idx, -1, 0))])
    assert vol.image.shape == (1, 64, 56, 48)  # input untouched


def test_single_hot_voxel_in_air_is_ignored():
    vol = phantom()
    vol.image[0, 62, 2, 1] = 500.0  # far outside the body box
    out = preprocess(vol, DataConfig())
    assert out.meta["crop_start"] == [12 - CROP_MARGIN, 10 - CROP_MARGIN, 8 - CROP_MARGIN]


def test_resample_and_crop_keep_world_coordinates():
    vol = phantom(noise=0.0)
    cfg = DataConfig(modality="ct", spacing=(1.0, 1.0, 1.0), foreground_crop=True)
    out = preprocess(vol, cfg)
    assert out.spacing == pytest.approx((1.0, 1.0, 1.0))
    world = grid_world(out.spatial_shape, out.affine)
    offset = ramp(grid_world(vol.spatial_shape, vol.affine))[12:40, 10:30, 8:36].mean()
    expected = (ramp(world) - offset + 1000.0) / 2000.0
    # well inside the body (away from the body edge, where bilinear mixes in air), values are exact
    src = vol.world_to_voxel(world)
    inside = np.all((src >= [13.5, 11.5, 9.5]) & (src <= [37.5, 27.5, 33.5]), axis=-1)
    assert inside.sum() > 1000
    np.testing.assert_allclose(out.image[0][inside], expected[inside], atol=2e-5)
    # the label block: nearest resampling keeps its integer value and its world centroid
    assert set(np.unique(out.label)) == {0, 7}
    c_in = vol.voxel_to_world(np.argwhere(vol.label[0] == 7).mean(0))
    c_out = out.voxel_to_world(np.argwhere(out.label[0] == 7).mean(0))
    np.testing.assert_allclose(c_out, c_in, atol=1.0)  # within one output voxel


def test_no_body_is_an_error():
    vol = phantom()
    vol = replace(vol, image=np.full_like(vol.image, -1000.0))
    with pytest.raises(DataError, match="no body found .* -900 HU") as e:
        preprocess(vol, DataConfig())
    assert "phantom.nii.gz" in str(e.value)
    assert preprocess(vol, DataConfig(foreground_crop=False)).spatial_shape == vol.spatial_shape


def test_preset_key_tracks_what_changes_the_output():
    base = DataConfig()
    k = preset_key(base)
    assert len(k) == 16 and k == preset_key(DataConfig())
    changed = [
        DataConfig(modality="mri"),
        DataConfig(hu_window=(-200.0, 300.0)),
        DataConfig(spacing=(1.5, 1.5, 1.5)),
        DataConfig(foreground_crop=False),
    ]
    keys = {preset_key(c) for c in changed}
    assert k not in keys and len(keys) == len(changed)
    # settings that do not change a CT array keep the key
    assert preset_key(DataConfig(mri_percentiles=(1.0, 99.0), cache_dir="/x", num_workers=4)) == k
    assert preset_key(DataConfig(modality="mri", mri_percentiles=(1.0, 99.0))) != preset_key(
        DataConfig(modality="mri")
    )


@pytest.mark.parametrize(
    "cfg, key",
    [
        (DataConfig(modality="pet"), "data.modality"),
        (DataConfig(hu_window=(100.0, -100.0)), "data.hu_window"),
        (DataConfig(mri_percentiles=(99.0, 1.0)), "data.mri_percentiles"),
        (DataConfig(spacing=(1.0, 0.0, 1.0)), "data.spacing"),
    ],
)
def test_bad_config(cfg, key):
    with pytest.raises(ConfigError, match=key):
        preset_key(cfg)
