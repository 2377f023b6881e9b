"""DDP gradients that cross ranks, with 2 real gloo processes on CPU (``torch.multiprocessing``).

What "equal to one process on the concatenated batch" means here: rank r gets rows
``[r B, (r + 1) B)`` of a batch of ``2 B`` volumes and returns the mean loss over its rows; DDP
*averages* the parameter gradients over the 2 ranks. The mean of the two rank losses is the mean
over all ``2 B`` rows, i.e. the one-process loss, and the averaged gradient is its gradient, provided
every collective in the loss sends gradients back to the rank that made the tensor (the sum over
ranks of each rank's loss gradient, :mod:`anatssl.engine.autograd_collectives`). The models run in
float64 so that 1e-6 measures the maths, not float32 summation order.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from anatssl.engine.autograd_collectives import all_gather_with_grad
from anatssl.engine.sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm, count_batchnorm
from anatssl.losses.ntxent import nt_xent
from anatssl.models.s2dc_heads import S2DCProjectionHead

WORLD = 2
B = 2  # volumes per rank
SWINSSL = [
    "model.backbone=conv",
    "model.feature_size=4",
    "swinssl.crop_size=[32,32,32]",
    "swinssl.proj_dim=16",
    f"train.batch_size={B}",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(worker: Any, tmp: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp.mktemp("ddp_grads")
    mp.spawn(worker, args=(str(out), _free_port()), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _init(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)


def _grads(m: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None}


def _ddp_step(model: nn.Module, loss_fn: Any) -> dict[str, Any]:
    """One DDP forward + backward (DDP all-reduces the gradients and divides by the world size);
    every rank's loss terms and this rank's gradients."""
    ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    terms = loss_fn(ddp)
    terms[0].backward()
    values = torch.stack([t.detach().double() for t in terms])
    losses = [torch.zeros_like(values) for _ in range(WORLD)]
    dist.all_gather(losses, values)
    return {"losses": torch.stack(losses), "grads": _grads(model)}


def _check_equal_to_one_process(ranks: list[dict[str, Any]], ref_losses: list[float], ref: dict) -> None:
    """Rank 0's averaged gradients = the one-process gradients (1e-6), rank 1's = rank 0's (bitwise),
    the mean of the rank losses = the one-process loss (1e-6)."""
    got = ranks[0]
    for mean, want in zip(got["losses"].mean(0), ref_losses):
        assert float(mean) == pytest.approx(want, abs=1e-6)
    assert got["grads"].keys() == ref.keys()
    for name, g in ref.items():
        torch.testing.assert_close(got["grads"][name], g, rtol=1e-6, atol=1e-6, msg=name)
        torch.testing.assert_close(ranks[1]["grads"][name], got["grads"][name], rtol=0, atol=0, msg=name)


# -- NT-Xent with negatives from every rank: a projection layer (fast) -------------------------------------
def _proj() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(6, 5).double()


def _proj_batch() -> torch.Tensor:
    return torch.randn(2, WORLD * B, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def _ntxent_terms(model: nn.Module, x: torch.Tensor, gather: bool) -> tuple[torch.Tensor]:
    return (nt_xent(model(x[0]), model(x[1]), 0.5, all_ranks=gather),)


def _fast_worker(rank: int, out: str, port: int) -> None:
    """The NT-Xent and SyncBatchNorm checks in one pair of processes (starting them is most of the time)."""
    _init(rank, port)
    local = _proj_batch()[:, rank * B : (rank + 1) * B]
    result: dict[str, Any] = {
        f"ntxent_{g}": _ddp_step(_proj(), lambda m, g=g: _ntxent_terms(m, local, g)) for g in (True, False)
    }
    # torch's own differentiable gather on gloo: the same gradient as ours?
    z = torch.randn(B, 3, generator=torch.Generator().manual_seed(rank), dtype=torch.float64)
    w = torch.randn(WORLD * B, 3, generator=torch.Generator().manual_seed(10 + rank), dtype=torch.float64)
    za = z.clone().requires_grad_(True)
    ((all_gather_with_grad(za) * w).sum() ** 2).backward()
    zb = z.clone().requires_grad_(True)
    try:
        from torch.distributed.nn.functional import all_gather as torch_all_gather

        ((torch.cat(torch_all_gather(zb)) * w).sum() ** 2).backward()
        result["torch_gather_grad_diff"] = float((za.grad - zb.grad).abs().max())  # type: ignore[operator]
    except (RuntimeError, NotImplementedError) as e:
        result["torch_gather_error"] = str(e)[:300]
    result["bn"] = _bn_worker(rank)
    torch.save(result, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return _run(_fast_worker, tmp_path_factory)


def test_ntxent_across_ranks_equals_one_process_on_the_concatenated_batch(
    ranks: list[dict[str, Any]],
) -> None:
    model = _proj()  # no process group here: one process, all 2B pairs
    (loss,) = _ntxent_terms(model, _proj_batch(), False)
    loss.backward()
    _check_equal_to_one_process([r["ntxent_True"] for r in ranks], [float(loss)], _grads(model))
    # control: per-rank negatives are another loss with another gradient (the check above can fail)
    per_rank = ranks[0]["ntxent_False"]
    assert abs(float(per_rank["losses"].mean(0)[0]) - float(loss)) > 1e-3
    diff = (per_rank["grads"]["weight"] - model.weight.grad).abs().max()  # type: ignore[operator]
    assert diff > 1e-3 * model.weight.grad.abs().max()  # type: ignore[union-attr]
    # torch.distributed.nn.functional.all_gather on gloo agrees with ours (when it runs at all)
    for r in ranks:
        assert r.get("torch_gather_grad_diff", 0.0) < 1e-12, r.get("torch_gather_error")


# -- the whole swinssl method (slow: float64 convolutions) ------------------------------------------------
def _swinssl(gather: bool) -> nn.Module:
    from anatssl.methods import build_method
    from anatssl.runs import load_pretrain_config

    cfg = load_pretrain_config("swinssl", "tiny", None, [*SWINSSL, f"swinssl.gather_negatives={gather}"])
    torch.manual_seed(0)
    return build_method(cfg).double()


def _swinssl_batch(n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = {k: torch.randn(n, 1, 32, 32, 32, generator=g, dtype=torch.float64) for k in ("x1", "x2")}
    t = {k: torch.randn(n, 1, 32, 32, 32, generator=g, dtype=torch.float64) for k in ("target1", "target2")}
    r = {k: torch.randint(0, 4, (n,), generator=g) for k in ("rot1", "rot2")}
    return {**x, **t, **r}


def _swinssl_terms(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    out = model(batch, 0)
    return out["loss"], out["contrast"]


def _swinssl_worker(rank: int, out: str, port: int) -> None:
    _init(rank, port)
    local = {k: v[rank * B : (rank + 1) * B] for k, v in _swinssl_batch(WORLD * B).items()}
    result = {"swinssl": _ddp_step(_swinssl(True), lambda m: _swinssl_terms(m, local))}
    torch.save(result, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_swinssl_ddp_loss_and_gradients_equal_one_process_on_the_concatenated_batch(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The real method (conv backbone, rotation + NT-Xent + in-painting) under DDP: every term is a
    mean over this rank's volumes, so with negatives from every rank the whole step is exact."""
    ranks = _run(_swinssl_worker, tmp_path_factory)
    method = _swinssl(True)
    terms = _swinssl_terms(method, _swinssl_batch(WORLD * B))
    terms[0].backward()
    _check_equal_to_one_process([r["swinssl"] for r in ranks], [float(t) for t in terms], _grads(method))


