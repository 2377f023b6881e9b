"""Alice's views: crops around matched points, zero padding, masks, partners, the embedding cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from anatssl.anatomy.cache import CACHE_FORMAT, MANIFEST, EmbeddingCache
from anatssl.anatomy.embedding import EmbeddingMap
from anatssl.anatomy.pairing import PairMiner
from anatssl.data.volume import Volume
from anatssl.engine.data import collate
from anatssl.errors import DataError
from anatssl.views.alice import AliceViews
from anatssl.views.crops import crop_around as _crop_around

KEYS = {"q", "k", "q_mask", "k_mask", "pair_score", "pair_accepted", "p_a", "p_b"}


class Source:
    def __init__(self, volumes: list[Volume]) -> None:
        self.volumes = volumes

    def __len__(self) -> int:
        return len(self.volumes)

    def load(self, index: int) -> Volume:
        return self.volumes[index]


def _ball(affine: np.ndarray, shape: tuple[int, int, int], path: str, centre_mm: np.ndarray) -> Volume:
    vol = Volume(np.zeros((1, *shape), np.float32), affine, path)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    d = np.linalg.norm(vol.voxel_to_world(grid) - centre_mm, axis=-1)
    vol.image[0] = np.clip(1.0 - d / 40.0, 0.0, 1.0)  # a soft ball: intensity encodes the distance
    return vol


def _embedding(vol: Volume, dim: int = 32) -> EmbeddingMap:
    """Ideal embeddings: random Fourier features of the world position (all subjects share the anatomy)."""
    rng = np.random.default_rng(0)
    maps, affs = [], []
    for stride, scale in ((2, 6.0), (8, 25.0)):
        w, b = rng.normal(0, 1 / scale, (dim // 2, 3)), rng.uniform(0, 2 * np.pi, dim // 2)
        m = np.diag([float(stride)] * 3 + [1.0])
        m[:3, 3] = (stride - 1) / 2
        aff = vol.affine @ m
        shape = [-(-n // stride) for n in vol.spatial_shape]
        g = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
        ph = EmbeddingMap.grid_to_world(aff, g) @ w.T + b
        feat = np.concatenate([np.cos(ph), np.sin(ph)], -1) / np.sqrt(dim // 2)
        maps.append(np.moveaxis(feat, -1, 0).astype(np.float16))
        affs.append(aff)
    return EmbeddingMap(maps[0], maps[1], affs[0], affs[1], {})


def _write_cache(root: Path, volumes: list[Volume]) -> None:
    """A cache directory as `anatssl embed` lays it out (manifest + one stamped entry per scan)."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": CACHE_FORMAT,
        "version": 1,
        "model_run": str(root / "no_such_run"),
        "model_hash": "m0",
        "preset_hash": "p0",
    }
    (root / MANIFEST).write_text(json.dumps(manifest))
    cache = EmbeddingCache(root)
    for v in volumes:
        cache.put(v.path, _embedding(v), "m0", "p0")


@pytest.fixture
def subjects(tmp_path: Path) -> list[Volume]:
    centre_a = np.array([40.0, 40, 36])
    a = _ball(np.diag([2.0, 2.0, 2.0, 1.0]), (40, 40, 36), str(tmp_path / "a.nii.gz"), centre_a)
    aff_b = np.diag([1.5, 1.5, 2.5, 1.0])
    aff_b[:3, 3] = [-4.0, 2.0, -3.0]
    b = _ball(aff_b, (56, 52, 32), str(tmp_path / "b.nii.gz"), np.array([38.0, 42, 35]))
    for v in (a, b):
        Path(v.path).write_bytes(v.image.tobytes())  # a file to hash (the cache stamps entries with it)
    return [a, b]


def crop_around(img: np.ndarray, center: np.ndarray, size: int) -> np.ndarray:
    return _crop_around(img, center, (size,) * 3)[0]  # the crop Alice's views cut


def test_crop_around_centres_and_zero_pads() -> None:
    img = np.arange(10 * 12 * 8, dtype=np.float32).reshape(1, 10, 12, 8) + 1
    c = crop_around(img, np.array([5, 6, 4]), 4)
    assert c.shape == (1, 4, 4, 4)
    assert c[0, 2, 2, 2] == img[0, 5, 6, 4]  # voxel size // 2 is the centre
    edge = crop_around(img, np.array([0, 11, 7]), 4)
    assert edge[0, 2, 2, 2] == img[0, 0, 11, 7]
    assert (edge[0, :2] == 0).all() and (edge[0, :, 3:] == 0).all() and (edge[0, :, :, 3:] == 0).all()
    assert (edge[0, 2:, :3, :3] > 0).all()
    assert (crop_around(img, np.array([100, 100, 100]), 4) == 0).all()


