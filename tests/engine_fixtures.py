"""Shared test helpers (importable by name: ``from engine_fixtures import MemorySource``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from anatssl.data.volume import Volume


class MemorySource:
    """A tiny in-memory dataset with the ``len`` / ``load`` interface of ``VolumeSource``."""

    def __init__(self, n: int = 3, shape: tuple[int, int, int] = (40, 40, 36), seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.volumes = [
            Volume(
                rng.random((1, *shape), dtype=np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), f"mem_{i}.nii.gz"
            )
            for i in range(n)
        ]

    def __len__(self) -> int:
        return len(self.volumes)

    def load(self, index: int) -> Volume:
        return self.volumes[index]


# overrides that make swinssl run in well under a second per step on CPU
FAST_SWINSSL = [
    "model.backbone=conv",
    "model.feature_size=8",
    "swinssl.crop_size=[32,32,32]",
    "train.progress=false",
    "train.tensorboard=false",
    "optim.warmup_steps=2",
]

# overrides that make s2dc run a step in well under a second on CPU (slab 64 x 64 x 32)
FAST_S2DC = [
    "model.backbone=conv",
    "model.feature_size=4",
    "s2dc.grid=2",
    "s2dc.crop=32",
    "s2dc.token_stage=3",
    "s2dc.patch_hidden=32",
    "s2dc.patch_dim=16",
    "s2dc.global_hidden=32",
    "s2dc.global_dim=16",
    "s2dc.queue_size=6",
]


def metrics_rows(run: Path) -> list[dict]:
    """A run folder's ``metrics.jsonl``, one dict per logged step."""
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
