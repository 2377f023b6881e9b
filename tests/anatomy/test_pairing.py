"""Alice's pair miner: exact geometry, and with *ideal* embeddings it finds the true corresponding point.

Ideal embeddings: each subject is a deformed copy of one anatomy (anatomical coordinate ``u`` = an
affine map of world mm); the embedding at a point is a random-Fourier-feature vector of ``u``
(``[cos(Wu + b), sin(Wu + b)] / sqrt(D/2)``, unit norm by construction, inner product ~ a Gaussian
kernel of the anatomical distance). So the best match of p is the point with the same ``u`` and any
error comes from the miner's geometry (grids, strides, spacings, a flipped axis), not from SAM.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anatssl.anatomy.embedding import EmbeddingMap
from anatssl.anatomy.pairing import (
    PairMiner,
    check_coverage,
    grid_to_voxel,
    sample_embedding,
    voxel_to_grid,
)
from anatssl.data.volume import Volume
from anatssl.errors import DataError

CENTRE = np.array([48.0, 48.0, 48.0])  # anatomical coordinates (mm) of the body centre
RADIUS = 30.0


class Subject:
    """A volume whose anatomy is ``u = scale * (world - shift)``; a ball of radius 30 mm is the body."""

    def __init__(
        self, affine: np.ndarray, shape: tuple[int, int, int], scale: float, shift: np.ndarray, path: str
    ) -> None:
        self.scale, self.shift = scale, np.asarray(shift, dtype=np.float64)
        grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
        vol = Volume(np.zeros((1, *shape), np.float32), affine, path)
        u = self.to_anat(vol.voxel_to_world(grid))
        vol.image[0] = (np.linalg.norm(u - CENTRE, axis=-1) < RADIUS).astype(np.float32)
        self.volume = vol

    def to_anat(self, world: np.ndarray) -> np.ndarray:
        return self.scale * (world - self.shift)

    def to_world(self, u: np.ndarray) -> np.ndarray:
        return u / self.scale + self.shift


def _rff(u: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., 3) anatomical mm -> (..., D) unit-norm random Fourier features."""
    phase = u @ w.T + b
    return np.concatenate([np.cos(phase), np.sin(phase)], -1) / np.sqrt(w.shape[0])


def _grid_affine(vol_affine: np.ndarray, stride: int) -> np.ndarray:
    """Grid index g sits on voxel stride * g + (stride - 1) / 2 (SAM's block-centre convention)."""
    m = np.diag([float(stride)] * 3 + [1.0])
    m[:3, 3] = (stride - 1) / 2
    return vol_affine @ m


