"""The built-in synthetic anatomy: anatomy, intensities, landmarks, determinism, dataset files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from anatssl.data.synthetic import (
    LABEL_IDS,
    LABELS,
    LANDMARK_STRUCTURES,
    make_subject,
    subject_seed,
    write_dataset,
)
from anatssl.data.synthetic.field import SmoothField
from anatssl.data.synthetic.phantom import Canvas
from anatssl.data.synthetic.shapes import rotation
from anatssl.errors import ConfigError, DataError

SIZE = 48


@pytest.fixture(scope="module")
def subjects() -> dict[int, object]:
    return {seed: make_subject(seed, size=SIZE) for seed in (0, 1, 2, 3)}


def _median(s, name: str) -> float:
    return float(np.median(s.image_hu[s.label == LABEL_IDS[name]]))


def test_label_map_has_at_least_ten_structures_present(subjects) -> None:
    assert len(LABELS) - 1 >= 10
    for s in subjects.values():
        present = set(np.unique(s.label).tolist()) - {0}
        assert len(present) >= 10, present
        assert s.label.dtype == np.uint8 and s.label.shape == s.image_hu.shape == (SIZE,) * 3


def test_organs_lie_where_anatomy_puts_them(subjects) -> None:
    """RAS: +x is the patient's right, +y anterior, +z superior."""
    for s in subjects.values():
        idx = np.indices(s.label.shape).reshape(3, -1).T

        def centre(name: str, s=s, idx=idx) -> np.ndarray:
            m = (s.label == LABEL_IDS[name]).reshape(-1)
            return s.affine[:3, :3] @ idx[m].mean(axis=0) + s.affine[:3, 3]

        liver, spleen = centre("liver"), centre("spleen")
        assert liver[0] > spleen[0] + 50  # liver on the right
        assert centre("kidney_right")[0] > 20 > -20 > centre("kidney_left")[0]
        assert centre("lung_right")[2] > liver[2] + 50  # lungs above the liver
        assert centre("vertebrae")[1] < centre("aorta")[1]  # spine behind the aorta
        assert centre("heart")[1] > centre("vertebrae")[1] + 40


@pytest.mark.parametrize(
    ("name", "lo", "hi"),
    [
        ("liver", 40, 80),
        ("lung_right", -1000, -600),
        ("lung_left", -1000, -600),
        ("subcutaneous_fat", -150, -50),
        ("muscle", 20, 75),
        ("vertebrae", 200, 1200),
        ("pelvis", 200, 1200),
    ],
)
def test_median_hu_per_structure_is_realistic(subjects, name: str, lo: float, hi: float) -> None:
    for seed, s in subjects.items():
        if (s.label == LABEL_IDS[name]).sum() < 20:
            continue
        assert lo <= _median(s, name) <= hi, (seed, name, _median(s, name))


def test_contrast_phase_enhances_blood_and_kidneys() -> None:
    by_phase: dict[str, list] = {"none": [], "venous": []}
    for seed in range(8):
        s = make_subject(seed, size=SIZE)
        by_phase[str(s.meta["contrast"])].append(s)
    assert by_phase["none"] and by_phase["venous"]
    for s in by_phase["none"]:
        assert 15 <= _median(s, "aorta") <= 75 and 10 <= _median(s, "kidney_right") <= 60
    for s in by_phase["venous"]:
        assert _median(s, "aorta") >= 110 and _median(s, "kidney_right") >= 80


def test_air_outside_body_and_noise(subjects) -> None:
    s = subjects[0]
    corner = s.image_hu[:4, :4, :]
    assert -1030 <= corner.mean() <= -960
    assert 3 <= corner.std() <= 40  # Gaussian noise (8-25 HU, clipped at -1024)
    assert np.all(s.image_hu == np.rint(s.image_hu))  # integer HU