# -- SyncBatchNorm -----------------------------------------------------------------------------------------
class _BNNet(nn.Module):
    """A conv + BatchNorm3d stem and S2DC's projection head (BatchNorm1d in both of its modes)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU())
        self.channels = S2DCProjectionHead(4, hidden_dim=8, out_dim=3, normalize=False)
        self.tokens = S2DCProjectionHead(4, hidden_dim=8, out_dim=3, bn_axis="tokens", num_tokens=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stem(x)  # (M, 4, 2, 2, 2)
        tok = f.flatten(2).transpose(1, 2)  # (M, 8, 4)
        return self.channels(tok).mean(1) + self.tokens(tok).mean(1)


def _bn_net(sync: bool) -> nn.Module:
    torch.manual_seed(0)
    net = _BNNet().double()
    return convert_sync_batchnorm(net) if sync else net


def _bn_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(WORLD * 3, 1, 2, 2, 2, generator=g, dtype=torch.float64) * 3 + 1
    return x, torch.randn(3, generator=g, dtype=torch.float64)


def _bn_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items() if "running" in k or "tracked" in k}


def _bn_worker(rank: int) -> dict[bool, Any]:
    x, c = _bn_batch()
    local = x[rank * 3 : (rank + 1) * 3]
    result: dict[bool, Any] = {}
    for sync in (True, False):
        net = _bn_net(sync)
        ddp = nn.parallel.DistributedDataParallel(net)
        for _ in range(2):  # two steps: running stats are updated twice
            ddp.zero_grad()
            ((ddp(local) * c).sum(1).mean()).backward()
        result[sync] = {"state": _bn_state(net), "grads": _grads(net), "counts": count_batchnorm(net)}
    return result


def test_sync_batchnorm_matches_one_process_on_the_concatenated_batch(ranks: list[dict[str, Any]]) -> None:
    bn_ranks = [r["bn"] for r in ranks]
    x, c = _bn_batch()
    net = _bn_net(False)
    for _ in range(2):
        net.zero_grad()
        ((net(x) * c).sum(1).mean()).backward()
    ref_state, ref_grads = _bn_state(net), _grads(net)

    for r in bn_ranks:
        assert r[True]["counts"] == (0, 5) and r[False]["counts"] == (5, 0)
        for k, v in ref_state.items():
            torch.testing.assert_close(r[True]["state"][k], v, rtol=1e-6, atol=1e-6, msg=k)
        for k, g in ref_grads.items():
            torch.testing.assert_close(r[True]["grads"][k], g, rtol=1e-6, atol=1e-6, msg=k)
    # control: plain per-rank BatchNorm has per-rank running means, unlike one process
    key = "stem.1.running_mean"
    assert (bn_ranks[0][False]["state"][key] - ref_state[key]).abs().max() > 1e-3


def test_sync_batchnorm_without_process_group_is_batchnorm() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm3d(4)
    sync = convert_sync_batchnorm(nn.Sequential(bn))[0]
    assert (
        isinstance(sync, SyncBatchNorm) and sync.weight is bn.weight and sync.running_mean is bn.running_mean
    )
    x = torch.randn(3, 4, 2, 3, 2)
    ref = nn.BatchNorm3d(4)
    torch.testing.assert_close(sync(x), ref(x), rtol=0, atol=0)
    torch.testing.assert_close(sync.running_var, ref.running_var, rtol=0, atol=0)


# -- the trainer converts a method's BatchNorm under DDP --------------------------------------------------
def _trainer_worker(rank: int, out: str, port: int) -> None:
    from anatssl.engine.trainer import Trainer
    from anatssl.runs import load_pretrain_config
    from engine_fixtures import FAST_S2DC, MemorySource

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    result = {}
    for sync in (True, False):
        opts = [*FAST_S2DC, "train.max_steps=1", "train.batch_size=1", "train.progress=false"]
        opts += ["train.tensorboard=false", f"train.sync_batchnorm={sync}"]
        cfg = load_pretrain_config("s2dc", "tiny", None, opts)
        tr = Trainer(cfg, MemorySource(shape=(64, 64, 32)), Path(out) / f"run_{sync}")  # joins the group
        tr.fit()
        result[sync] = {"counts": count_batchnorm(tr.method), "state": _bn_state(tr.method)}
    torch.save(result, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_trainer_uses_sync_batchnorm_under_ddp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """S2DC's heads (student and EMA teacher) under a real 2-process Trainer: SyncBatchNorm, so both
    ranks hold the same running statistics after a step; with ``train.sync_batchnorm=false`` they
    keep BatchNorm1d and per-rank statistics (their crops differ)."""
    ranks = _run(_trainer_worker, tmp_path_factory)
    for r in ranks:
        assert r[True]["counts"][0] == 0 and r[True]["counts"][1] >= 4
        assert r[False]["counts"][1] == 0 and r[False]["counts"][0] == r[True]["counts"][1]
    synced = [r[True]["state"] for r in ranks]
    per_rank = [r[False]["state"] for r in ranks]
    means = [k for k in synced[0] if k.endswith("running_mean")]
    assert means
    for k in means:
        torch.testing.assert_close(synced[0][k], synced[1][k], rtol=0, atol=1e-6, msg=k)
    assert any((per_rank[0][k] - per_rank[1][k]).abs().max() > 1e-4 for k in means)
