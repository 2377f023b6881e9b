"""SAM on multi-channel data: ``anatssl embed`` and Alice's stage 0 embed every channel of a case (the
SAM network takes ``model.in_channels`` channels), on a 2-channel nnU-Net v2 raw layout written on disk."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sam_fixtures import make_sam_run

from anatssl.cli.main import main


def second_channel(hu: np.ndarray) -> np.ndarray:
    """A T2-like second contrast of a CT-like phantom: tissue order reversed, air stays air."""
    return np.where(hu > -500, 200.0 - 0.5 * hu, hu).astype(np.int16)


def nnunet_two_channels(root: Path, n: int = 3) -> Path:
    """nnU-Net v2 raw with channels CT, T2 (synthetic torsos, 48^3 at 8 mm) and labels."""
    from anatssl.data.synthetic import make_subject

    doc = {
        "channel_names": {"0": "CT", "1": "T2"},
        "labels": {"background": 0, "organ": 1},
        "numTraining": n,
        "file_ending": ".nii.gz",
    }
    for d in ("imagesTr", "labelsTr"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(doc))
    for i in range(n):
        s = make_subject(i, size=48)
        hu = s.image_hu.astype(np.int16)
        for c, arr in enumerate((hu, second_channel(hu))):
            nib.save(nib.Nifti1Image(arr, s.affine), str(root / "imagesTr" / f"case_{i:03d}_{c:04d}.nii.gz"))
        lab = (s.label > 0).astype(np.uint8)
        nib.save(nib.Nifti1Image(lab, s.affine), str(root / "labelsTr" / f"case_{i:03d}.nii.gz"))
    return root


@pytest.fixture()
def two_channel(tmp_path: Path) -> Path:
    return nnunet_two_channels(tmp_path / "Dataset005_TwoChannel")


def test_embed_reads_every_channel_and_notices_a_changed_channel_file(
    two_channel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from anatssl.anatomy.cache import embed_volume, load_preprocessed
    from anatssl.data.layouts import discover
    from anatssl.runs.embedding import embedding_cache, load_sam

    run = make_sam_run(tmp_path / "sam2", **{"model.in_channels": "2"})
    emb = tmp_path / "emb"
    cmd = ["embed", "--model", str(run), "--data", str(two_channel), "--out", str(emb), "--no-progress"]
    assert main([*cmd, "--format", "nnunet"]) == 0
    assert "embedded 3 scan(s), 0 already cached" in capsys.readouterr().out
    assert len(list(emb.glob("*.npz"))) == 3

    net, cfg, _ = load_sam(run)
    item = discover(two_channel)[1]
    assert [p.name for p in item.files] == ["case_001_0000.nii.gz", "case_001_0001.nii.gz"]
    vol = load_preprocessed(item, cfg.data, 2)
    assert vol.image.shape[0] == 2
    cached = embedding_cache(emb).get(item, volume=vol)
    assert cached.meta["source"] == str(item.image)
    again = embed_volume(net, vol)
    np.testing.assert_allclose(cached.fine.astype(np.float32), again.fine.astype(np.float32), atol=2e-3)
    # channel 1 matters: with channel 0 copied into it the embedding is another one (beyond the float16
    # tolerance the cached entry meets; a random-init network's maps depend weakly on their input)
    vol.image = np.repeat(np.asarray(vol.image)[:1], 2, axis=0)
    other = embed_volume(net, vol)
    assert np.abs(other.fine.astype(np.float32) - cached.fine.astype(np.float32)).max() > 3 * 2e-3

    # rewriting channel 1 (not the file the entry is keyed by) makes that entry stale
    ch1 = item.files[1]
    img = nib.load(str(ch1))
    arr = np.asarray(img.dataobj).copy()
    arr[arr > -500] += 7
    nib.save(nib.Nifti1Image(arr, img.affine), str(ch1))
    assert main(cmd) == 0
    assert "embedded 1 scan(s), 2 already cached" in capsys.readouterr().out


def test_embed_refuses_a_sam_run_of_another_channel_count(
    two_channel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_sam_run(tmp_path / "sam1")  # model.in_channels=1
    cmd = ["embed", "--model", str(run), "--data", str(two_channel), "--out", str(tmp_path / "e")]
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert f"the SAM run {run} embeds 1 channel(s) (its model.in_channels)" in err
    assert "cases have 2 channel files each (e.g. case case_000" in err
    assert "model.in_channels=C" in err
    assert not list((tmp_path / "e").glob("*.npz"))


ALICE_FAST = [
    "model.backbone=conv", "model.feature_size=4", "alice.crop_size=32", "alice.border_margin=8",
    "alice.out_dim=32", "alice.head_hidden_dim=32", "alice.head_bottleneck_dim=16", "alice.casa_heads=4",
    "alice.sam_steps=2", "train.max_steps=2", "train.batch_size=1", "train.progress=false",
    "train.tensorboard=false", "data.num_workers=0",
]  # fmt: skip


@pytest.mark.slow
def test_alice_stage0_and_training_on_two_channels(two_channel: Path, tmp_path: Path) -> None:
    """``anatssl pretrain --method alice`` on the 2-channel folder: stage 0 trains a 2-channel SAM,
    embeds both channels of every case, and Alice trains with SAM pairing."""
    from anatssl.anatomy.cache import EmbeddingCache
    from anatssl.data.layouts import discover
    from anatssl.runs.rundir import RunDir

    run = tmp_path / "alice"
    args = ["pretrain", "--method", "alice", "--data", str(two_channel), "--out", str(run)]
    assert main([*args, "--format", "nnunet", *ALICE_FAST, "model.in_channels=2"]) == 0
    assert RunDir(run / "sam").config.model.in_channels == 2
    emb = run / "embeddings"
    assert len(list(emb.glob("*.npz"))) == 3
    cache = EmbeddingCache(emb)
    for item in discover(two_channel):
        cache.get(item)  # fresh, with the hash of both channel files
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["pair_score"]) for r in rows)
