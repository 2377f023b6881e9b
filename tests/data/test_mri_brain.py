"""``anatssl synth --kind mri-brain``: the MNI152 template under a known warp, atlas labels, landmarks.

Needs nilearn (``pip install -e ".[mri]"``) and Debian's mricron-data (``apt-get install mricron-data``);
skipped with that message where they are absent (the label-table and missing-source tests always run).
Subjects are tiny (24 x 28 x 24 at 8 mm); the atlas is read once per process (~5 s).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from anatssl.data.synthetic.mri_atlas import (
    HO_CORTICAL,
    JHU_TRACTS,
    MRI_LABEL_IDS,
    MRI_LABELS,
    missing_sources,
)
from anatssl.errors import DataError

MISSING = missing_sources()
needs_sources = pytest.mark.skipif(MISSING is not None, reason=f"mri-brain sources absent: {MISSING}")
TINY = {"size": (24, 28, 24), "spacing": (8.0, 8.0, 8.0)}


def test_label_table_is_stable() -> None:
    """Ids come from the two fixed name lists, never from the files: Harvard-Oxford k -> k (left) and
    48 + k (right), JHU k -> 100 + k."""
    assert len(HO_CORTICAL) == 48 and len(JHU_TRACTS) == 48
    assert len(MRI_LABELS) == 1 + 96 + 48 and MRI_LABELS[0] == "background"
    assert MRI_LABEL_IDS["frontal_pole_l"] == 1 and MRI_LABEL_IDS["frontal_pole_r"] == 49
    assert MRI_LABEL_IDS["occipital_pole_l"] == 48 and MRI_LABEL_IDS["occipital_pole_r"] == 96
    assert MRI_LABEL_IDS["heschl_s_gyrus_includes_h1_and_h2_r"] == 93
    assert MRI_LABEL_IDS["jhu_middle_cerebellar_peduncle"] == 101
    assert MRI_LABEL_IDS["jhu_genu_of_corpus_callosum"] == 103
    assert MRI_LABEL_IDS["jhu_tapetum_l"] == 148
    assert len(set(MRI_LABELS.values())) == len(MRI_LABELS)  # names are unique


def test_missing_sources_name_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from anatssl.data.synthetic.mri_brain import write_brain_dataset

    monkeypatch.setenv("ANATSSL_MRICRON_DIR", str(tmp_path / "nowhere"))
    msg = missing_sources()
    assert msg is not None and "apt-get install mricron-data" in msg and "HarvardOxford" in msg
    with pytest.raises(DataError, match="apt-get install mricron-data"):
        write_brain_dataset(tmp_path / "out", n=1, **TINY)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()  # nothing written
    monkeypatch.setitem(__import__("sys").modules, "nilearn", None)  # import nilearn -> ImportError
    assert "nilearn is not installed" in (missing_sources() or "")


def test_warp_is_known_and_invertible() -> None:
    """phi^-1(phi(p)) = p with the elastic part; without it phi is exactly c + R S (p - t)."""
    from anatssl.data.synthetic.mri_brain import WarpParams, draw_warp

    rng = np.random.default_rng(0)
    w = draw_warp(np.random.default_rng(3))
    p = rng.uniform(-80, 80, size=(200, 3))
    assert np.allclose(w.to_subject(w.to_template(p)), p, atol=1e-6)
    assert 0.5 < np.abs(w.to_template(p) - w.affine_to_template(p)).max() < 15.0  # the elastic part moves
    rigid = draw_warp(np.random.default_rng(3), WarpParams(elastic_mm=0.0))
    assert np.allclose(rigid.linear, w.linear) and np.allclose(rigid.translation, w.translation)
    expected = rigid.centre + (p - rigid.translation) @ rigid.linear.T
    assert np.allclose(rigid.to_template(p), expected)
    r, s = np.linalg.qr(rigid.linear)  # L = R S: rotation of at most 10 degrees per axis, scale 0.85-1.16
    scale = np.abs(np.diag(s))
    assert np.all((scale > 0.85) & (scale < 1.16))


@needs_sources
def test_subject_is_deterministic_and_landmarks_are_transformed_centroids() -> None:
    from anatssl.data.synthetic.mri_atlas import load_atlas
    from anatssl.data.synthetic.mri_brain import make_brain_subject

    a = make_brain_subject(7, **TINY)  # type: ignore[arg-type]
    b = make_brain_subject(7, **TINY)  # type: ignore[arg-type]
    c = make_brain_subject(8, **TINY)  # type: ignore[arg-type]
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert a.landmarks == b.landmarks
    assert not np.array_equal(a.image, c.image)
    assert a.image.dtype == np.int16 and a.label.dtype == np.uint8 and a.image.shape == (24, 28, 24)
    assert np.allclose(np.diag(a.affine)[:3], 8.0)
    assert np.allclose(a.affine @ [11.5, 13.5, 11.5, 1], [0, 0, 0, 1])  # world 0 at the grid centre
    present = set(np.unique(a.label).tolist()) - {0}
    assert present <= set(MRI_LABELS) and len(present) > 100  # most of the 144 labels survive 8 mm

    # landmark = phi^-1(template centroid), and it agrees with the warped label's own centroid
    atlas = load_atlas()
    name = "jhu_body_of_corpus_callosum"
    assert np.allclose(a.warp.to_template(np.array([a.landmarks[name]])), [atlas.centroids[name]], atol=1e-5)
    ids = sorted(i for i in present if (a.label == i).sum() >= 20)  # labels of >= 20 voxels at 8 mm
    coms = ndimage.center_of_mass(np.ones(a.label.shape), a.label, ids)
    err = [
        np.linalg.norm(a.affine[:3, :3] @ np.asarray(cm) + a.affine[:3, 3] - a.landmarks[MRI_LABELS[i]])
        for i, cm in zip(ids, coms)
    ]
    assert len(ids) > 30 and np.median(err) < 3.0 and max(err) < 8.0  # within a voxel (8 mm)


@pytest.mark.slow  # ~12 CPU-s: the CLI's imports and two subjects written
@needs_sources
def test_cli_writes_a_dataset_the_readers_take(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from anatssl.cli.main import main
    from anatssl.data.manifest import discover

    out = tmp_path / "brain"
    args = ["synth", "--kind", "mri-brain", "--out", str(out), "--n", "2", "--seed", "5"]
    assert main([*args, "--size", "24", "28", "24", "--spacing", "8"]) == 0
    assert "wrote 2 mri-brain subjects" in capsys.readouterr().out
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["modality"] == {"0": "T1w"} and ds["labels"]["101"] == "jhu_middle_cerebellar_peduncle"
    assert ds["synthetic"]["kind"] == "mri-brain" and "nilearn" in ds["synthetic"]["sources"]["image"]
    items = discover(out)
    assert len(items) == 2 and all(it.label is not None and it.landmarks is not None for it in items)
    lms = json.loads((out / "landmarks" / "brain_000.json").read_text())
    assert len(lms) > 100 and all(len(v) == 3 for v in lms.values())
    assert main([*args, "--size", "24", "28", "24", "--spacing", "8"]) == 2  # occupied: refused
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--region", "chest"]) == 2
    assert "torso options" in capsys.readouterr().err
