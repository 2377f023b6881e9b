"""read_volume: real NIfTI / DICOM files on disk, RAS geometry, and every bad input with its message."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from anatssl.data.io import check_same_grid, read_landmarks, read_volume
from anatssl.errors import DataError


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def write_dicom_series(
    folder: Path,
    stored: np.ndarray,
    pixel_spacing: tuple[float, float] = (0.8, 0.7),
    slice_step: float = 2.5,
    origin: tuple[float, float, float] = (-100.0, -120.0, 50.0),
    iop: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    intercept: float = -1024.0,
    series_uid: str | None = None,
) -> Path:
    """``stored`` (rows, cols, slices) int16 -> one CT .dcm per slice with real patient geometry (LPS)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    row_dir, col_dir = np.array(iop[:3]), np.array(iop[3:])
    normal = np.cross(row_dir, col_dir)
    for k in range(stored.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = "1.2.3.4"
        ds.Modality = "CT"
        ds.Rows, ds.Columns = stored.shape[:2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = slice_step
        ds.ImageOrientationPatient = list(iop)
        ds.ImagePositionPatient = [float(v) for v in np.array(origin) + k * slice_step * normal]
        ds.InstanceNumber = k + 1
        ds.RescaleIntercept = intercept
        ds.RescaleSlope = 1.0
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].astype(np.int16)).tobytes()
        ds.save_as(folder / f"slice_{k:03d}.dcm", enforce_file_format=True)
    return folder


def argmax_world(vol) -> np.ndarray:
    ijk = np.array(np.unravel_index(int(np.argmax(vol.image[0])), vol.spatial_shape))
    return vol.voxel_to_world(ijk)


# -- round trips -----------------------------------------------------------------------------------------


def test_nifti_round_trip_ras(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(6, 7, 8)).astype(np.float32)
    aff = np.diag([1.5, 2.0, 3.0, 1.0])
    aff[:3, 3] = [10.0, -20.0, 30.0]
    vol = read_volume(write_nifti(tmp_path / "a.nii.gz", arr, aff))
    assert vol.image.dtype == np.float32 and vol.image.shape == (1, 6, 7, 8)
    np.testing.assert_allclose(vol.image[0], arr)
    np.testing.assert_allclose(vol.affine, aff)
    assert vol.spacing == pytest.approx((1.5, 2.0, 3.0))
    assert vol.meta["source_axcodes"] == "RAS"


def test_lps_nifti_is_reoriented_to_ras_and_world_points_kept(tmp_path):
    arr = np.zeros((6, 7, 8), np.float32)
    arr[1, 2, 3] = 5.0
    aff = np.diag([-1.5, -2.0, 3.0, 1.0])  # LPS storage order
    aff[:3, 3] = [10.0, 20.0, 30.0]
    world = aff[:3, :3] @ [1, 2, 3] + aff[:3, 3]
    vol = read_volume(write_nifti(tmp_path / "lps.nii.gz", arr, aff))
    assert vol.meta["source_axcodes"] == "LPS"
    assert np.all(np.diag(vol.affine)[:3] > 0), vol.affine
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    np.testing.assert_allclose(argmax_world(vol), world)
    # flips only: the marker lands at the mirrored index along x and y
    assert tuple(np.argwhere(vol.image[0] == 5.0)[0]) == (6 - 1 - 1, 7 - 1 - 2, 3)


def test_4d_nifti_with_expected_channels(tmp_path):
    arr = np.random.default_rng(1).normal(size=(5, 6, 7, 2)).astype(np.float32)
    vol = read_volume(write_nifti(tmp_path / "two.nii.gz", arr), channels=2)
    assert vol.image.shape == (2, 5, 6, 7)
    np.testing.assert_allclose(vol.image[1], arr[..., 1])


def test_label_is_integer(tmp_path):
    lab = np.zeros((5, 6, 7), np.uint8)
    lab[1:3, 2:4, 3:5] = 3
    vol = read_volume(write_nifti(tmp_path / "lab.nii.gz", lab), kind="label")
    assert vol.image.dtype == np.int16 and vol.image.shape == (1, 5, 6, 7)
    assert set(np.unique(vol.image)) == {0, 3}


