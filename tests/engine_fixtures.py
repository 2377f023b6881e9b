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


def check_cli_resume(
    base: list[str], opts: list[str], tmp: Path, terms: tuple[str, ...]
) -> tuple[list, dict]:
    """``anatssl <base> ... <opts>`` with ``train.max_steps=4``: 4 steps in one go == 2 steps
    (``train.stop_after=2``), then ``--resume`` to 4: the same finite ``terms`` at every step and
    bit-identical weights. -> (the uninterrupted run's metric rows, its final weights)."""
    import math

    import torch

    from anatssl.cli.main import main
    from anatssl.engine.checkpoint import load_checkpoint

    full, part = tmp / "full", tmp / "part"
    opts = [*opts, "train.max_steps=4"]
    assert main([*base, "--out", str(full), *opts]) == 0
    assert main([*base, "--out", str(part), *opts, "train.stop_after=2"]) == 0
    assert [r["step"] for r in metrics_rows(part)] == [1, 2]
    assert main([*base, "--out", str(part), "--resume"]) == 0
    a, b = metrics_rows(full), metrics_rows(part)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key in terms:
            assert math.isfinite(ra[key]) and ra[key] == rb[key], (key, ra, rb)
    wa = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(part / "checkpoints" / "last.pt")["model"]
    assert wa.keys() == wb.keys()
    for k, v in wa.items():
        torch.testing.assert_close(wb[k], v, rtol=0, atol=0, msg=k)
    return a, wa


class BlobSource:
    """Three smooth-blob volumes (72 x 70 x 40, values in [0, 1], 2 mm), the ``VolumeSource`` interface:
    structure for every method's views, CT-like normalised intensities."""

    def __init__(self, n: int = 3) -> None:
        self.volumes = []
        for seed in range(n):
            rng = np.random.default_rng(seed)
            shape = (72, 70, 40)
            x, y, z = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
            img = np.zeros(shape)
            for _ in range(6):
                c, r = rng.random(3), rng.uniform(0.15, 0.3)
                img += np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / r**2)
            img = img / img.max()
            self.volumes.append(
                Volume(img[None].astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), f"b{seed}")
            )

    def __len__(self) -> int:
        return len(self.volumes)

    def load(self, index: int) -> Volume:
        return self.volumes[index]


_CONV = ["model.backbone=conv", "model.feature_size=4"]
SMALL_VIEWS: dict[str, list[str]] = {
    "swinssl": [*_CONV, "swinssl.crop_size=[32,32,32]", "swinssl.proj_dim=16"],
    "simmim": [*_CONV, "simmim.crop_size=[32,32,32]"],
    "s2dc": [*_CONV, "s2dc.grid=2", "s2dc.crop=32", "s2dc.token_stage=3"],
    "alice": [*_CONV, "alice.pairing=random", "alice.crop_size=32", "alice.border_margin=8"],
    "modelsgenesis": [*_CONV, "modelsgenesis.crop_size=[32,32,32]", "modelsgenesis.shuffle_blocks=100"],
    "voco": [*_CONV, "voco.grid=2", "voco.crop_size=[32,32,32]"],
    "sam": ["sam.width=4", "sam.embed_dim=8", "sam.crop_size=[32,32,32]", "sam.num_pairs=16"],
}
"""Every method on the small conv backbone with 32^3 crops: views of :class:`BlobSource` volumes in a
fraction of a second (the CT-unchanged fingerprints and the MRI view tests share it)."""
