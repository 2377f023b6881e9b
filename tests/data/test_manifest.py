"""discover(): dataset.json, folders of NIfTI / DICOM series, CSV, and the bad manifests."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from anatssl.data.manifest import DataItem, discover
from anatssl.errors import DataError


def nifti(path: Path, shape=(4, 5, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))
    return path


def dicom_series(folder: Path, n_slices: int = 2) -> Path:
    """A minimal real DICOM series (pydicom-written) for discovery; geometry is tested in test_io."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Rows, ds.Columns = 4, 4
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.ImagePositionPatient, ds.InstanceNumber = [0.0, 0.0, float(k)], k + 1
        ds.PixelData = np.zeros((4, 4), np.int16).tobytes()
        # no .dcm suffix on purpose: found by the DICM magic at byte 128
        ds.save_as(folder / f"IM{k:04d}", enforce_file_format=True)
    return folder


def test_dataset_json_relative_paths_and_fields(tmp_path):
    root = tmp_path / "Task01"
    img_a = nifti(root / "imagesTr" / "a.nii.gz")
    lab_a = nifti(root / "labelsTr" / "a.nii.gz")
    img_b = nifti(root / "imagesTr" / "b.nii.gz")
    (root / "lm").mkdir()
    (root / "lm" / "a.json").write_text(json.dumps({"L1": [0.0, 1.0, 2.0]}))
    manifest = {
        "name": "demo",
        "training": [
            {
                "image": "./imagesTr/a.nii.gz",
                "label": "./labelsTr/a.nii.gz",
                "landmarks": "lm/a.json",
                "age": 61,
            },
            "imagesTr/b.nii.gz",
        ],
    }
    (root / "dataset.json").write_text(json.dumps(manifest))
    for target in (root / "dataset.json", root):  # the json itself or its folder
        items = discover(target)
        assert [it.image.resolve() for it in items] == [img_a.resolve(), img_b.resolve()]
        assert items[0].label.resolve() == lab_a.resolve()
        assert items[0].landmarks.name == "a.json"
        assert items[0].fields == {"age": 61}
        assert items[1].label is None and items[1].landmarks is None and items[1].fields == {}


def test_manifest_entry_pointing_nowhere(tmp_path):
    nifti(tmp_path / "a.nii.gz")
    (tmp_path / "dataset.json").write_text(
        json.dumps({"training": [{"image": "a.nii.gz"}, {"image": "a.nii.gz", "label": "gone.nii.gz"}]})
    )
    with pytest.raises(DataError) as e:
        discover(tmp_path / "dataset.json")
    msg = str(e.value)
    assert "training entry 1" in msg and "gone.nii.gz" in msg and "dataset.json" in msg


def test_bad_json(tmp_path):
    (tmp_path / "dataset.json").write_text('{"training": [')
    with pytest.raises(DataError, match="not valid JSON") as e:
        discover(tmp_path)
    assert "dataset.json" in str(e.value)


def test_json_without_training_list(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"test": ["a.nii.gz"]}))
    with pytest.raises(DataError, match="no 'training' list") as e:
        discover(tmp_path / "d.json")
    assert "d.json" in str(e.value) and "'test'" in str(e.value)


def test_folder_of_volumes_sorted_and_top_level_only(tmp_path):
    nifti(tmp_path / "b.nii.gz")
    nifti(tmp_path / "a.nii")
    nifti(tmp_path / "labelsTr" / "a.nii.gz")  # not an image: below the top level
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / ".anatssl_cache").mkdir()
    items = discover(tmp_path)
    assert [it.image.name for it in items] == ["a.nii", "b.nii.gz"]


def test_folder_of_dicom_series(tmp_path):
    pytest.importorskip("pydicom")
    dicom_series(tmp_path / "patient1" / "series_a")
    dicom_series(tmp_path / "patient2" / "series_b")
    (tmp_path / "patient2" / "README").write_text("not dicom")
    items = discover(tmp_path)
    assert [it.image.relative_to(tmp_path).as_posix() for it in items] == [
        "patient1/series_a",
        "patient2/series_b",
    ]
    # a single series folder is one scan
    assert [it.image for it in discover(tmp_path / "patient1" / "series_a")] == [
        tmp_path / "patient1" / "series_a"
    ]


def test_csv(tmp_path):
    nifti(tmp_path / "img" / "a.nii.gz")
    nifti(tmp_path / "img" / "b.nii.gz")
    nifti(tmp_path / "lab" / "a.nii.gz")
    (tmp_path / "list.csv").write_text("image,label,site\nimg/a.nii.gz,lab/a.nii.gz,X\nimg/b.nii.gz,,Y\n")
    items = discover(tmp_path / "list.csv")
    assert [it.image for it in items] == [tmp_path / "img" / "a.nii.gz", tmp_path / "img" / "b.nii.gz"]
    assert items[0].label == tmp_path / "lab" / "a.nii.gz" and items[1].label is None
    assert [it.fields for it in items] == [{"site": "X"}, {"site": "Y"}]


def test_csv_without_image_column(tmp_path):
    (tmp_path / "list.csv").write_text("path,label\na.nii.gz,\n")
    with pytest.raises(DataError, match="no 'image' column") as e:
        discover(tmp_path / "list.csv")
    assert "list.csv" in str(e.value)


def test_csv_row_pointing_nowhere(tmp_path):
    nifti(tmp_path / "a.nii.gz")
    (tmp_path / "list.csv").write_text("image\na.nii.gz\nmissing.nii.gz\n")
    with pytest.raises(DataError, match="row 3") as e:
        discover(tmp_path / "list.csv")
    assert "missing.nii.gz" in str(e.value) and "list.csv" in str(e.value)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no scans found in .*empty.*expected \\*.nii.gz"):
        discover(tmp_path / "empty")


def test_missing_path_and_single_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "nowhere")
    f = nifti(tmp_path / "one.nii.gz")
    assert discover(f) == [DataItem(image=f)]


def test_items_pickle(tmp_path):
    item = DataItem(image=tmp_path / "a.nii.gz", label=None, landmarks=None, fields={"k": 1})
    assert pickle.loads(pickle.dumps(item)) == item
