"""Checks made from a scan's header alone, before a voxel is decoded or a byte allocated.

A NIfTI header says how many voxels follow and where they sit; a damaged or hostile one can claim
30000^3 voxels (decoding it would try to allocate petabytes and die with ``MemoryError``) or an affine
that maps the grid onto a plane (MONAI's reorientation then fails with "Unable to find out axis"). So:

- :func:`check_header` (every image and label read): the voxel count against a ceiling
  (``data.max_voxels``, default 2^32 voxels = 16 GiB as float32, beyond any real CT or MRI scan; a
  512 x 512 x 2000 whole-body CT has 0.5 x 10^9), and the affine (finite, rank 3);
- :func:`check_label_grid` (wherever labels are read: fine-tuning, evaluation): a label has its
  image's shape and affine, within :data:`GRID_TOLERANCE_MM`, compared on the RAS grid both are
  reoriented to, so a label stored in another axis order still matches.

Only NIfTI headers can be read without decoding; other formats (DICOM series, NRRD) get the affine
check on the decoded geometry (:func:`check_affine`) and the shape check after reading
(:func:`anatssl.data.io.check_same_grid`). Every failure is a :class:`~anatssl.errors.DataError`
naming the file and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anatssl.config.schema import DataConfig
from anatssl.errors import DataError

DEFAULT_MAX_VOXELS: int = DataConfig().max_voxels
"""Voxel-count ceiling of one scan (channels included): 2^32, 16 GiB as float32 (``data.max_voxels``)."""

GRID_TOLERANCE_MM = 1e-2
"""Largest affine difference (mm) between a label and its image: float rounding between NIfTI sform
and qform copies, not a misregistration (which moves labels by a fraction of a voxel or more)."""

RANK_TOLERANCE = 1e-6
"""Smallest singular value of the affine's 3x3 part, relative to the largest, that still counts as rank
3 (a real scan's ratio is its spacing anisotropy, at worst ~1e-2)."""


@dataclass(frozen=True)
class Header:
    """What a file's header says: ``shape`` as stored (spatial axes first), ``affine`` voxel -> world."""

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray

    @property
    def voxels(self) -> int:
        return int(np.prod([max(int(s), 1) for s in self.shape], dtype=object))

    def ras_grid(self) -> tuple[tuple[int, int, int], np.ndarray]:
        """(spatial shape, affine) after reorientation to RAS (what :func:`~anatssl.data.io.read_volume`
        returns), computed from the header: the same axis permutation and flips, no voxel touched."""
        import nibabel.orientations as nio

        shape = tuple(int(s) for s in self.shape[:3])
        ornt = nio.io_orientation(self.affine)
        to_ras = nio.ornt_transform(ornt, nio.axcodes2ornt("RAS"))
        affine = self.affine @ nio.inv_ornt_aff(to_ras, shape)
        ras_shape = [0, 0, 0]
        for axis, (new_axis, _) in enumerate(to_ras):
            ras_shape[int(new_axis)] = shape[axis]
        return (ras_shape[0], ras_shape[1], ras_shape[2]), affine


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and (name.endswith(".nii") or name.endswith(".nii.gz"))


def read_header(path: str | Path, kind: str = "image") -> Header | None:
    """The header of a NIfTI file (None for other formats); a header nibabel cannot parse -> DataError."""
    path = Path(path)
    if not is_nifti(path):
        return None
    import nibabel as nib

    try:
        img = nib.load(str(path))  # reads the header only; voxels stay on disk until asked for
        shape = tuple(int(s) for s in img.shape)  # type: ignore[attr-defined]
        affine = np.asarray(img.affine, dtype=np.float64)  # type: ignore[attr-defined]
    except Exception as e:  # nibabel raises HeaderDataError, ImageFileError, EOFError, gzip errors ...
        raise DataError(
            f"cannot read {kind} {path}: {type(e).__name__}: {e}. The file is corrupt, truncated or not "
            "what its name says; re-export or re-download it (or remove it from the dataset)"
        ) from e
    return Header(path=path, shape=shape, affine=affine)


def check_affine(affine: np.ndarray, path: str | Path, kind: str = "image") -> None:
    """A voxel -> world affine must be finite with a rank-3 rotation/scale part."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise DataError(
            f"{kind} {path} has a voxel->world affine with NaN/Inf entries; fix its header (sform/qform), "
            "e.g. re-export the scan"
        )
    sv = np.linalg.svd(a[:3, :3], compute_uv=False)
    if not sv[0] > 0 or sv[-1] < RANK_TOLERANCE * sv[0]:
        spacing = np.round(np.linalg.norm(a[:3, :3], axis=0), 4).tolist()
        rank = int(np.sum(sv > RANK_TOLERANCE * sv[0]))
        raise DataError(
            f"{kind} {path} has a degenerate voxel->world affine (rank {rank} < 3: two axes point the same "
            f"way or a spacing is 0; column lengths {spacing} mm); the voxels have no 3D position. Fix its "
            "header (sform/qform) or re-export the scan"
        )


def check_header(
    path: str | Path, kind: str = "image", max_voxels: int = DEFAULT_MAX_VOXELS
) -> Header | None:
    """Voxel count and affine of a NIfTI file from its header (other formats: None, nothing checked)."""
    header = read_header(path, kind)
    if header is None:
        return None
    if any(s < 0 for s in header.shape):
        raise DataError(
            f"{kind} {path}: its header gives a negative size {header.shape}; the file is corrupt"
        )
    if header.voxels > max_voxels:
        gib = header.voxels * 4 / 2**30
        raise DataError(
            f"{kind} {path}: its header claims shape {header.shape} = {header.voxels:.3g} voxels "
            f"({gib:,.0f} GiB as float32), above data.max_voxels = {max_voxels:.3g}; the header is corrupt, "
            "or the scan is too large: crop or downsample it, or raise data.max_voxels"
        )
    check_affine(header.affine, path, kind)
    return header


def check_label_grid(
    image: str | Path,
    label: str | Path,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    atol_mm: float = GRID_TOLERANCE_MM,
) -> None:
    """An image/label pair of NIfTI files: both headers sane and the label on the image's RAS grid."""
    hi = check_header(image, "image", max_voxels)
    hl = check_header(label, "label", max_voxels)
    if hi is None or hl is None:
        return
    if len(hi.shape) < 3 or len(hl.shape) < 3:
        return  # a 2D file: read_volume says so with its own message
    si, ai = hi.ras_grid()
    sl, al = hl.ras_grid()
    if si != sl:
        raise DataError(
            f"label {label} has spatial shape {sl} but its image {image} has {si} (after reorientation to "
            "RAS); resample the label onto the image grid"
        )
    err = float(np.abs(ai - al).max())
    if err > atol_mm:
        raise DataError(
            f"label {label} and image {image} have different voxel->world affines (max difference "
            f"{err:.3g} mm, tolerance {atol_mm} mm): the label is not on its image's grid. Resample the "
            "label onto the image grid or fix its header"
        )