def ideal_embedding(
    s: Subject, fine_stride: int = 2, coarse_stride: int = 8, dim: int = 64, seed: int = 0
) -> EmbeddingMap:
    rng = np.random.default_rng(seed)  # the same features for every subject
    w_f, b_f = rng.normal(0, 1 / 6.0, (dim // 2, 3)), rng.uniform(0, 2 * np.pi, dim // 2)
    w_c, b_c = rng.normal(0, 1 / 25.0, (dim // 2, 3)), rng.uniform(0, 2 * np.pi, dim // 2)
    maps, affs = [], []
    for stride, w, b in ((fine_stride, w_f, b_f), (coarse_stride, w_c, b_c)):
        aff = _grid_affine(s.volume.affine, stride)
        shape = [-(-n // stride) for n in s.volume.spatial_shape]
        g = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
        feat = _rff(s.to_anat(EmbeddingMap.grid_to_world(aff, g)), w, b)
        maps.append(np.moveaxis(feat, -1, 0).astype(np.float16))
        affs.append(aff)
    return EmbeddingMap(maps[0], maps[1], affs[0], affs[1], {"path": s.volume.path})


@pytest.fixture(scope="module")
def subjects() -> tuple[Subject, Subject]:
    a = Subject(np.diag([2.0, 2.0, 2.0, 1.0]), (48, 48, 48), 1.0, np.zeros(3), "a.nii.gz")
    aff_b = np.array([[-1.5, 0, 0, 90.0], [0, 1.5, 0, 0], [0, 0, 1.5, 0], [0, 0, 0, 1]])  # x flipped
    b = Subject(aff_b, (60, 56, 64), 1.1, np.array([2.0, -2.0, 4.0]), "b.nii.gz")
    return a, b


def _error_mm(a: Subject, b: Subject, va: np.ndarray, vb: np.ndarray) -> float:
    truth = b.to_world(a.to_anat(a.volume.voxel_to_world(va)))
    return float(np.linalg.norm(b.volume.voxel_to_world(vb) - truth))


def test_voxel_grid_round_trip_is_exact(subjects: tuple[Subject, Subject]) -> None:
    _, b = subjects
    emb = ideal_embedding(b)
    ijk = np.array([[0, 0, 0], [59, 55, 63], [17, 3, 40]], dtype=np.float64)
    for aff, stride in ((emb.fine_affine, 2), (emb.coarse_affine, 8)):
        g = voxel_to_grid(b.volume, aff, ijk)
        np.testing.assert_allclose(grid_to_voxel(b.volume, aff, g), ijk, atol=1e-9)
        np.testing.assert_allclose(g, (ijk - (stride - 1) / 2) / stride, atol=1e-9)


def test_sample_embedding_hits_grid_values_and_stays_unit_norm(subjects: tuple[Subject, Subject]) -> None:
    a, _ = subjects
    emb = ideal_embedding(a)
    got = sample_embedding(emb.fine, np.array([[3.0, 4.0, 5.0], [3.5, 4.25, 5.0]]))
    np.testing.assert_allclose(got[0], emb.fine[:, 3, 4, 5].astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_miner_finds_true_point_and_beats_random(subjects: tuple[Subject, Subject]) -> None:
    a, b = subjects
    ea, eb = ideal_embedding(a), ideal_embedding(b)
    check_coverage(a.volume, ea)
    check_coverage(b.volume, eb)
    miner = PairMiner(threshold=0.7, border_margin=8)
    rng = np.random.default_rng(0)
    sam_err, rnd_err = [], []
    for _ in range(20):
        pair = miner.pair(a.volume, b.volume, rng, "sam", ea, eb)
        assert pair.accepted and pair.score > 0.7 and pair.tries >= 1
        assert a.volume.image[0][tuple(pair.voxel_a)] > 0  # query in the foreground
        sam_err.append(_error_mm(a, b, pair.voxel_a, pair.voxel_b))
        r = miner.pair(a.volume, b.volume, rng, "random")
        rnd_err.append(_error_mm(a, b, r.voxel_a, r.voxel_b))
    # queries sit on A's 2 mm voxel nearest a fine-cell centre, matches on B's 1.5 mm voxels: ~1-2 mm
    assert np.mean(sam_err) < 3.0, sam_err  # measured: 1.7 mm mean over 100 pairs
    assert np.mean(rnd_err) > 5 * np.mean(sam_err), (np.mean(sam_err), np.mean(rnd_err))


def test_chunking_does_not_change_the_result(subjects: tuple[Subject, Subject]) -> None:
    a, b = subjects
    ea, eb = ideal_embedding(a), ideal_embedding(b)
    for threshold in (0.7, 1.01):  # 1.01: nothing is accepted, the best of 100 tries is kept
        results = []
        for chunk in (1, 7, 100):
            miner = PairMiner(threshold=threshold, border_margin=8, chunk=chunk)
            results.append(miner.mine(a.volume, ea, b.volume, eb, np.random.default_rng(5)))
        for r in results[1:]:
            assert (r.voxel_a == results[0].voxel_a).all() and (r.voxel_b == results[0].voxel_b).all()
            assert r.tries == results[0].tries and r.accepted == results[0].accepted
            assert r.score == pytest.approx(results[0].score, abs=1e-5)
    assert not results[0].accepted and results[0].tries == 100


def test_same_and_random_modes(subjects: tuple[Subject, Subject]) -> None:
    a, b = subjects
    miner = PairMiner(border_margin=8)
    same = miner.pair(a.volume, a.volume, np.random.default_rng(0), "same")
    assert (same.voxel_a == same.voxel_b).all()
    r = miner.pair(a.volume, b.volume, np.random.default_rng(0), "random")
    assert b.volume.image[0][tuple(r.voxel_b)] > 0
    assert np.isnan(r.score)
    with pytest.raises(ValueError, match="pairing mode"):
        miner.pair(a.volume, b.volume, np.random.default_rng(0), "nearest")


def test_embedding_of_another_geometry_is_rejected(subjects: tuple[Subject, Subject]) -> None:
    a, b = subjects
    # the entry was computed on another field of view (e.g. a scan of the chest, not the abdomen)
    aff = b.volume.affine.copy()
    aff[2, 3] += 60.0
    other = Subject(aff, (60, 56, 64), 1.1, np.array([2.0, -2.0, 4.0]), "b.nii.gz")
    with pytest.raises(DataError, match=r"embedding of b\.nii\.gz does not cover the scan"):
        check_coverage(b.volume, ideal_embedding(other))


def test_embedding_of_a_resampled_larger_copy_is_accepted(subjects: tuple[Subject, Subject]) -> None:
    a, _ = subjects
    # SAM embedded the same scan at 4 mm with a wider field of view: it covers A, so pairing may use it
    big = Subject(np.diag([4.0, 4.0, 4.0, 1.0]), (26, 26, 26), 1.0, np.zeros(3), "a.nii.gz")
    check_coverage(a.volume, ideal_embedding(big))
    # a crop of A (half the scan) does not cover it
    half = Volume(a.volume.image[:, :24], a.volume.affine, "a.nii.gz")
    with pytest.raises(DataError, match="does not cover"):
        check_coverage(a.volume, ideal_embedding(Subject(half.affine, (24, 48, 48), 1.0, np.zeros(3), "a")))


def test_volume_without_foreground_is_rejected() -> None:
    empty = Volume(np.zeros((1, 32, 32, 32), np.float32), np.eye(4), "empty.nii.gz")
    with pytest.raises(DataError, match=r"empty\.nii\.gz: no voxel above the foreground threshold"):
        PairMiner().foreground(empty)


def test_margin_shrinks_on_small_axes() -> None:
    img = np.zeros((1, 40, 40, 10), np.float32)
    img[0, 18:22, 18:22, 4:6] = 1  # 32 voxels inside the margins
    img[0, 2, 20, 5] = 1  # too close to the x border (margin 16)
    img[0, 20, 20, 1] = 1  # z has 10 slices: the margin shrinks to 4, slice 1 is still excluded
    fg = PairMiner(border_margin=16).foreground(Volume(img, np.eye(4), "small.nii.gz"))
    assert len(fg) == 32 and fg[:, 2].min() >= 4 and fg[:, 0].min() >= 16


def test_refinement_equals_full_resolution_upsampling(subjects: tuple[Subject, Subject]) -> None:
    """The refined voxel is the argmax of the similarity interpolated at every voxel of B."""
    from anatssl.anatomy.pairing import _FineIndex, _trilinear_table, refine_to_voxel

    a, b = subjects
    ea, eb = ideal_embedding(a), ideal_embedding(b)
    index = _FineIndex(eb)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in b.volume.spatial_shape], indexing="ij"), -1)
    vox = grid.reshape(-1, 3)
    idx, w = _trilinear_table(voxel_to_grid(b.volume, eb.fine_affine, vox), eb.fine_shape)
    for p in (np.array([24, 24, 24]), np.array([15, 30, 20])):
        fq = sample_embedding(ea.fine, voxel_to_grid(a.volume, ea.fine_affine, p[None]))
        cq = sample_embedding(ea.coarse, voxel_to_grid(a.volume, ea.coarse_affine, p[None]))
        sim = index.similarity(fq, cq)[:, 0]
        got, score = refine_to_voxel(sim, int(sim.argmax()), b.volume, eb)
        full = (sim[idx] * w).sum(axis=1)
        assert score == pytest.approx(float(full.max()), abs=1e-6)
        assert (got == vox[int(full.argmax())]).all()


@pytest.mark.slow
def test_miner_with_a_trained_sam_beats_random_pairing(tmp_path: Path) -> None:
    """Integration: train SAM (tiny preset, 400 steps, ~15 min on a busy CPU) on 6 synthetic subjects,
    embed them, match the landmarks of each subject in every other one.

    Measured (seed 0): 128.0 mm mean error vs 172.2 mm for random pairing (n = 642); SAM's own
    ``evaluate_correspondence`` gives 128.7 mm on the same run, i.e. at this budget SAM itself is the
    limit, not the miner (the miner picks a maximum of SAM's own similarity map: checked below).

    Queries are A's landmarks (so the truth is known); the error is the distance from the match to the
    same landmark of B, against a random foreground voxel of B (``random`` pairing).
    """
    import nibabel as nib

    from anatssl.anatomy.cache import EmbeddingCache, load_preprocessed
    from anatssl.anatomy.matching import iter_similarity
    from anatssl.anatomy.pairing import _FineIndex, query_vectors, refine_to_voxel, snap_to_cells
    from anatssl.data.synthetic import make_subject
    from anatssl.engine.trainer import pretrain
    from anatssl.runs import load_pretrain_config
    from anatssl.runs.embedding import embed_dataset

    data = tmp_path / "data"
    data.mkdir()
    landmarks = {}
    for i in range(6):
        s = make_subject(i)  # the default phantom: 96^3 at 4 mm
        path = data / f"case_{i}.nii.gz"
        nib.save(nib.Nifti1Image(s.image_hu.astype(np.int16), s.affine), str(path))
        landmarks[str(path)] = {k: np.asarray(v) for k, v in s.landmarks.items()}
    sam_cfg = load_pretrain_config(
        "sam", "tiny", None, ["train.max_steps=400", "train.progress=false", "train.tensorboard=false"]
    )
    pretrain(sam_cfg, str(data), tmp_path / "sam")
    embed_dataset(tmp_path / "sam", data, tmp_path / "emb", progress=False)
    cache = EmbeddingCache(tmp_path / "emb")
    alice_data = load_pretrain_config("alice", "tiny").data
    vols = {p: load_preprocessed(p, alice_data) for p in landmarks}
    miner = PairMiner(border_margin=0)
    rng = np.random.default_rng(0)
    sam_err, rnd_err, gap = [], [], []
    paths = sorted(vols)
    for pa in paths:
        for pb in paths:
            if pa == pb:
                continue
            va, vb = vols[pa], vols[pb]
            ea, eb = cache.get(pa), cache.get(pb)
            index = _FineIndex(eb)
            fg_b = miner.foreground(vb)
            for name, lm_a in landmarks[pa].items():
                if name not in landmarks[pb]:
                    continue
                p = snap_to_cells(va, ea, np.rint(va.world_to_voxel(lm_a)).astype(np.int64)[None])[0]
                q_true = vb.world_to_voxel(landmarks[pb][name])
                inside = all(0 <= v < s for v, s in zip(p, va.spatial_shape))
                if not inside or not all(0 <= v < s for v, s in zip(q_true, vb.spatial_shape)):
                    continue
                fq, cq = query_vectors(va, ea, p[None])
                sim = index.similarity(fq, cq)[:, 0]
                q, _ = refine_to_voxel(sim, int(sim.argmax()), vb, eb)
                # SAM's own similarity map for the same query: our pick is (one of) its maxima
                theirs = next(iter_similarity(ea, eb, va.voxel_to_world(p)[None].astype(np.float64)))[0]
                gap.append(float(theirs.max()) - float(theirs[int(sim.argmax())]))
                sam_err.append(np.linalg.norm(vb.voxel_to_world(q) - landmarks[pb][name]))
                r = fg_b[rng.integers(len(fg_b))]
                rnd_err.append(np.linalg.norm(vb.voxel_to_world(r) - landmarks[pb][name]))
    assert len(sam_err) >= 20
    print(
        f"trained SAM: mean landmark error {np.mean(sam_err):.1f} mm "
        f"(random pairing {np.mean(rnd_err):.1f} mm, n = {len(sam_err)})"
    )
    assert np.max(gap) < 1e-3  # the same maximum as SAM's matching (float16 maps: ~1e-4 apart)
    assert np.mean(sam_err) < 0.8 * np.mean(rnd_err)


def _geometry_only_embedding(vol: Volume, shift_mm: float = 0.0) -> EmbeddingMap:
    """An embedding entry with the geometry ``anatssl embed`` stamps on it for ``vol`` (SAM's strides 2 and
    8; features are irrelevant to the coverage check), its world box moved by ``shift_mm`` along z."""
    from anatssl.anatomy.sam_model import grid_affine

    aff = vol.affine.copy()
    aff[2, 3] += shift_mm
    grids = [tuple(-(-n // s) for n in vol.spatial_shape) for s in (2, 8)]
    return EmbeddingMap(
        fine=np.zeros((2, *grids[0]), np.float16),
        coarse=np.zeros((2, *grids[1]), np.float16),
        fine_affine=grid_affine(aff, 2),
        coarse_affine=grid_affine(aff, 8),
        meta={"volume_shape": list(vol.spatial_shape), "volume_affine": aff.tolist()},
    )


def test_sam_preset_foreground_crop_of_a_64_cube_scan_is_accepted(tmp_path: Path) -> None:
    """The benchmark's data (``anatssl synth --size 64``: 6 mm): SAM's preset embeds each scan at 10 mm,
    cropped to the body plus its margin, so the embedding is up to 28 mm short of the whole scan (more
    than one fine cell + one voxel, 26 mm) but covers where Alice draws queries; a shifted one does not."""
    from anatssl.data.io import read_volume
    from anatssl.data.presets import preprocess
    from anatssl.data.synthetic.writer import write_dataset
    from anatssl.runs.alice_stage0 import sam_stage0_config
    from anatssl.runs.resolve import load_pretrain_config

    write_dataset(tmp_path / "D", n=5, seed=0, size=64)
    scan = tmp_path / "D" / "imagesTr" / "synth_004.nii.gz"
    cfg = load_pretrain_config("alice", "tiny", None, ["data.hu_window=[-1000,1000]", "alice.crop_size=32"])
    vol = preprocess(read_volume(scan), cfg.data)  # what Alice crops from
    sam_vol = preprocess(read_volume(scan), sam_stage0_config(cfg).data)  # what SAM embedded
    assert sam_vol.spacing == pytest.approx((10.0, 10.0, 10.0)) and vol.spacing == pytest.approx((6.0,) * 3)
    emb = _geometry_only_embedding(sam_vol)
    # the whole scan is not covered (the old check refused this entry: 28.0 mm short > 26.0 mm) ...
    with pytest.raises(DataError, match=r"does not cover the scan: .*\(28\.0 mm short > 26\.0 mm\)"):
        check_coverage(vol, emb)
    # ... but the region Alice looks embeddings up for is
    miner = PairMiner(cfg.params.similarity_threshold, cfg.params.max_tries, cfg.params.border_margin)
    fg = miner.foreground(vol)
    check_coverage(vol, emb, fg)
    # an entry of another field of view (the same preprocessing, 200 mm away) is still refused
    with pytest.raises(DataError, match=r"synth_004\.nii\.gz does not cover the scan's query region"):
        check_coverage(vol, _geometry_only_embedding(sam_vol, 200.0), fg)
