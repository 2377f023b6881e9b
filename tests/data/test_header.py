"""Header checks (data/header.py): what is decided from a NIfTI header before any voxel is read."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from anatssl.data.header import check_affine, check_header, check_label_grid, read_header
from anatssl.data.io import read_volume
from anatssl.errors import DataError

AFFINE = np.array([[1.5, 0, 0, -20.0], [0, 1.5, 0, 10.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])


def write(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def lps_copy(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels on the same world grid, stored with x and y flipped (LPS storage order)."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    shift = np.eye(4)
    shift[:2, 3] = [array.shape[0] - 1, array.shape[1] - 1]
    return array[::-1, ::-1].copy(), affine @ shift @ flip


def test_a_label_stored_in_another_axis_order_is_on_the_grid(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(12, 10, 8)).astype(np.float32)
    image = write(tmp_path / "img.nii.gz", img, AFFINE)
    lab, lab_affine = lps_copy((img > 0).astype(np.int16), AFFINE)
    label = write(tmp_path / "lab.nii.gz", lab, lab_affine)
    check_label_grid(image, label)  # accepted from the headers ...
    a, b = read_volume(image), read_volume(label, "label")  # ... and the decoded grids agree
    assert np.abs(a.affine - b.affine).max() < 1e-6
    assert np.array_equal(b.image[0], (a.image[0] > 0).astype(np.int16))
    hdr = read_header(label)
    assert hdr is not None and hdr.ras_grid()[0] == a.spatial_shape


def test_a_permuted_label_is_compared_on_the_ras_grid(tmp_path: Path) -> None:
    img = np.zeros((12, 10, 8), np.float32)
    image = write(tmp_path / "img.nii.gz", img, AFFINE)
    swap = AFFINE[:, [1, 0, 2, 3]]  # stored (Y, X, Z): same world grid
    write(tmp_path / "lab.nii.gz", np.zeros((10, 12, 8), np.int16), swap)
    check_label_grid(image, tmp_path / "lab.nii.gz")
    write(tmp_path / "bad.nii.gz", np.zeros((12, 10, 8), np.int16), swap)  # shape not permuted with it
    with pytest.raises(DataError, match=r"spatial shape \(10, 12, 8\) but its image .* has \(12, 10, 8\)"):
        check_label_grid(image, tmp_path / "bad.nii.gz")


def test_a_label_within_the_tolerance_is_accepted_and_beyond_it_refused(tmp_path: Path) -> None:
    img = np.zeros((12, 10, 8), np.float32)
    image = write(tmp_path / "img.nii.gz", img, AFFINE)
    near, far = AFFINE.copy(), AFFINE.copy()
    near[0, 3] += 0.005
    far[0, 3] += 0.5
    check_label_grid(image, write(tmp_path / "near.nii.gz", img.astype(np.int16), near))
    with pytest.raises(DataError, match=r"far.nii.gz and image .*img.nii.gz have different .* 0.5 mm"):
        check_label_grid(image, write(tmp_path / "far.nii.gz", img.astype(np.int16), far))


def test_voxel_ceiling_is_checked_from_the_header(tmp_path: Path) -> None:
    path = write(tmp_path / "a.nii.gz", np.zeros((12, 10, 8), np.float32), AFFINE)
    assert check_header(path, max_voxels=960) is not None
    with pytest.raises(DataError, match=r"a.nii.gz: its header claims shape \(12, 10, 8\) = 960 voxels"):
        check_header(path, max_voxels=959)
    with pytest.raises(DataError, match="above data.max_voxels"):
        read_volume(path, max_voxels=959)


def test_affines_without_a_3d_position_are_refused() -> None:
    check_affine(AFFINE, "ok.nii")
    flat = AFFINE.copy()
    flat[:3, 2] = 0.5 * flat[:3, 0]  # the third axis runs along the first
    with pytest.raises(DataError, match=r"x.nii has a degenerate voxel->world affine \(rank 2 < 3"):
        check_affine(flat, "x.nii")
    inf = AFFINE.copy()
    inf[2, 3] = np.inf
    with pytest.raises(DataError, match="NaN/Inf"):
        check_affine(inf, "x.nii")
    tiny = np.diag([1e-3, 1e-3, 1e-3, 1.0])  # small but regular: 1 micron voxels are a grid
    check_affine(tiny, "micro.nii")


def test_other_formats_are_left_to_the_reader(tmp_path: Path) -> None:
    (tmp_path / "scan.nrrd").write_bytes(b"NRRD0004\n")
    assert read_header(tmp_path / "scan.nrrd") is None
    assert check_header(tmp_path / "scan.nrrd") is None
