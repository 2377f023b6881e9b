"""The views contract: what a method's ``views`` callable receives and returns.

``views(volume, rng, source) -> dict[str, Tensor | ndarray]`` cuts one sample's inputs from one
:class:`~anatssl.data.volume.Volume`. It runs in DataLoader workers, must draw all randomness from
``rng`` (a ``numpy.random.Generator`` seeded per sample by the engine, so a resumed run sees the same
views) and never touches the networks. ``source`` gives access to the other volumes of the dataset
(Alice's cross-patient partners).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from anatssl.data.volume import Volume


class VolumeProvider(Protocol):
    """What ``views`` may ask of the dataset: its size and any volume by index."""

    def __len__(self) -> int: ...

    def load(self, index: int) -> Volume: ...


ViewFn = Callable[[Volume, np.random.Generator, VolumeProvider], dict[str, Any]]
