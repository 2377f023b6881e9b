"""Dustbin Sinkhorn and dual softmax: marginals, sharpness vs temperature, batching, autocast."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from anatssl.losses.sinkhorn import dual_softmax, log_sinkhorn_dustbin, sinkhorn_assignment


def _perfect_scores(n: int, dim: int, tau: float, seed: int = 0) -> torch.Tensor:
    """(1, n, n) scores of n random unit vectors against themselves (perfect features)."""
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    return (z @ z.t() / tau).unsqueeze(0)


def test_plan_marginals_hold() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 5, 7, generator=g) * 3
    m, n = 5, 7
    plan = log_sinkhorn_dustbin(scores, alpha=1.0, iters=100).exp()
    mu = torch.tensor([1.0] * m + [n]) / (m + n)
    nu = torch.tensor([1.0] * n + [m]) / (m + n)
    torch.testing.assert_close(plan.sum(2), mu.expand(3, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(plan.sum(1), nu.expand(3, -1), atol=1e-5, rtol=0)
    p = sinkhorn_assignment(scores, 1.0, 100)
    assert p.shape == (3, m, n)
    assert float(p.sum(2).max()) <= 1.0 + 1e-4  # real rows: at most one unit of mass


def test_perfect_features_tau_007_give_sharp_matches() -> None:
    p = sinkhorn_assignment(_perfect_scores(144, 512, tau=0.07), alpha=1.0, iters=100)
    diag = p[0].diagonal()
    assert float(diag.min()) > 0.9
    off = p[0] - torch.diag(diag)
    assert float(off.max()) < 0.05


def test_tau_1_stays_near_uniform() -> None:
    """Why the default is not the public code's tau = 1: scores in [-1, 1] cannot make a sharp plan."""
    p = sinkhorn_assignment(_perfect_scores(144, 512, tau=1.0), alpha=1.0, iters=100)
    diag = p[0].diagonal()
    assert float(diag.max()) < 0.03  # ~ e / (e + 143 + e) = 0.018 instead of ~1
    assert float(diag.mean()) > 1.0 / 144  # still above uniform, just barely


def test_batched_equals_per_problem_loop() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(4, 6, 6, generator=g) * 5
    batched = log_sinkhorn_dustbin(scores, 0.5, 50)
    for i in range(4):
        single = log_sinkhorn_dustbin(scores[i : i + 1], 0.5, 50)
        torch.testing.assert_close(batched[i : i + 1], single)


def test_stable_for_large_scores_and_under_autocast() -> None:
    scores = _perfect_scores(32, 64, tau=0.01)  # scores up to 100: exp would overflow fp16
    ref = sinkhorn_assignment(scores, 1.0, 100)
    assert torch.isfinite(ref).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = sinkhorn_assignment(scores.bfloat16(), 1.0, 100)
    assert low.dtype == torch.float32
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low, sinkhorn_assignment(scores.bfloat16().float(), 1.0, 100))


def test_gradients_reach_scores_and_learnable_alpha() -> None:
    scores = torch.randn(2, 4, 4, requires_grad=True)
    alpha = torch.tensor(1.0, requires_grad=True)
    p = sinkhorn_assignment(scores, alpha, 20)
    p.diagonal(dim1=1, dim2=2).log().sum().backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()
    assert alpha.grad is not None and float(alpha.grad.abs()) > 0


def test_dual_softmax_hand_computed() -> None:
    s = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]])
    # row softmax: [[1/4, 3/4], [1/2, 1/2]]; column softmax: [[1/2, 3/4], [1/2, 1/4]]
    expected = torch.tensor([[[1 / 8, 9 / 16], [1 / 4, 1 / 8]]])
    torch.testing.assert_close(dual_softmax(s), expected)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scores must be"):
        log_sinkhorn_dustbin(torch.zeros(3, 3), 1.0)
    with pytest.raises(ValueError, match="iters"):
        log_sinkhorn_dustbin(torch.zeros(1, 3, 3), 1.0, iters=0)