def test_landmarks_count_and_inside_their_structure() -> None:
    for region in ("chest", "abdomen", "both"):
        for seed in (0, 5):
            s = make_subject(seed, size=64, region=region)
            assert len(s.landmarks) >= 12, (region, seed, sorted(s.landmarks))
            exact = 0
            for name, xyz in s.landmarks.items():
                lab = LABEL_IDS[LANDMARK_STRUCTURES[name]]
                v = np.rint(s.world_to_voxel(np.array(xyz))).astype(int)
                assert np.all(v >= 0) and np.all(v < 64), name
                lo, hi = np.maximum(v - 1, 0), np.minimum(v + 2, 64)
                assert np.any(s.label[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == lab), (region, name)
                exact += int(s.label[tuple(v)] == lab)
            # The 1-voxel tolerance is for discretisation only: nearly all sit exactly in their structure.
            assert exact >= 0.85 * len(s.landmarks), (region, seed, exact, len(s.landmarks))


def test_landmarks_have_anatomical_order() -> None:
    s = make_subject(4, size=64, region="both")
    lm = {k: np.array(v) for k, v in s.landmarks.items()}
    vert = [k for k in LANDMARK_STRUCTURES if k.startswith("vertebra_") and k in lm]
    assert len(vert) >= 8
    z = np.array([lm[k][2] for k in vert])  # listed cranial to caudal
    assert np.all(np.diff(z) < -15) and np.all(np.diff(z) > -50), z
    for side in ("left", "right"):
        assert lm[f"kidney_{side}_upper_pole"][2] - lm[f"kidney_{side}_lower_pole"][2] > 50
    assert lm["kidney_right_upper_pole"][0] > 0 > lm["kidney_left_upper_pole"][0]
    assert lm["aortic_bifurcation"][2] < lm["vertebra_L3"][2]
    liver_z = (np.nonzero((s.label == LABEL_IDS["liver"]).any(axis=(0, 1)))[0].max()) * s.spacing[2]
    assert abs((lm["liver_dome"][2] - s.affine[2, 3]) - liver_z) < 25  # near the top of the liver


def test_same_seed_identical_different_seed_different() -> None:
    a, b, c = make_subject(7, size=32), make_subject(7, size=32), make_subject(8, size=32)
    assert np.array_equal(a.image_hu, b.image_hu) and np.array_equal(a.label, b.label)
    assert a.landmarks == b.landmarks and np.array_equal(a.affine, b.affine)
    assert not np.array_equal(a.label, c.label)
    assert np.abs(a.image_hu - c.image_hu).mean() > 20


def test_subjects_differ_in_size_and_organ_positions(subjects) -> None:
    vols = {k: [] for k in ("liver", "lung_right", "subcutaneous_fat")}
    centres = []
    for s in subjects.values():
        for k in vols:
            vols[k].append(int((s.label == LABEL_IDS[k]).sum()))
        m = np.argwhere(s.label == LABEL_IDS["kidney_right"])
        centres.append(s.affine[:3, :3] @ m.mean(axis=0) + s.affine[:3, 3])
        assert s.meta["body_scale"] != subjects[0].meta["body_scale"] or s is subjects[0]
    for k, v in vols.items():
        assert (max(v) - min(v)) / np.mean(v) > 0.08, (k, v)
    c = np.array(centres)
    assert np.max(np.linalg.norm(c - c.mean(axis=0), axis=1)) > 5.0  # kidneys move by > 5 mm


def test_regions_cover_different_body_ranges() -> None:
    chest = make_subject(0, size=48, region="chest")
    abdo = make_subject(0, size=48, region="abdomen")
    lung = LABEL_IDS["lung_right"]
    assert (chest.label == lung).sum() > 5 * max(1, (abdo.label == lung).sum())
    assert (abdo.label == LABEL_IDS["bladder"]).sum() > 0 == (chest.label == LABEL_IDS["bladder"]).sum()
    assert chest.meta["region"] == "chest" and abdo.meta["region"] == "abdomen"


def test_lesion_changes_only_the_lesion() -> None:
    for seed in range(6):
        plain = make_subject(seed, size=SIZE, region="abdomen")
        sick = make_subject(seed, size=SIZE, region="abdomen", lesion=True)
        if sick.meta["lesion"] == 0:
            continue
        assert plain.meta["lesion"] == 0 and len(sick.meta["lesions"]) >= 1
        assert np.array_equal(plain.label, sick.label)
        diff = sick.image_hu != plain.image_hu
        organs = np.isin(sick.label, [LABEL_IDS[k] for k in ("liver", "kidney_right", "kidney_left")])
        near = ndimage.binary_dilation(organs, iterations=2)
        assert diff.any() and not (diff & ~near).any()
        delta = (sick.image_hu - plain.image_hu)[diff]
        # Lesions are darker than their organ; the blur spreads them over neighbours by a few HU.
        assert delta.sum() < 0 and delta.min() < -15
        return
    pytest.fail("no subject among 6 got a lesion")


def test_grid_affine_and_spacing() -> None:
    s = make_subject(0, size=(32, 40, 48), spacing=(5.0, 4.0, 3.0))
    assert s.image_hu.shape == (32, 40, 48)
    assert np.allclose(np.diag(s.affine)[:3], [5.0, 4.0, 3.0]) and s.affine[3, 3] == 1
    assert np.allclose(s.affine[:3, :3], np.diag([5.0, 4.0, 3.0]))
    d = make_subject(0, size=32)
    assert np.allclose(d.spacing, 384.0 / 32)
    v = d.to_volume()
    assert v.image.shape == (1, 32, 32, 32) and v.label is not None and v.label.shape == (1, 32, 32, 32)
    assert v.spacing == pytest.approx(d.spacing)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 8}, "too small"),
        ({"size": -4}, "positive"),
        ({"size": (32, 32)}, "one value or three"),
        ({"spacing": 0.0}, "positive"),
        ({"region": "head"}, "region 'head'"),
    ],
)
def test_make_subject_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_subject(0, **kwargs)


