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