def test_random_pairing_views_and_batch_of_different_shapes(subjects: list[Volume]) -> None:
    views = AliceViews(crop_size=32, pairing="random", miner=PairMiner(border_margin=4), mask_patch=16)
    src = Source(subjects)
    samples = [views(v, np.random.default_rng(i), src) for i, v in enumerate(subjects)]
    for s in samples:
        assert set(s) == KEYS
        assert s["q"].shape == s["k"].shape == (1, 32, 32, 32) and s["q"].dtype == torch.float32
        assert s["q_mask"].shape == (32, 32, 32) and s["q_mask"].dtype == torch.bool
        assert s["q_mask"].float().mean() == pytest.approx(0.75)
        assert not torch.equal(s["q_mask"], s["k_mask"])  # independent per crop
    batch = collate(samples)
    assert batch["q"].shape == (2, 1, 32, 32, 32) and batch["p_a"].shape == (2, 3)
    # seeded: the same rng gives the same sample
    again = views(subjects[0], np.random.default_rng(0), src)
    assert all(torch.equal(again[k], samples[0][k]) for k in ("q", "k", "q_mask", "p_a", "p_b"))


def test_partner_is_another_volume(subjects: list[Volume]) -> None:
    views = AliceViews(crop_size=32, pairing="random", miner=PairMiner(border_margin=4))
    rng = np.random.default_rng(0)
    src = Source(subjects)
    assert all(views.partner(subjects[0], rng, src).path == subjects[1].path for _ in range(10))
    with pytest.raises(DataError, match="at least 2 training volumes"):
        views.partner(subjects[0], rng, Source(subjects[:1]))
    same = AliceViews(crop_size=32, pairing="same", miner=PairMiner(border_margin=4))
    s = same(subjects[0], rng, Source(subjects[:1]))
    assert torch.equal(s["p_a"], s["p_b"])


def test_sam_pairing_through_the_cache_matches_anatomy(subjects: list[Volume], tmp_path: Path) -> None:
    _write_cache(tmp_path / "emb", subjects)
    views = AliceViews(
        crop_size=32,
        pairing="sam",
        embeddings_dir=str(tmp_path / "emb"),
        miner=PairMiner(border_margin=4),
        augment=False,
    )
    a, b = subjects
    src = Source(subjects)
    for seed in range(5):
        s = views(a, np.random.default_rng(seed), src)
        assert float(s["pair_accepted"]) == 1.0 and float(s["pair_score"]) > 0.7
        err = np.linalg.norm(a.voxel_to_world(s["p_a"].numpy()) - b.voxel_to_world(s["p_b"].numpy()))
        assert err < 4.0  # within about one fine cell of B (3 mm x 3 mm x 5 mm)
        # the unaugmented crops are the scans around the matched voxels
        assert s["q"][0, 16, 16, 16] == a.image[0][tuple(s["p_a"].numpy())]


def test_missing_or_stale_cache_entry_is_reported(subjects: list[Volume], tmp_path: Path) -> None:
    _write_cache(tmp_path / "emb", subjects[:1])
    views = AliceViews(
        crop_size=32, pairing="sam", embeddings_dir=str(tmp_path / "emb"), miner=PairMiner(border_margin=4)
    )
    with pytest.raises(DataError, match=r"no embedding of .*b\.nii\.gz"):
        views(subjects[0], np.random.default_rng(0), Source(subjects))
    # the cache was re-made with another SAM model: entries computed with the old one are stale
    manifest = json.loads((tmp_path / "emb" / MANIFEST).read_text())
    (tmp_path / "emb" / MANIFEST).write_text(json.dumps({**manifest, "model_hash": "m1"}))
    fresh = AliceViews(
        crop_size=32, pairing="sam", embeddings_dir=str(tmp_path / "emb"), miner=PairMiner(border_margin=4)
    )
    with pytest.raises(DataError, match=r"a\.nii\.gz .* is stale \(computed with other model weights\)"):
        fresh.embedding(subjects[0])
    # a changed scan file is the start-up check's job (one hash per scan, not one per worker):
    # tests/methods/test_alice.py::test_stage0_trains_sam_caches_embeddings_and_detects_stale_ones


def test_views_pickle_without_caches(subjects: list[Volume], tmp_path: Path) -> None:
    import pickle

    _write_cache(tmp_path / "emb", subjects)
    views = AliceViews(
        crop_size=32, pairing="sam", embeddings_dir=str(tmp_path / "emb"), miner=PairMiner(border_margin=4)
    )
    views(subjects[0], np.random.default_rng(0), Source(subjects))
    clone = pickle.loads(pickle.dumps(views))
    assert clone._cache is None and not clone._checked and not clone.miner._index
    s = clone(subjects[0], np.random.default_rng(0), Source(subjects))
    assert torch.equal(s["p_b"], views(subjects[0], np.random.default_rng(0), Source(subjects))["p_b"])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="pairing"):
        AliceViews(pairing="nearest")
    with pytest.raises(ValueError, match="multiple of mask_patch"):
        AliceViews(crop_size=40, pairing="random")
    with pytest.raises(ValueError, match="embeddings directory"):
        AliceViews(pairing="sam")
