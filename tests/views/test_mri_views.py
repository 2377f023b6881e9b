"""Every method's views with ``data.modality=mri`` on an MRI-like volume (positive intensities, percentile-
normalised): finite, in a sensible normalised range, changed by the MRI augmentation (gamma, bias field,
gain) and by nothing else, independently per view, and blind to the CT (HU) settings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from anatssl.config.schema import DataConfig
from anatssl.data.presets import preprocess
from anatssl.data.volume import Volume
from anatssl.methods import METHODS, SSLMethod, build_method
from anatssl.runs import load_pretrain_config
from anatssl.views import sam as sam_views
from anatssl.views.intensity import MRIIntensity
from engine_fixtures import SMALL_VIEWS

SMALL = SMALL_VIEWS
MRI = ["data.modality=mri"]
NEUTRAL = [*MRI, "data.mri_gamma=[1,1]", "data.mri_bias_field=0", "data.mri_contrast=[1,1]"]
AUGMENTED: dict[str, tuple[str, ...]] = {
    "swinssl": ("target1", "target2"),
    "simmim": ("x",),
    "s2dc": ("aug_full", "aug_crop"),
    "alice": ("q", "k"),
    "modelsgenesis": ("target",),
    "voco": ("bases", "crops"),
    "sam": ("view1", "view2"),
}
"""The outputs the MRI augmentation must change (others may hold them through a corruption)."""
UNTOUCHED = {"s2dc": ("src",)}
"""Float outputs that are clean crops by design and must not change."""
PAIRS = {"swinssl": ("target1", "target2"), "alice": ("q", "k"), "sam": ("view1", "view2")}


def t1_brain(seed: int, shape: tuple[int, int, int] = (72, 70, 48)) -> np.ndarray:
    """(1, X, Y, Z) raw T1-like head in scanner units (all >= 0, no absolute scale): white matter 800,
    grey matter 550, CSF/ventricles 200, scalp 900, skull 120, air ~Rician noise, a bias field."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum((g / s) ** 2 for g, s in zip(grid, rng.uniform(0.8, 0.9, 3))))
    img = np.zeros(shape)
    img[r < 1.0] = 900  # scalp
    img[r < 0.92] = 120  # skull
    img[r < 0.85] = 200  # CSF
    img[r < 0.8] = 550  # grey matter
    img[r < 0.6] = 800  # white matter
    vent = np.sqrt((grid[0] / 0.15) ** 2 + (grid[1] / 0.3) ** 2 + (grid[2] / 0.2) ** 2) < 1
    img[vent] = 200
    img = img * (1 + 0.2 * grid[0])  # the scanner's own bias field
    noise = rng.normal(0, 8, (2, *shape))
    img = np.sqrt((img + noise[0]) ** 2 + noise[1] ** 2)  # magnitude image: Rician, positive
    return img[None].astype(np.float32)


class MRISource:
    """Two percentile-normalised T1-like heads (``data.modality=mri`` preprocessing), 2 mm."""

    def __init__(self, data: DataConfig | None = None) -> None:
        cfg = data or DataConfig(modality="mri")
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
        self.volumes = [preprocess(Volume(t1_brain(s), affine, f"t1_{s}.nii.gz"), cfg) for s in range(2)]

    def __len__(self) -> int:
        return len(self.volumes)

    def load(self, index: int) -> Volume:
        return self.volumes[index]


@pytest.fixture(scope="module")
def source() -> MRISource:
    return MRISource()


def _build(name: str, extra: list[str]) -> SSLMethod:
    torch.manual_seed(0)
    return build_method(load_pretrain_config(name, "tiny", None, [*SMALL[name], *extra]))


def _arrays(views: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in views.items()}


def _views(name: str, extra: list[str], source: MRISource, seed: int = 0) -> dict[str, np.ndarray]:
    m = _build(name, extra)
    return _arrays(m.views(source.load(0), np.random.default_rng([seed, 0]), source))


def test_the_source_is_mri_like(source: MRISource) -> None:
    img = source.load(0).image
    assert img.min() >= 0 and img.max() <= 1 and np.isfinite(img).all()
    assert 0.3 < float(np.mean(img > 0.05)) < 0.9  # the head, and the air the foreground crop keeps
    assert np.prod(img.shape[1:]) < 72 * 70 * 48  # the foreground crop trims air on the percentile scale


