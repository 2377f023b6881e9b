"""Soft token matchers for S2DC's patch-to-patch term: log-domain dustbin Sinkhorn and dual softmax.

Both map a batch of score matrices ``S`` (L, m, n) (L = samples x token layers, all solved at once,
no Python loop over them) to a soft assignment ``P`` (L, m, n) in [0, 1] whose entries are compared
with the known correspondence.

* :func:`log_sinkhorn_dustbin` follows SuperGlue's ``log_optimal_transport`` (Sarlin et al., CVPR
  2020), which S2DC (Pan et al., ICCV 2025) uses: the score matrix is augmented with a dustbin row
  and column of constant score ``alpha`` so that tokens without a partner can send their mass there;
  marginals are (1, ..., 1, n) / (m + n) for rows and (1, ..., 1, m) / (m + n) for columns; the plan
  is multiplied by (m + n) so that every real row sums to 1.
* :func:`dual_softmax` is the LoFTR-style alternative ``softmax_row(S) * softmax_col(S)`` (ablation).

All arithmetic runs in float32 with autocast disabled: 100 log-sum-exp sweeps in bf16 lose the
marginals (bf16 has 8 mantissa bits), and the scores at tau = 0.07 reach +-14, so ``exp`` must never
be taken outside ``logsumexp``.
"""

from __future__ import annotations

import math

import torch


def _fp32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 else x.float()


def log_sinkhorn_dustbin(scores: torch.Tensor, alpha: torch.Tensor | float, iters: int = 100) -> torch.Tensor:
    """(L, m, n) scores -> (L, m + 1, n + 1) log transport plan with dustbins, in float32.

    ``exp`` of the result has row sums (1, ..., 1, n) / (m + n) and column sums (1, ..., 1, m) / (m + n)
    (columns exactly, rows to the precision reached after ``iters`` sweeps). ``alpha`` is the dustbin
    score (a float, or a 0-d tensor when it is learnt; gradients flow into it).
    """
    if scores.ndim != 3:
        raise ValueError(f"scores must be (L, m, n), got shape {tuple(scores.shape)}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    with torch.autocast(device_type=scores.device.type, enabled=False):
        s = _fp32(scores)
        num, m, n = s.shape
        a = torch.as_tensor(alpha, dtype=torch.float32, device=s.device)
        bins_col = a.expand(num, m, 1)
        bins_row = a.expand(num, 1, n)
        corner = a.expand(num, 1, 1)
        z = torch.cat([torch.cat([s, bins_col], dim=2), torch.cat([bins_row, corner], dim=2)], dim=1)
        norm = -math.log(m + n)
        log_mu = torch.full((m + 1,), norm, dtype=torch.float32, device=s.device)
        log_mu[-1] = math.log(n) + norm
        log_nu = torch.full((n + 1,), norm, dtype=torch.float32, device=s.device)
        log_nu[-1] = math.log(m) + norm
        log_mu = log_mu.expand(num, m + 1)
        log_nu = log_nu.expand(num, n + 1)
        u = torch.zeros_like(log_mu)
        v = torch.zeros_like(log_nu)
        for _ in range(iters):  # the loop is over iterations only; all L problems advance together
            u = log_mu - torch.logsumexp(z + v.unsqueeze(1), dim=2)
            v = log_nu - torch.logsumexp(z + u.unsqueeze(2), dim=1)
        return z + u.unsqueeze(2) + v.unsqueeze(1)


def sinkhorn_assignment(scores: torch.Tensor, alpha: torch.Tensor | float, iters: int = 100) -> torch.Tensor:
    """(L, m, n) scores -> (L, m, n) soft assignment P = exp(log plan) * (m + n), dustbins dropped.

    Each real row of P sums to at most 1 (the rest went to the dustbin); float32.
    """
    m, n = scores.shape[-2:]
    log_plan = log_sinkhorn_dustbin(scores, alpha, iters)
    return (log_plan[:, :m, :n] + math.log(m + n)).exp()


def dual_softmax(scores: torch.Tensor) -> torch.Tensor:
    """(L, m, n) scores -> (L, m, n) ``softmax over n * softmax over m`` (LoFTR), float32, no dustbin."""
    with torch.autocast(device_type=scores.device.type, enabled=False):
        s = _fp32(scores)
        return s.softmax(dim=2) * s.softmax(dim=1)
