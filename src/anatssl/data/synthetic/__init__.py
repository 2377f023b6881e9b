"""The built-in synthetic anatomy: procedural CT-like torso phantoms with organ labels and landmarks.

``make_subject(seed, ...)`` builds one subject in memory; ``write_dataset(out, n, seed, ...)`` writes an
MSD-style folder (``imagesTr``, ``labelsTr``, ``landmarks``, ``dataset.json``). See ``docs/data.md``.
"""

from anatssl.data.synthetic.labels import LABEL_IDS, LABELS, LANDMARK_STRUCTURES
from anatssl.data.synthetic.subject import REGIONS, SyntheticSubject, make_subject
from anatssl.data.synthetic.writer import subject_seed, write_dataset

__all__ = [
    "LABELS",
    "LABEL_IDS",
    "LANDMARK_STRUCTURES",
    "REGIONS",
    "SyntheticSubject",
    "make_subject",
    "subject_seed",
    "write_dataset",
]
