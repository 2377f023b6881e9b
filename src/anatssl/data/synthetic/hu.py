"""CT attenuation (Hounsfield units) of the phantom's tissues, drawn per subject.

Ranges are typical adult values (e.g. Lamba et al., "CT Hounsfield numbers of soft tissues on unenhanced
abdominal CT scans", Clin Imaging 2014; Kalender, "Computed Tomography", 2011): each subject draws one
value per tissue uniformly from its range, so the intensity of an organ varies between subjects as it
does between scanners and patients. ``venous`` subjects have a portal-venous contrast phase: blood,
kidney cortex, spleen and pancreas enhance; the liver is kept within 40-80 HU in both phases so that a
fixed window separates it from its neighbours.
"""

from __future__ import annotations

import numpy as np

HU_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "none": {
        "air": (-1000.0, -1000.0),
        "lung": (-880.0, -830.0),
        "fat": (-115.0, -85.0),
        "visceral_fat": (-110.0, -80.0),
        "skin": (20.0, 40.0),
        "muscle": (40.0, 55.0),
        "soft_tissue": (25.0, 40.0),
        "liver": (50.0, 65.0),
        "spleen": (40.0, 50.0),
        "kidney_cortex": (28.0, 36.0),
        "kidney_medulla": (25.0, 32.0),
        "pancreas": (35.0, 45.0),
        "blood": (38.0, 48.0),
        "myocardium": (40.0, 50.0),
        "stomach_content": (5.0, 25.0),
        "urine": (0.0, 12.0),
        "cortical_bone": (700.0, 1000.0),
        "cancellous_bone": (180.0, 280.0),
        "disc": (70.0, 100.0),
        "spinal_cord": (25.0, 40.0),
    },
}
HU_RANGES["venous"] = {
    **HU_RANGES["none"],
    "liver": (62.0, 75.0),
    "spleen": (95.0, 120.0),
    "kidney_cortex": (150.0, 190.0),
    "kidney_medulla": (90.0, 120.0),
    "pancreas": (80.0, 100.0),
    "blood": (140.0, 200.0),
    "myocardium": (90.0, 110.0),
}

CONTRAST_PHASES: tuple[str, ...] = ("none", "venous")


def sample_hu(rng: np.random.Generator, contrast: str) -> dict[str, float]:
    """One HU value per tissue for a subject scanned in ``contrast`` phase (``none`` or ``venous``)."""
    if contrast not in HU_RANGES:
        raise ValueError(f"contrast {contrast!r} is not one of {sorted(HU_RANGES)}")
    return {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in HU_RANGES[contrast].items()}