def test_dicom_series_geometry_and_hu(tmp_path):
    pytest.importorskip("pydicom")
    stored = np.full((10, 12, 6), 24, np.int16)  # rows, cols, slices; 24 - 1024 = -1000 HU
    stored[2, 5, 3] = 1524  # marker: 500 HU at row 2, column 5, slice 3
    folder = write_dicom_series(tmp_path / "series", stored)
    vol = read_volume(folder)
    assert vol.image.shape == (1, 12, 10, 6)  # (columns, rows, slices) after RAS reorientation
    assert float(vol.image.min()) == -1000.0 and float(vol.image.max()) == 500.0
    # DICOM patient (LPS) position of the marker: IPP_k + col * dc * row_dir + row * dr * col_dir
    lps = (
        np.array([-100.0, -120.0, 50.0])
        + 3 * 2.5 * np.array([0, 0, 1])
        + 5 * 0.7 * np.array([1, 0, 0])
        + 2 * 0.8 * np.array([0, 1, 0])
    )
    ras = lps * np.array([-1, -1, 1])
    np.testing.assert_allclose(argmax_world(vol), ras, atol=1e-4)
    assert vol.spacing == pytest.approx((0.7, 0.8, 2.5))
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")


def test_dicom_folder_with_two_series(tmp_path):
    pytest.importorskip("pydicom")
    folder = tmp_path / "mixed"
    write_dicom_series(folder, np.zeros((4, 4, 3), np.int16), series_uid="1.2.3.1")
    for p in write_dicom_series(
        tmp_path / "other", np.ones((4, 4, 3), np.int16), series_uid="1.2.3.2"
    ).iterdir():
        p.rename(folder / f"b_{p.name}")
    with pytest.raises(DataError, match="2 DICOM series") as e:
        read_volume(folder)
    assert "mixed" in str(e.value)


def test_dicom_series_with_a_missing_slice(tmp_path):
    pytest.importorskip("pydicom")
    folder = write_dicom_series(
        tmp_path / "gap", np.zeros((6, 6, 8), np.int16) + np.arange(8, dtype=np.int16)
    )
    (folder / "slice_004.dcm").unlink()
    with pytest.raises(DataError, match="not evenly spaced: 5 mm between InstanceNumber 4 and 6") as e:
        read_volume(folder)
    assert "gap" in str(e.value)


def test_dicom_series_via_volume_source(tmp_path):
    """Folder of series -> discover -> cache (folder fingerprint) -> preprocessed CT in [0, 1]."""
    pytest.importorskip("pydicom")
    from anatssl.config.schema import DataConfig
    from anatssl.data.source import VolumeSource

    stored = np.full((16, 16, 6), 24, np.int16)  # -1000 HU
    stored[4:12, 4:12, :] = 1024  # 0 HU body
    write_dicom_series(tmp_path / "data" / "p1" / "ct", stored)
    src = VolumeSource(tmp_path / "data", DataConfig())
    assert src.validate(progress=False) == []
    vol = src.load(0)
    assert vol.path == str(tmp_path / "data" / "p1" / "ct")
    assert float(vol.image.max()) == pytest.approx(0.5) and float(vol.image.min()) == pytest.approx(0.0)


def test_single_dicom_slice_is_2d(tmp_path):
    pytest.importorskip("pydicom")
    folder = write_dicom_series(tmp_path / "one", np.arange(16, dtype=np.int16).reshape(4, 4, 1))
    with pytest.raises(DataError, match="2D image"):
        read_volume(folder / "slice_000.dcm")


# -- bad inputs ------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist") as e:
        read_volume(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(e.value)


def test_empty_file(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match="empty file") as e:
        read_volume(tmp_path / "empty.nii.gz")
    assert "empty.nii.gz" in str(e.value)


def test_truncated_nifti(tmp_path):
    arr = np.random.default_rng(2).normal(size=(16, 16, 16)).astype(np.float32)
    path = write_nifti(tmp_path / "cut.nii.gz", arr)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt, truncated") as e:
        read_volume(path)
    assert "cut.nii.gz" in str(e.value)


def test_garbage_nifti(tmp_path):
    path = tmp_path / "junk.nii"
    path.write_bytes(b"this is not a nifti header" * 20)
    with pytest.raises(DataError, match="cannot read image") as e:
        read_volume(path)
    assert "junk.nii" in str(e.value)


def test_unsupported_suffix(tmp_path):
    (tmp_path / "scan.png").write_bytes(b"\x89PNG....")
    with pytest.raises(DataError, match="unsupported file type .png") as e:
        read_volume(tmp_path / "scan.png")
    assert "scan.png" in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("itk") is not None, reason="itk is installed")
def test_nrrd_without_itk_says_what_to_install(tmp_path):
    (tmp_path / "scan.nrrd").write_bytes(b"NRRD0004\n")
    with pytest.raises(DataError, match="pip install itk") as e:
        read_volume(tmp_path / "scan.nrrd")
    assert "scan.nrrd" in str(e.value)


