"""Session-wide test settings and fixtures (every test runs on a 2-core CPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # shared helper modules (engine_fixtures, ...)

from engine_fixtures import MemorySource

torch.set_num_threads(1)  # small tensors: one thread is faster than two on a shared 2-core machine


@pytest.fixture
def memory_source() -> MemorySource:
    return MemorySource()


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 small synthetic phantoms (48^3) for CLI pretraining tests, made through the CLI once per session
    (runs write their cache folder next to them; do not modify the scans)."""
    from anatssl.cli.main import main

    out = tmp_path_factory.mktemp("synth") / "data"
    assert main(["synth", "--out", str(out), "--n", "3", "--seed", "0", "--size", "48", "--quiet"]) == 0
    return out


SYNTHETIC_DATASET = ["--n", "6", "--size", "64", "64", "72", "--lesions", "0.5", "--seed", "0"]
"""``anatssl synth`` arguments of the session's shared dataset: 6 phantoms (3 with lesions) with organ
labels and landmarks; 72 voxels along z so a 64^3 sliding window takes two positions there."""


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny synthetic dataset for the whole session, made through the CLI (do not modify it)."""
    from anatssl.cli.main import main

    out = tmp_path_factory.mktemp("synthetic") / "data"
    assert main(["synth", "--out", str(out), *SYNTHETIC_DATASET, "--quiet"]) == 0
    return out
