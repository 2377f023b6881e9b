"""anatssl: anatomy-aware self-supervised pretraining of 3D medical image encoders.

Methods (Alice, S2DC, SAM and the baselines) live in :mod:`anatssl.methods`, backbones in
:mod:`anatssl.models.backbones`, the method-agnostic trainer in :mod:`anatssl.engine`.
"""

__version__ = "0.1.0"
