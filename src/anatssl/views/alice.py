"""Alice's views: a cross-patient anatomical crop pair with block masks (Jiang et al., ICCV 2023).

For one sample (volume A): draw a partner B from the rest of the training set, mine a pair of voxels
(p in A, p' in B) showing the same anatomy (:mod:`anatssl.anatomy.pairing`), cut ``crop_size^3``
crops Q around p and K around p' (zero-padded where they leave the scan), apply light augmentation to
each, and draw an independent block mask per crop. The masks are applied by the method (student
input ``x * ~mask``); the teacher and the reconstruction target use the unmasked crops.

Output (one sample; the engine stacks samples into a batch):
    ``q``, ``k``: (C, S, S, S) float32 crops;  ``q_mask``, ``k_mask``: (S, S, S) bool, True = masked;
    ``pair_score``: () float32 (nan unless ``pairing="sam"``); ``pair_accepted``: () float32 0/1;
    ``p_a``, ``p_b``: (3,) int64 crop centres (voxel indices in A and B).

With ``data.modality=mri`` (and ``augment``), each crop also gets its own draw of
:class:`~anatssl.views.intensity.MRIIntensity` (gamma, bias field, gain) after the light augmentation;
the pair mining reads the unaugmented volumes. CT views are unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from anatssl.anatomy.embedding import EmbeddingMap
from anatssl.anatomy.pairing import PAIRING_MODES, PairMiner, check_coverage
from anatssl.data.volume import Volume
from anatssl.errors import DataError
from anatssl.views.base import VolumeProvider
from anatssl.views.crops import crop_around
from anatssl.views.intensity import MRIIntensity
from anatssl.views.masks import MASK_SHAPES, block_mask


def light_augment(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(C, S, S, S) -> same shape: the Swin-UNETR / Alice pretraining transforms.

    Random flip of each axis (p = 0.2), rotation by k * 90 degrees in the axial (X, Y) plane (p = 0.2),
    intensity shift by U(-0.1, 0.1) (p = 0.5); the public code computes these and forgets to apply them.
    """
    out = crop
    for axis in (1, 2, 3):
        if rng.random() < 0.2:
            out = np.flip(out, axis=axis)
    if rng.random() < 0.2:
        out = np.rot90(out, k=int(rng.integers(1, 4)), axes=(1, 2))
    if rng.random() < 0.5:
        out = out + np.float32(rng.uniform(-0.1, 0.1))
    return np.ascontiguousarray(out, dtype=np.float32)


class AliceViews:
    """The picklable ``views`` callable of :class:`anatssl.methods.alice.Alice` (see the module docstring)."""

    def __init__(
        self,
        crop_size: int = 64,
        pairing: str = "sam",
        embeddings_dir: str | None = None,
        miner: PairMiner | None = None,
        mask_patch: int = 16,
        mask_ratio: float = 0.75,
        mask_shape: str = "cube",
        augment: bool = True,
        mri: MRIIntensity | None = None,
    ) -> None:
        if pairing not in PAIRING_MODES:
            raise ValueError(f"pairing {pairing!r}; valid: {', '.join(PAIRING_MODES)}")
        if mask_shape not in MASK_SHAPES:
            raise ValueError(f"mask shape {mask_shape!r}; valid: {', '.join(MASK_SHAPES)}")
        if crop_size % mask_patch:
            raise ValueError(f"crop_size {crop_size} must be a multiple of mask_patch {mask_patch}")
        if pairing == "sam" and not embeddings_dir:
            raise ValueError("pairing 'sam' needs an embeddings directory")
        self.crop_size = crop_size
        self.pairing = pairing
        self.embeddings_dir = embeddings_dir
        self.miner = miner or PairMiner()
        self.mask_patch, self.mask_ratio, self.mask_shape = mask_patch, mask_ratio, mask_shape
        self.augment = augment
        self.mri = mri
        self._cache: Any = None
        self._checked: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"], state["_checked"] = None, set()
        return state

    def embedding(self, volume: Volume) -> EmbeddingMap:
        """The cached SAM embedding of ``volume``.

        The first request for a scan (per process) checks that the entry exists, was computed with the
        cache's current model and preset, and covers the scan (:func:`check_coverage`). Whether the
        scan *file* changed since embedding (a full read to hash it) is checked once for the whole
        dataset at start-up (``anatssl.runs.alice_stage0.check_alice_data``), not in every DataLoader
        worker.
        """
        from anatssl.anatomy.cache import EmbeddingCache, load_map

        if self._cache is None:
            self._cache = EmbeddingCache(self.embeddings_dir)  # type: ignore[arg-type]
        if volume.path in self._checked:
            return load_map(self._cache.entry_path(volume.path))
        emb = self._cache.get(volume.path, check_source=False)
        check_coverage(volume, emb, self.miner.foreground(volume))  # where queries are drawn
        self._checked.add(volume.path)
        return emb

    def partner(self, volume: Volume, rng: np.random.Generator, source: VolumeProvider) -> Volume:
        """A partner drawn uniformly from the other volumes of the training set."""
        if self.pairing == "same":
            return volume
        n = len(source)
        if n < 2:
            raise DataError(
                f"Alice pairing {self.pairing!r} needs at least 2 training volumes, got {n}; "
                "add scans or use alice.pairing=same"
            )
        j = int(rng.integers(n))
        other = source.load(j)
        if other.path == volume.path:
            other = source.load((j + 1 + int(rng.integers(n - 1))) % n)
        return other

    def __call__(self, volume: Volume, rng: np.random.Generator, source: VolumeProvider) -> dict[str, Any]:
        vol_b = self.partner(volume, rng, source)
        emb_a = emb_b = None
        if self.pairing == "sam":
            emb_a, emb_b = self.embedding(volume), self.embedding(vol_b)
        pair = self.miner.pair(volume, vol_b, rng, self.pairing, emb_a, emb_b)
        size = (self.crop_size,) * 3
        q = crop_around(volume.image, pair.voxel_a, size)[0].astype(np.float32, copy=False)
        k = crop_around(vol_b.image, pair.voxel_b, size)[0].astype(np.float32, copy=False)
        if self.augment:
            q, k = light_augment(q, rng), light_augment(k, rng)
            if self.mri is not None:
                q, k = self.mri(q, rng), self.mri(k, rng)
        shape = (self.crop_size,) * 3
        mq, mk = (block_mask(shape, self.mask_patch, self.mask_ratio, self.mask_shape, rng) for _ in range(2))
        return {
            "q": torch.from_numpy(q),
            "k": torch.from_numpy(k),
            "q_mask": torch.from_numpy(mq),
            "k_mask": torch.from_numpy(mk),
            "pair_score": torch.tensor(pair.score, dtype=torch.float32),
            "pair_accepted": torch.tensor(float(pair.accepted)),
            "p_a": torch.from_numpy(pair.voxel_a),
            "p_b": torch.from_numpy(pair.voxel_b),
        }