@pytest.mark.parametrize("name", sorted(SMALL))
def test_mri_views_are_finite_in_range_and_changed_by_the_mri_augmentation_only(
    name: str, source: MRISource
) -> None:
    assert sorted(SMALL) == METHODS.names()
    for seed in (0, 1):
        aug, neutral = _views(name, MRI, source, seed), _views(name, NEUTRAL, source, seed)
        assert aug.keys() == neutral.keys()
        for key, a in aug.items():
            if a.dtype.kind == "f":
                assert np.isfinite(a).all() or key == "pair_score", key
                if a.ndim >= 3:  # images: a sensible normalised range (gain x field x [0, 1] + noise)
                    assert -0.3 <= a.min() and a.max() <= 2.0, (key, a.min(), a.max())
            if key in AUGMENTED[name]:
                diff = float(np.abs(a - neutral[key]).mean())
                assert diff > 0.005, f"{name}.{key}: the MRI augmentation changed nothing ({diff})"
            elif a.dtype.kind == "f" and a.ndim >= 3 and key not in UNTOUCHED.get(name, ()):
                continue  # corrupted inputs (in-painting noise ...) may or may not show it
            else:  # geometry, masks, targets, clean crops: same random choices as without the augmentation
                np.testing.assert_array_equal(a, neutral[key], err_msg=f"{name}.{key}")


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_each_view_gets_its_own_draw(name: str, source: MRISource) -> None:
    aug, neutral = _views(name, MRI, source), _views(name, NEUTRAL, source)
    first, second = PAIRS[name]

    def gain(key: str) -> float:
        fg = neutral[key] > 0.2
        return float(np.median(aug[key][fg] / neutral[key][fg]))

    assert abs(gain(first) - gain(second)) > 0.01, (gain(first), gain(second))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_modality_decides_the_augmentation(name: str) -> None:
    assert _build(name, []).views.mri is None  # CT: the views as they were
    mri = _build(name, [*MRI, "data.mri_gamma=[0.8,1.25]", "data.mri_bias_field=0.1"]).views.mri
    assert mri == MRIIntensity(gamma=(0.8, 1.25), bias_field=0.1, contrast=(0.9, 1.1))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_no_hu_setting_reaches_mri_views(name: str, source: MRISource) -> None:
    """With data.modality=mri a (wild) CT window changes neither the preprocessing nor any view."""
    wild = DataConfig(modality="mri", hu_window=(3000.0, 4000.0))
    other = MRISource(wild)
    for a, b in zip(source.volumes, other.volumes):
        np.testing.assert_array_equal(a.image, b.image)
    base = _views(name, MRI, source)
    moved = _views(name, [*MRI, "data.hu_window=[3000,4000]"], other)
    for key in base:
        np.testing.assert_array_equal(base[key], moved[key], err_msg=f"{name}.{key}")


def test_sam_tissue_remap_uses_the_mri_bands(source: MRISource, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[float, float], tuple[float, float]]] = []
    real = sam_views.tissue_remap

    def spy(x: np.ndarray, rng: np.random.Generator, shift: float, bands: int, centre, width) -> np.ndarray:
        calls.append((tuple(centre), tuple(width)))
        return real(x, rng, shift, bands, centre, width)

    monkeypatch.setattr(sam_views, "tissue_remap", spy)
    for extra, modality in (([], "ct"), (MRI, "mri")):
        calls.clear()
        m = _build("sam", extra)
        assert m.p.tissue_shift > 0  # the tiny preset turns the remap on
        m.views(source.load(0), np.random.default_rng(0), source)
        assert calls == [sam_views.TISSUE_BANDS[modality]] * 2, modality  # one remap per view
    ct_centres, _ = sam_views.TISSUE_BANDS["ct"]
    assert ct_centres == (0.45, 0.65)  # -100..300 HU: the CT band must not be what MRI gets
    assert sam_views.TISSUE_BANDS["mri"][0] != ct_centres


def test_sam_mri_preset(source: MRISource) -> None:
    cfg = load_pretrain_config("sam", "mri_tiny", None, [])
    assert cfg.data.modality == "mri" and tuple(cfg.data.spacing) == (4.0, 4.0, 4.0)
    # the settings measured on brain MRI (docs/results/real-mri.md): radii for the brain, combined mining
    p = cfg.params
    assert (p.radius_mm, p.coarse_radius_mm, p.mining_score) == (10.0, 25.0, "combined")
    m = build_method(cfg)
    assert m.views.mri is not None and m.views.tissue_range == sam_views.TISSUE_BANDS["mri"][0]
    vol = MRISource(cfg.data).load(0)  # the 2 mm heads resampled to 4 mm
    out = _arrays(m.views(vol, np.random.default_rng(0), source))
    assert out["valid"].sum() >= 50 and np.isfinite(out["view1"]).all()


def test_alice_stage0_sam_reads_mri_as_mri() -> None:
    """Alice's stage 0 trains SAM from a SAM preset (CT); an MRI Alice run hands it its MRI settings."""
    from anatssl.runs.alice_stage0 import sam_stage0_config

    over = ["data.modality=mri", "data.mri_percentiles=[1,99]", "data.mri_bias_field=0.1"]
    sam = sam_stage0_config(load_pretrain_config("alice", "tiny", None, over)).data
    assert sam.modality == "mri" and tuple(sam.mri_percentiles) == (1.0, 99.0) and sam.mri_bias_field == 0.1
    assert tuple(sam.spacing) == (10.0, 10.0, 10.0)  # SAM's own spacing (sam_tiny), as for CT
    ct = sam_stage0_config(load_pretrain_config("alice", "tiny", None, [])).data
    assert ct.modality == "ct" and tuple(ct.hu_window) == (-1000.0, 1000.0)  # sam_tiny's window, as before
