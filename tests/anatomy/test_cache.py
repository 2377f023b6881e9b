"""The SAM embedding cache: round trip, skip-if-fresh, stale / missing / other-geometry errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sam_fixtures import make_sam_run, write_phantom

from anatssl.anatomy.cache import load_preprocessed
from anatssl.anatomy.embedding import EmbeddingMap
from anatssl.engine.checkpoint import atomic_torch_save, load_checkpoint
from anatssl.errors import CheckpointError, DataError
from anatssl.runs import load_pretrain_config
from anatssl.runs.embedding import embed_dataset, embedding_cache
from anatssl.runs.embedding import load_sam as load_sam_run


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    run = make_sam_run(tmp_path / "run")
    data = tmp_path / "data"
    data.mkdir()
    scans = [write_phantom(data / f"case_{i}.nii.gz", seed=i, shift=0.3 * i) for i in range(2)]
    return run, data, scans


def test_embed_get_round_trip_and_skip(setup: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    run, data, scans = setup
    out = tmp_path / "emb"
    assert embed_dataset(run, data, out, progress=False) == {"computed": 2, "skipped": 0}
    assert embed_dataset(run, data, out, progress=False) == {"computed": 0, "skipped": 2}
    cache = embedding_cache(out)
    emap = cache.get(scans[1])
    assert emap.fine.dtype == np.float16 and emap.coarse.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(emap.fine.astype(np.float32), axis=0), 1.0, atol=2e-3)
    vol = load_preprocessed(scans[1], load_pretrain_config("sam", "tiny").data)
    assert emap.meta["volume_shape"] == list(vol.spatial_shape)
    assert emap.fine_shape == tuple(-(-s // 2) for s in vol.spatial_shape)
    # the fine grid is the volume's grid at stride 2, block-centred
    np.testing.assert_allclose(
        EmbeddingMap.grid_to_world(emap.fine_affine, [1, 2, 3]),
        vol.voxel_to_world([2.5, 4.5, 6.5]),
        atol=1e-9,
    )
    cache.get(scans[1], volume=vol)  # same geometry: fine
    assert emap.fine_mask is not None and emap.fine_mask.shape == emap.fine_shape
    assert emap.fine_mask.any() and not emap.fine_mask.all()  # body and air
    # the stored embedding equals a fresh computation
    net, _, _ = load_sam_run(run)
    from anatssl.anatomy.cache import embed_volume

    again = embed_volume(net, vol)
    np.testing.assert_allclose(again.fine.astype(np.float32), emap.fine.astype(np.float32), atol=2e-3)
    # no temp files left behind
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_stale_and_missing(setup: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    run, data, scans = setup
    out = tmp_path / "emb"
    with pytest.raises(DataError, match="is not a SAM embedding cache"):
        embedding_cache(out).get(scans[0])
    embed_dataset(run, data, out, progress=False)
    with pytest.raises(DataError, match=r"no embedding of .*other\.nii\.gz"):
        embedding_cache(out).get(tmp_path / "other.nii.gz")
    # the scan changes -> stale
    write_phantom(scans[0], seed=99)
    with pytest.raises(DataError, match=r"stale \(the scan file changed since\); re-run `anatssl embed"):
        embedding_cache(out).get(scans[0])
    assert embed_dataset(run, data, out, progress=False) == {"computed": 1, "skipped": 1}
    embedding_cache(out).get(scans[0])
    # the model's weights change -> every entry stale
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    ck["model"] = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in ck["model"].items()}
    atomic_torch_save(ck, run / "checkpoints" / "last.pt")
    with pytest.raises(DataError, match="weights of .* changed since"):
        embedding_cache(out).get(scans[1])
    assert embed_dataset(run, data, out, progress=False) == {"computed": 2, "skipped": 0}


def test_other_geometry(setup: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    run, data, scans = setup
    out = tmp_path / "emb"
    embed_dataset(run, data, out, progress=False)
    vol = load_preprocessed(scans[0], load_pretrain_config("sam", "tiny").data)
    vol.affine = vol.affine.copy()
    vol.affine[:3, 3] += [0.0, 0.0, 60.0]  # the scan moved by 60 mm
    with pytest.raises(DataError, match="of another geometry"):
        embedding_cache(out).get(scans[0], volume=vol)
    # an entry whose arrays disagree with its recorded grid
    cache = embedding_cache(out)
    emap = cache.get(scans[0])
    emap.fine = emap.fine[:, :-1]
    emap.fine_mask = None if emap.fine_mask is None else emap.fine_mask[:-1]
    from anatssl.anatomy.cache import save_map

    save_map(emap, cache.entry_path(scans[0]))
    with pytest.raises(DataError, match="fine grid .* does not fit a volume"):
        cache.get(scans[0])


def test_run_of_the_wrong_kind(tmp_path: Path) -> None:
    run = make_sam_run(tmp_path / "swin", method="swinssl", **{"model.feature_size": "12"})
    with pytest.raises(CheckpointError, match="is a 'swinssl' run, not a SAM run"):
        load_sam_run(run)
    with pytest.raises(CheckpointError, match="no checkpoints/last.pt"):
        load_sam_run(tmp_path)
    man = tmp_path / "emb" / "cache.json"
    man.parent.mkdir()
    man.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(DataError, match="not a SAM embedding cache manifest"):
        embedding_cache(man.parent).get(tmp_path / "x.nii.gz")
    assert torch.get_num_threads() >= 1
