import pickle
from pathlib import Path

import pytest
import torch

from anatssl.engine.checkpoint import FORMAT, atomic_torch_save, load_checkpoint, rng_state, set_rng_state
from anatssl.errors import CheckpointError


class _Boom:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full")


def test_atomic_save_never_leaves_a_half_written_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    atomic_torch_save({"format": FORMAT, "step": 1, "w": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_torch_save({"format": FORMAT, "step": 2, "w": torch.zeros(3), "bad": _Boom()}, path)
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 1 and torch.equal(ckpt["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_corrupt_and_foreign_files_get_clear_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    atomic_torch_save({"format": FORMAT, "step": 3, "w": torch.ones(1000)}, good)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"trunc\.pt.*corrupt or truncated"):
        load_checkpoint(trunc)
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(CheckpointError, match="not an anatssl checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


class Payload:
    pass


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    with evil.open("wb") as f:
        pickle.dump({"format": FORMAT, "obj": Payload()}, f)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(evil)


def test_rng_state_round_trip_through_weights_only_file(tmp_path: Path) -> None:
    import random

    import numpy as np

    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    atomic_torch_save({"format": FORMAT, "rng": state}, tmp_path / "r.pt")
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    b = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    assert a == b
