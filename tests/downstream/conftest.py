"""Fixtures for tests/downstream (helpers live in downstream_fixtures.py, importable by name)."""

from __future__ import annotations

from pathlib import Path

import pytest
from downstream_fixtures import write_labelled_dataset


@pytest.fixture
def labelled_dataset(tmp_path: Path) -> Path:
    return write_labelled_dataset(tmp_path / "data")
