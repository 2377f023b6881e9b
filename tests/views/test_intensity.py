"""MRI intensity augmentation (views/intensity.py): gamma, bias field, gain, in normalised terms."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
from numpy.polynomial import legendre

from anatssl.config.schema import DataConfig
from anatssl.data.presets import modality_warnings
from anatssl.errors import ConfigError
from anatssl.runs import load_pretrain_config
from anatssl.views.intensity import MRIIntensity, mri_intensity


def _smooth_positive(shape: tuple[int, int, int] = (24, 20, 16), seed: int = 0) -> np.ndarray:
    """(1, X, Y, Z) intensities in (0.05, 1]: every voxel > 0, so ratios are defined everywhere."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 1.0, size=(1, *shape)).astype(np.float32)


def test_hand_computed_gamma_and_gain() -> None:
    # gamma 2 fixed, no field, gain 1.5: x -> ((x - 0) / 1) ** 2 * 1 + 0, then * 1.5
    x = np.array([0.0, 0.25, 0.5, 1.0, 0.0, 0.25, 0.5, 1.0], np.float32).reshape(1, 2, 2, 2)
    aug = MRIIntensity(gamma=(2.0, 2.0), bias_field=0.0, contrast=(1.5, 1.5))
    out = aug(x, np.random.default_rng(0))
    want = np.array([0.0, 0.0625, 0.25, 1.0] * 2, np.float32).reshape(1, 2, 2, 2) * 1.5
    np.testing.assert_allclose(out, want, atol=1e-6)


def test_gamma_is_monotone_per_channel_and_keeps_the_range() -> None:
    x = np.repeat(_smooth_positive(), 2, axis=0)  # two identical channels
    aug = MRIIntensity(gamma=(0.5, 2.0), bias_field=0.0, contrast=(1.0, 1.0))
    for seed in range(5):
        out = aug(x, np.random.default_rng(seed))
        for c in range(2):
            order = np.argsort(x[c].ravel(), kind="stable")
            assert np.all(np.diff(out[c].ravel()[order]) >= -1e-6), "gamma must keep the order of intensities"
            assert out[c].min() == pytest.approx(x[c].min(), abs=1e-6)
            assert out[c].max() == pytest.approx(x[c].max(), abs=1e-5)
        assert not np.allclose(out[0], out[1]), "each channel (sequence) draws its own gamma"


def test_bias_field_is_smooth_positive_and_multiplicative() -> None:
    x = _smooth_positive()
    aug = MRIIntensity(gamma=(1.0, 1.0), bias_field=0.05, contrast=(1.0, 1.0))
    out = aug(x, np.random.default_rng(3))
    ratio = out / x
    assert np.all(ratio > 0)
    # multiplicative: one field, whatever the image (an image of ones with the same rng shows it)
    field = aug(np.ones_like(x), np.random.default_rng(3))
    np.testing.assert_allclose(ratio, field, rtol=1e-5)
    # smooth: log(field) is a Legendre polynomial of total degree <= 3 over the crop (20 terms)
    shape = x.shape[1:]
    coords = [np.linspace(-1, 1, n) for n in shape]
    cols = []
    for i, j, k in itertools.product(range(4), repeat=3):
        if i + j + k <= 3:
            basis = [legendre.legval(c, np.eye(4)[d]) for c, d in zip(coords, (i, j, k))]
            cols.append(np.einsum("x,y,z->xyz", *basis).ravel())
    a = np.stack(cols, 1)
    log_field = np.log(field[0]).ravel().astype(np.float64)
    coef, *_ = np.linalg.lstsq(a, log_field, rcond=None)
    assert np.abs(a @ coef - log_field).max() < 1e-4
    assert log_field.std() > 0.01, "the field must vary across the crop"
    assert 0.5 < field.min() and field.max() < 2.0
    # background stays background
    x0 = x.copy()
    x0[:, :4] = 0.0
    assert np.all(aug(x0, np.random.default_rng(3))[:, :4] == 0.0)


def test_bias_field_default_strength() -> None:
    """The documented size of the default field: factors of about 0.82-1.22 across a 32^3 crop."""
    aug = MRIIntensity()
    rng = np.random.default_rng(0)
    fields = [aug.bias((32, 32, 32), rng) for _ in range(60)]
    lo, hi = np.median([f.min() for f in fields]), np.median([f.max() for f in fields])
    assert 0.72 < lo < 0.9 and 1.1 < hi < 1.35, (lo, hi)


def test_same_rng_same_output_and_draws_do_not_depend_on_settings() -> None:
    x = _smooth_positive()
    aug = MRIIntensity()
    a, b = aug(x, np.random.default_rng(1)), aug(x, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, aug(x, np.random.default_rng(2)))
    for off in (MRIIntensity(gamma=(1.0, 1.0), bias_field=0.0, contrast=(1.0, 1.0)), aug):
        rng = np.random.default_rng(5)
        off(x, rng)
        assert rng.random() == pytest.approx(_after_one_call(x))


def _after_one_call(x: np.ndarray) -> float:
    rng = np.random.default_rng(5)
    MRIIntensity()(x, rng)
    return float(rng.random())


def test_neutral_settings_leave_the_image() -> None:
    x = _smooth_positive()
    off = MRIIntensity(gamma=(1.0, 1.0), bias_field=0.0, contrast=(1.0, 1.0))
    np.testing.assert_array_equal(off(x, np.random.default_rng(0)), x)


@pytest.mark.parametrize(
    "kwargs",
    [{"gamma": (0.0, 1.0)}, {"gamma": (1.5, 0.7)}, {"bias_field": -0.1}, {"contrast": (1.1, 0.9)}],
)
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        MRIIntensity(**kwargs)


def test_built_from_the_data_section() -> None:
    assert mri_intensity(DataConfig()) is None  # CT: no MRI augmentation, views unchanged
    got = mri_intensity(
        DataConfig(modality="mri", mri_gamma=(0.8, 1.2), mri_bias_field=0.1, mri_contrast=(1, 1))
    )
    assert got == MRIIntensity(gamma=(0.8, 1.2), bias_field=0.1, contrast=(1, 1))


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.mri_gamma=[1.4,0.7]", "data.mri_gamma"),
        ("data.mri_gamma=[0,1]", "data.mri_gamma"),
        ("data.mri_contrast=[1.1,0.9]", "data.mri_contrast"),
        ("data.mri_bias_field=-0.1", "data.mri_bias_field"),
    ],
)
def test_bad_mri_settings_are_refused_when_the_config_is_built(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_pretrain_config("simmim", "tiny", None, ["data.modality=mri", override])


def test_settings_of_the_other_modality_are_reported() -> None:
    assert modality_warnings(DataConfig(modality="mri")) == []
    assert modality_warnings(DataConfig()) == []
    (line,) = modality_warnings(DataConfig(modality="mri", hu_window=(-125.0, 225.0)))
    assert "data.hu_window=[-125.0, 225.0]" in line and "ignored with data.modality=mri" in line
    (line,) = modality_warnings(DataConfig(mri_gamma=(0.5, 2.0)))
    assert "data.mri_gamma" in line and "ignored with data.modality=ct" in line


def test_hu_window_with_mri_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        load_pretrain_config("alice", "tiny", None, ["data.modality=mri", "alice.pairing=random"])
    lines = [r.getMessage() for r in caplog.records if "hu_window" in r.getMessage()]
    assert len(lines) == 1 and "is a CT (HU) setting and is ignored" in lines[0]  # alice_tiny's window
