"""FeatureQueue: FIFO wrap-around, overflow, state dict round trip, and consistency under 2-process gloo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from anatssl.engine.queue import FeatureQueue


def _rows(*values: float) -> torch.Tensor:
    return torch.tensor([[v, -v] for v in values], dtype=torch.float32)


def test_fills_then_wraps_around() -> None:
    q = FeatureQueue(size=5, dim=2)
    assert q.features().shape == (0, 2)
    q.enqueue(_rows(1, 2, 3))
    torch.testing.assert_close(q.features(), _rows(1, 2, 3))
    assert int(q.ptr) == 3 and int(q.count) == 3
    q.enqueue(_rows(4, 5, 6))  # 4, 5 fill slots 3, 4; 6 wraps to slot 0 (overwriting the oldest, 1)
    torch.testing.assert_close(q.features(), _rows(6, 2, 3, 4, 5))
    assert int(q.ptr) == 1 and int(q.count) == 5
    q.enqueue(_rows(7))
    torch.testing.assert_close(q.features(), _rows(6, 7, 3, 4, 5))


def test_more_keys_than_slots_keeps_the_newest() -> None:
    q = FeatureQueue(size=3, dim=2)
    q.enqueue(_rows(1, 2, 3, 4, 5))
    torch.testing.assert_close(q.features(), _rows(3, 4, 5))
    assert int(q.ptr) == 0 and int(q.count) == 3


def test_zero_size_queue_is_a_no_op_and_state_round_trips() -> None:
    empty = FeatureQueue(size=0, dim=2)
    empty.enqueue(_rows(1))
    assert empty.features().shape == (0, 2)
    a = FeatureQueue(size=4, dim=2)
    a.enqueue(_rows(1, 2, 3))
    b = FeatureQueue(size=4, dim=2)
    b.load_state_dict(a.state_dict())
    b.enqueue(_rows(9))
    a.enqueue(_rows(9))
    torch.testing.assert_close(a.features(), b.features())


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        q = FeatureQueue(size=5, dim=2)
        for step in range(3):  # each rank enqueues 2 keys per step: 4 per step in all, so the queue wraps
            q.enqueue(_rows(100 * rank + 10 * step + 1, 100 * rank + 10 * step + 2))
        torch.save(
            {"queue": q.queue.clone(), "ptr": int(q.ptr), "count": int(q.count)},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_queues_stay_identical(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    torch.testing.assert_close(r0["queue"], r1["queue"])
    assert r0["ptr"] == r1["ptr"] == (3 * 4) % 5
    assert r0["count"] == 5
    # the last step's keys, gathered in rank order: rank 0 (21, 22) then rank 1 (121, 122); slots 3, 4, 0, 1
    expected_tail = _rows(21, 22, 121, 122)
    torch.testing.assert_close(r0["queue"][[3, 4, 0, 1]], expected_tail)
