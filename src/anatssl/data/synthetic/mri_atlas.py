"""The real brain MRI the ``mri-brain`` subjects are made from: a T1 template and two label atlases.

Sources (all in MNI space, both installed by packages, nothing downloaded at run time):

* **image**: nilearn's MNI152 T1 template (ICBM152 2009a nonlinear, skull-stripped, 1 mm, 197 x 233 x
  189), the file ``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz`` shipped
  inside the nilearn wheel, scaled to 0-1 by its maximum as ``load_mni152_template(resolution=1)`` does
  (read directly: importing ``nilearn.datasets`` costs seconds of scikit-learn and pandas imports).
  ``pip install -e ".[mri]"``.
* **labels**: Debian's ``mricron-data`` (``apt-get install mricron-data``), in
  ``/usr/share/mricron/templates`` (``ANATSSL_MRICRON_DIR`` overrides it):
  ``HarvardOxford-cort-maxprob-thr0-1mm.nii.gz`` (FSL's Harvard-Oxford cortical atlas, 48 bilateral
  regions, max-probability, LAS 1 mm) and ``JHU-WhiteMatter-labels-1mm.nii.gz`` (48 white-matter tracts,
  RAS 1 mm, names in the ``.nii.txt`` beside it). Both are FSL's MNI152 space; the nilearn template is
  the 2009a release of the same space, so atlas and image agree to the few millimetres by which the
  releases differ (the atlases are not re-registered).

Only the MNI152 template is used: the package's other brains (``ch2``, ``inia19``) stay out of the
project's suites and tests, kept for an independent check.

The merged label table (stable: built from the two fixed name lists below, never from the files):
Harvard-Oxford region ``k`` (1..48) split at the mid-sagittal plane (MNI x < 0 is left) is id ``k``
(left) and ``48 + k`` (right), as nilearn's ``symmetric_split``; JHU tract ``k`` (1..48) is ``100 + k``
and wins where both atlases label a voxel (the thr0 cortical map reaches into the white matter; 57,319
of the JHU atlas's 170,006 voxels are also cortical there). 0 is background. 144 labels, uint8.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anatssl.errors import DataError

MRICRON_DIR = Path("/usr/share/mricron/templates")
"""Where Debian's ``mricron-data`` installs its atlases (``ANATSSL_MRICRON_DIR`` overrides it)."""
HO_FILE = "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz"
JHU_FILE = "JHU-WhiteMatter-labels-1mm.nii.gz"
TEMPLATE_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
INSTALL_HINT = (
    'the mri-brain data needs nilearn (pip install -e ".[mri]", or pip install nilearn) for the MNI152 '
    "template and Debian's mricron-data (apt-get install mricron-data) for the Harvard-Oxford and JHU "
    "label maps"
)

HO_CORTICAL: tuple[str, ...] = (
    "Frontal Pole",
    "Insular Cortex",
    "Superior Frontal Gyrus",
    "Middle Frontal Gyrus",
    "Inferior Frontal Gyrus, pars triangularis",
    "Inferior Frontal Gyrus, pars opercularis",
    "Precentral Gyrus",
    "Temporal Pole",
    "Superior Temporal Gyrus, anterior division",
    "Superior Temporal Gyrus, posterior division",
    "Middle Temporal Gyrus, anterior division",
    "Middle Temporal Gyrus, posterior division",
    "Middle Temporal Gyrus, temporooccipital part",
    "Inferior Temporal Gyrus, anterior division",
    "Inferior Temporal Gyrus, posterior division",
    "Inferior Temporal Gyrus, temporooccipital part",
    "Postcentral Gyrus",
    "Superior Parietal Lobule",
    "Supramarginal Gyrus, anterior division",
    "Supramarginal Gyrus, posterior division",
    "Angular Gyrus",
    "Lateral Occipital Cortex, superior division",
    "Lateral Occipital Cortex, inferior division",
    "Intracalcarine Cortex",
    "Frontal Medial Cortex",
    "Juxtapositional Lobule Cortex (formerly Supplementary Motor Cortex)",
    "Subcallosal Cortex",
    "Paracingulate Gyrus",
    "Cingulate Gyrus, anterior division",
    "Cingulate Gyrus, posterior division",
    "Precuneous Cortex",
    "Cuneal Cortex",
    "Frontal Orbital Cortex",
    "Parahippocampal Gyrus, anterior division",
    "Parahippocampal Gyrus, posterior division",
    "Lingual Gyrus",
    "Temporal Fusiform Cortex, anterior division",
    "Temporal Fusiform Cortex, posterior division",
    "Temporal Occipital Fusiform Cortex",
    "Occipital Fusiform Gyrus",
    "Frontal Operculum Cortex",
    "Central Opercular Cortex",
    "Parietal Operculum Cortex",
    "Planum Polare",
    "Heschl's Gyrus (includes H1 and H2)",
    "Planum Temporale",
    "Supracalcarine Cortex",
    "Occipital Pole",
)
"""FSL's HarvardOxford-Cortical.xml, value k = entry k - 1 (the .nii.gz ships without names)."""