@pytest.mark.parametrize("shape", [(8, 9), (8, 9, 1)])
def test_2d_image(tmp_path, shape):
    path = write_nifti(
        tmp_path / "flat.nii.gz", np.random.default_rng(3).normal(size=shape).astype(np.float32)
    )
    with pytest.raises(DataError, match="2D image") as e:
        read_volume(path)
    assert "flat.nii.gz" in str(e.value)


def test_4d_with_wrong_channel_count(tmp_path):
    arr = np.random.default_rng(4).normal(size=(5, 6, 7, 4)).astype(np.float32)
    with pytest.raises(DataError, match="has 4 channels .* but 1 expected") as e:
        read_volume(write_nifti(tmp_path / "brats.nii.gz", arr))
    assert "brats.nii.gz" in str(e.value)


def test_nan_is_an_error_by_default(tmp_path):
    arr = np.random.default_rng(5).normal(size=(5, 6, 7)).astype(np.float32)
    arr[0, 0, 0], arr[1, 1, 1] = np.nan, np.inf
    path = write_nifti(tmp_path / "nan.nii.gz", arr)
    with pytest.raises(DataError, match="2 NaN/Inf voxels") as e:
        read_volume(path)
    assert "nan.nii.gz" in str(e.value)


def test_nan_fill_replaces_by_minimum_and_warns(tmp_path, caplog):
    arr = np.random.default_rng(6).normal(size=(5, 6, 7)).astype(np.float32)
    finite_min = float(arr.min())
    arr[0, 0, 0], arr[1, 1, 1] = np.nan, -np.inf
    path = write_nifti(tmp_path / "nan.nii.gz", arr)
    with caplog.at_level(logging.WARNING, logger="anatssl"):
        vol = read_volume(path, nan_policy="fill")
    assert np.isfinite(vol.image).all()
    assert vol.image[0, 0, 0, 0] == pytest.approx(finite_min) and vol.image[0, 1, 1, 1] == pytest.approx(
        finite_min
    )
    assert any("nan.nii.gz" in r.getMessage() and "2 NaN/Inf" in r.getMessage() for r in caplog.records)


def test_constant_image(tmp_path):
    path = write_nifti(tmp_path / "flat.nii.gz", np.full((5, 6, 7), -1024.0, np.float32))
    with pytest.raises(DataError, match="constant .* nothing to learn") as e:
        read_volume(path)
    assert "flat.nii.gz" in str(e.value)
    assert read_volume(path, allow_constant=True).image.shape == (1, 5, 6, 7)


def test_non_integer_label(tmp_path):
    path = write_nifti(
        tmp_path / "lab.nii.gz", np.linspace(0, 1, 5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    )
    with pytest.raises(DataError, match="non-integer values") as e:
        read_volume(path, kind="label")
    assert "lab.nii.gz" in str(e.value)


def test_label_grid_mismatch(tmp_path):
    img = read_volume(write_nifti(tmp_path / "img.nii.gz", np.arange(210, dtype=np.float32).reshape(5, 6, 7)))
    lab_small = read_volume(
        write_nifti(tmp_path / "lab1.nii.gz", np.zeros((5, 6, 6), np.uint8)), kind="label"
    )
    with pytest.raises(DataError, match="spatial shape") as e:
        check_same_grid(img, lab_small)
    assert "lab1.nii.gz" in str(e.value) and "img.nii.gz" in str(e.value)
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    lab_moved = read_volume(
        write_nifti(tmp_path / "lab2.nii.gz", np.zeros((5, 6, 7), np.uint8), shifted), "label"
    )
    with pytest.raises(DataError, match="different voxel->world affines"):
        check_same_grid(img, lab_moved)
    check_same_grid(
        img, read_volume(write_nifti(tmp_path / "ok.nii.gz", np.zeros((5, 6, 7), np.uint8)), "label")
    )


@pytest.mark.parametrize(
    "content",
    [
        {"L1": [1, 2.5, -3]},
        {"landmarks": {"L1": [1, 2.5, -3]}, "subject": 7},
        {"L1": {"world": [1, 2.5, -3], "voxel": [4, 5, 6]}},
        {"landmarks": [{"name": "L1", "world_mm": [1, 2.5, -3], "voxel": [4, 5, 6]}]},
    ],
)
def test_landmark_formats(tmp_path, content):
    path = tmp_path / "lm.json"
    path.write_text(json.dumps(content))
    assert read_landmarks(path) == {"L1": [1.0, 2.5, -3.0]}


@pytest.mark.parametrize("text", ['{"L1": [1, 2]}', '{"L1": {"voxel": [1, 2, 3]}}', "[1, 2, 3]", "{bad"])
def test_bad_landmarks(tmp_path, text):
    path = tmp_path / "lm.json"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        read_landmarks(path)
    assert "lm.json" in str(e.value)
