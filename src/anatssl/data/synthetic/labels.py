"""The label map and landmark names of the synthetic anatomy.

Labels follow TotalSegmentator's naming where a structure exists there (``kidney_left``, ``aorta``,
``inferior_vena_cava``...). Voxels inside the body that belong to no listed structure (visceral fat,
bowel, mediastinal fat, intervertebral discs, spinal canal, iliac vessels, skin) are background (0),
as in every public organ-segmentation set.
"""

from __future__ import annotations

LABELS: dict[int, str] = {
    0: "background",
    1: "lung_right",
    2: "lung_left",
    3: "heart",
    4: "aorta",
    5: "inferior_vena_cava",
    6: "trachea",
    7: "liver",
    8: "spleen",
    9: "stomach",
    10: "pancreas",
    11: "kidney_right",
    12: "kidney_left",
    13: "bladder",
    14: "vertebrae",
    15: "rib_cage",
    16: "pelvis",
    17: "muscle",
    18: "subcutaneous_fat",
}
"""Label id -> structure name. ``rib_cage`` holds ribs and sternum, ``pelvis`` the hip bones, sacrum
and pubis, ``muscle`` the skeletal muscle (body wall, paraspinal, psoas)."""

LABEL_IDS: dict[str, int] = {name: i for i, name in LABELS.items()}

VERTEBRAE: tuple[str, ...] = (
    "C3", "C4", "C5", "C6", "C7",
    "T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12",
    "L1", "L2", "L3", "L4", "L5",
)  # fmt: skip
"""Modelled vertebral levels, cranial to caudal. Landmarks are given for T1..L5."""

LANDMARK_STRUCTURES: dict[str, str] = {
    **{f"vertebra_{v}": "vertebrae" for v in VERTEBRAE[5:]},
    "kidney_right_upper_pole": "kidney_right",
    "kidney_right_lower_pole": "kidney_right",
    "kidney_left_upper_pole": "kidney_left",
    "kidney_left_lower_pole": "kidney_left",
    "liver_dome": "liver",
    "spleen_tip": "spleen",
    "heart_apex": "heart",
    "aortic_bifurcation": "aorta",
    "carina": "trachea",
    "lung_right_apex": "lung_right",
    "lung_left_apex": "lung_left",
    "pancreas_head": "pancreas",
    "bladder_centre": "bladder",
    "pubic_symphysis": "pelvis",
}
"""Landmark name -> the structure it lies in (a subject lists those inside its field of view)."""