JHU_TRACTS: tuple[str, ...] = (
    "Middle cerebellar peduncle",
    "Pontine crossing tract",
    "Genu of corpus callosum",
    "Body of corpus callosum",
    "Splenium of corpus callosum",
    "Fornix (column and body)",
    "Corticospinal tract R",
    "Corticospinal tract L",
    "Medial lemniscus R",
    "Medial lemniscus L",
    "Inferior cerebellar peduncle R",
    "Inferior cerebellar peduncle L",
    "Superior cerebellar peduncle R",
    "Superior cerebellar peduncle L",
    "Cerebral peduncle R",
    "Cerebral peduncle L",
    "Anterior limb of internal capsule R",
    "Anterior limb of internal capsule L",
    "Posterior limb of internal capsule R",
    "Posterior limb of internal capsule L",
    "Retrolenticular part of internal capsule R",
    "Retrolenticular part of internal capsule L",
    "Anterior corona radiata R",
    "Anterior corona radiata L",
    "Superior corona radiata R",
    "Superior corona radiata L",
    "Posterior corona radiata R",
    "Posterior corona radiata L",
    "Posterior thalamic radiation R",
    "Posterior thalamic radiation L",
    "Sagittal stratum R",
    "Sagittal stratum L",
    "External capsule R",
    "External capsule L",
    "Cingulum (cingulate gyrus) R",
    "Cingulum (cingulate gyrus) L",
    "Cingulum (hippocampus) R",
    "Cingulum (hippocampus) L",
    "Fornix (cres) / Stria terminalis R",
    "Fornix (cres) / Stria terminalis L",
    "Superior longitudinal fasciculus R",
    "Superior longitudinal fasciculus L",
    "Superior fronto-occipital fasciculus R",
    "Superior fronto-occipital fasciculus L",
    "Uncinate fasciculus R",
    "Uncinate fasciculus L",
    "Tapetum R",
    "Tapetum L",
)
"""JHU-WhiteMatter-labels-1mm.nii.txt, value k = entry k - 1 (shortened: its parenthesised remarks)."""

JHU_OFFSET = 100