def test_smooth_field_unit_variance_and_point_evaluation() -> None:
    rng = np.random.default_rng(0)
    f = SmoothField.random(rng, np.zeros(3), np.full(3, 200.0), wavelength_mm=40.0, components=2)
    axes = tuple(np.linspace(0, 200, 41) for _ in range(3))
    g = f.on_grid(axes)
    assert g.shape == (2, 41, 41, 41)
    assert 0.6 < g.std() < 1.4
    pts = np.array([[0.0, 50.0, 200.0], [120.0, 5.0, 35.0]])
    ijk = np.rint(pts / 5.0).astype(int)
    assert np.allclose(f.at_points(pts), g[:, ijk[:, 0], ijk[:, 1], ijk[:, 2]].T, atol=1e-4)
    assert np.allclose(f.at_points(np.array([[-1000.0, 50.0, 50.0]])), 0.0)  # beyond the lattice


def test_canvas_inverts_the_deformation() -> None:
    """Landmarks are mapped canonical -> world by fixed-point iteration; the forward map must undo it."""
    rng = np.random.default_rng(3)
    lo, hi = np.full(3, -190.0), np.full(3, 190.0)
    fields = []
    for wavelength, amp in ((120.0, 8.0), (50.0, 3.0)):  # the largest amplitudes make_subject draws
        f = SmoothField.random(rng, lo, hi, wavelength_mm=wavelength, components=3)
        f.coeffs *= np.float32(amp)
        fields.append(f)
    lin = np.diag(1 / np.array([1.1, 0.9, 1.05])) @ rotation(0.05, -0.04, 0.06).T
    grid = np.zeros((2, 2, 2), np.float32)
    c = Canvas(grid, grid, grid, np.eye(4), lin, np.array([5.0, -8.0, 0.0]), fields, 30.0, {})
    q = rng.uniform(-150, 150, (50, 3))
    assert np.abs(c.to_canonical(c.to_world(q)) - q).max() < 0.05


def test_write_dataset_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    ds = write_dataset(out, n=2, seed=3, size=32, lesions=0.5)
    on_disk = json.loads((out / "dataset.json").read_text())
    assert on_disk == json.loads(json.dumps(ds))
    assert on_disk["modality"] == {"0": "CT"} and on_disk["numTraining"] == 2 == len(on_disk["training"])
    assert on_disk["labels"]["0"] == "background" and len(on_disk["labels"]) == len(LABELS)
    assert "lesion" in on_disk["classes"]
    for i, entry in enumerate(on_disk["training"]):
        for key in ("image", "label", "landmarks"):
            assert entry[key].startswith("./") and (out / entry[key]).is_file()
        assert entry["lesion"] in (0, 1)
        ref = make_subject(subject_seed(3, i), size=32, lesion=bool(entry["lesion"]))
        img, lab = nib.load(out / entry["image"]), nib.load(out / entry["label"])
        assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        assert np.array_equal(np.asanyarray(img.dataobj), ref.image_hu.astype(np.int16))
        assert np.array_equal(np.asanyarray(lab.dataobj), ref.label)
        assert np.allclose(img.affine, ref.affine) and np.allclose(lab.affine, ref.affine)
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert json.loads((out / entry["landmarks"]).read_text()) == ref.landmarks
        assert entry["lesion"] == ref.meta["lesion"]


def test_write_dataset_prefix_stable_and_no_lesion_field(tmp_path: Path) -> None:
    a = write_dataset(tmp_path / "a", n=1, seed=5, size=24)
    b = write_dataset(tmp_path / "b", n=2, seed=5, size=24)
    assert "lesion" not in a["training"][0] and "classes" not in a
    x = nib.load(tmp_path / "a" / "imagesTr" / "synth_000.nii.gz").get_fdata()
    y = nib.load(tmp_path / "b" / "imagesTr" / "synth_000.nii.gz").get_fdata()
    z = nib.load(tmp_path / "b" / "imagesTr" / "synth_001.nii.gz").get_fdata()
    assert np.array_equal(x, y) and not np.array_equal(y, z)
    assert b["numTraining"] == 2


def test_write_dataset_refuses_occupied_folder(tmp_path: Path) -> None:
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    with pytest.raises(DataError, match="not empty.*--overwrite"):
        write_dataset(tmp_path, n=1, size=24)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"] and keep.read_text() == "mine"
    write_dataset(tmp_path, n=2, size=24, overwrite=True)
    write_dataset(tmp_path, n=1, size=24, overwrite=True)  # replaces the old synthetic files only
    assert keep.read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "imagesTr").iterdir()) == ["synth_000.nii.gz"]


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"n": 0}, ConfigError, "positive number of subjects"),
        ({"n": 1, "size": 10}, ConfigError, "too small"),
        ({"n": 1, "lesions": 1.5}, ConfigError, r"\[0, 1\]"),
        ({"n": 1, "seed": -1}, ConfigError, "non-negative"),
    ],
)
def test_write_dataset_rejects_bad_arguments(tmp_path: Path, kwargs: dict, err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        write_dataset(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_speed_96_cubed_well_under_a_second_of_cpu() -> None:
    make_subject(0, size=96)
    cpu = []
    for seed in (1, 2, 3):
        t = time.process_time()
        make_subject(seed, size=96)
        cpu.append(time.process_time() - t)
    assert min(cpu) < 1.0, cpu