def _snake(name: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", name.lower())).strip("_")


def _label_table() -> dict[int, str]:
    table = {0: "background"}
    for k, name in enumerate(HO_CORTICAL, start=1):
        table[k] = _snake(name) + "_l"
        table[len(HO_CORTICAL) + k] = _snake(name) + "_r"
    for k, name in enumerate(JHU_TRACTS, start=1):
        table[JHU_OFFSET + k] = "jhu_" + _snake(name)
    return table


MRI_LABELS: dict[int, str] = _label_table()
"""Label id -> name of the merged map (see the module docstring): ``frontal_pole_l`` = 1,
``frontal_pole_r`` = 49, ``jhu_middle_cerebellar_peduncle`` = 101, ..."""
MRI_LABEL_IDS: dict[str, int] = {name: i for i, name in MRI_LABELS.items()}


@dataclass(frozen=True)
class BrainAtlas:
    """The MNI152 T1 template and the merged label map on their own grids (world = MNI mm)."""

    t1: np.ndarray
    """(X, Y, Z) float32 template intensities in [0, 1] (nilearn's scaling), 1 mm."""
    t1_affine: np.ndarray
    labels: np.ndarray
    """(X, Y, Z) uint8 merged label map (``MRI_LABELS``) on the JHU atlas's 1 mm RAS grid."""
    labels_affine: np.ndarray
    centroids: dict[str, tuple[float, float, float]]
    """Label name -> centroid of its voxels in MNI world mm (every label of ``MRI_LABELS`` but 0)."""
    sources: dict[str, str]
    """What was read: file paths and package versions (written into dataset.json)."""


def mricron_dir() -> Path:
    return Path(os.environ.get("ANATSSL_MRICRON_DIR", str(MRICRON_DIR)))


def missing_sources() -> str | None:
    """None when nilearn and the mricron-data atlases are present, else what is missing and how to
    install it (for a clear error or a pytest skip)."""
    missing = []
    t1 = template_path()
    if t1 is None:
        missing.append("nilearn is not installed")
    elif not t1.is_file():
        missing.append(f"{t1} is absent (nilearn without its MNI152 template)")
    d = mricron_dir()
    for f in (HO_FILE, JHU_FILE):
        if not (d / f).is_file():
            missing.append(f"{d / f} is absent")
    if not missing:
        return None
    return "; ".join(missing) + f": {INSTALL_HINT}"


def template_path() -> Path | None:
    """nilearn's MNI152 T1 file, found without importing nilearn (None: nilearn is not installed)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("nilearn")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / TEMPLATE_FILE


def _resample_nearest(
    src: np.ndarray, src_affine: np.ndarray, shape: tuple[int, ...], affine: np.ndarray
) -> np.ndarray:
    """Nearest-neighbour resampling of a label map onto another grid through the two affines (exact
    flips and shifts when the grids differ by those only, as the two mricron-data atlases do)."""
    m = np.linalg.inv(src_affine) @ affine
    lin, off = m[:3, :3], m[:3, 3]
    if np.allclose(np.abs(lin), np.eye(3)) and np.allclose(off, np.rint(off)):
        sign, start = np.diag(lin).round().astype(int), np.rint(off).astype(int)
        ranges = [start[a] + sign[a] * np.arange(shape[a]) for a in range(3)]
        if all(r.min() >= 0 and r.max() < src.shape[a] for a, r in enumerate(ranges)):
            return np.ascontiguousarray(src[np.ix_(*ranges)])
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = affine[:3, :3] @ idx + affine[:3, 3:4]
    vox = np.linalg.inv(src_affine)[:3, :3] @ world + np.linalg.inv(src_affine)[:3, 3:4]
    ijk = np.rint(vox).astype(np.int64)
    ok = np.all((ijk >= 0) & (ijk < np.array(src.shape)[:, None]), axis=0)
    out = np.zeros(idx.shape[1], dtype=src.dtype)
    out[ok] = src[ijk[0, ok], ijk[1, ok], ijk[2, ok]]
    return out.reshape(shape)


@functools.lru_cache(maxsize=1)
def load_atlas() -> BrainAtlas:
    """Read the template and both atlases, merge the labels and compute every centroid (~5 s; cached
    in the process). Raises DataError naming what to install when a source is absent."""
    problem = missing_sources()
    if problem is not None:
        raise DataError(problem)
    import importlib.metadata

    import nibabel as nib
    from scipy import ndimage

    t1_file = template_path()
    assert t1_file is not None
    t1_img = nib.nifti1.load(str(t1_file))
    t1 = np.asarray(t1_img.dataobj, dtype=np.float32)
    t1 /= t1.max()  # as nilearn.datasets.load_mni152_template
    d = mricron_dir()
    ho_img = nib.nifti1.load(str(d / HO_FILE))
    jhu_img = nib.nifti1.load(str(d / JHU_FILE))
    ho = np.asarray(ho_img.dataobj).astype(np.uint8)
    jhu = np.asarray(jhu_img.dataobj).astype(np.uint8)
    if ho.max() > len(HO_CORTICAL) or jhu.max() > len(JHU_TRACTS):
        raise DataError(
            f"{d}: label values up to {ho.max()} (Harvard-Oxford) / {jhu.max()} (JHU), expected at most "
            f"{len(HO_CORTICAL)} / {len(JHU_TRACTS)}; not the mricron-data atlases this generator knows"
        )
    grid_affine = np.asarray(jhu_img.affine, dtype=np.float64)
    ho_on_grid = _resample_nearest(ho, np.asarray(ho_img.affine, np.float64), jhu.shape, grid_affine)
    x_world = grid_affine[0, 0] * np.arange(jhu.shape[0]) + grid_affine[0, 3]
    right = (x_world >= 0)[:, None, None]
    merged = np.where(ho_on_grid > 0, ho_on_grid + np.where(right, len(HO_CORTICAL), 0), 0).astype(np.uint8)
    merged[jhu > 0] = jhu[jhu > 0] + JHU_OFFSET
    ids = [i for i in MRI_LABELS if i > 0]
    coms = ndimage.center_of_mass(np.ones_like(merged, dtype=np.float32), merged, ids)
    centroids: dict[str, tuple[float, float, float]] = {}
    for i, c in zip(ids, coms):
        if np.all(np.isfinite(c)):
            w = grid_affine[:3, :3] @ np.asarray(c) + grid_affine[:3, 3]
            centroids[MRI_LABELS[i]] = (float(w[0]), float(w[1]), float(w[2]))
    sources = {
        "image": f"nilearn {importlib.metadata.version('nilearn')} {t1_file.name} (MNI152 ICBM 2009a, "
        "skull-stripped, as load_mni152_template(resolution=1))",
        "harvard_oxford": str(d / HO_FILE),
        "jhu": str(d / JHU_FILE),
        "mricron_data": _debian_version("mricron-data"),
    }
    return BrainAtlas(
        t1=t1,
        t1_affine=np.asarray(t1_img.affine, dtype=np.float64),
        labels=merged,
        labels_affine=grid_affine,
        centroids=centroids,
        sources=sources,
    )


def _debian_version(package: str) -> str:
    """The installed Debian package's version from dpkg's status file, or 'unknown'."""
    try:
        text = Path("/var/lib/dpkg/status").read_text(errors="replace")
    except OSError:
        return "unknown"
    for block in text.split("\n\n"):
        if f"Package: {package}\n" in block + "\n":
            m = re.search(r"^Version: (.+)$", block, re.M)
            if m:
                return m.group(1)
    return "unknown"
