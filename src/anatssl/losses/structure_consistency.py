"""S2DC's patch-to-structure consistency loss L_p2s (Pan et al., ICCV 2025, Sec. 3.3).

A token that belongs to a compact, distinct structure has a *peaked* similarity distribution over the
other view (one clear partner); a token inside a large homogeneous region has a flat one. L_p2s pulls
matched tokens together with a weight that grows with the peakedness of their row and column, and
pushes unmatched pairs apart.
"""

from __future__ import annotations

import torch

_EPS = 1e-6


def peakedness(sim: torch.Tensor, dim: int) -> torch.Tensor:
    """(max - mean) / std of ``sim`` along ``dim`` (std unbiased, as ``torch.std``), that dim removed."""
    mx = sim.amax(dim=dim)
    mean = sim.mean(dim=dim)
    std = sim.std(dim=dim).clamp_min(_EPS)
    return (mx - mean) / std


def structure_consistency_loss(
    z_src: torch.Tensor,
    z_aug: torch.Tensor,
    match: torch.Tensor,
    detach_weights: bool = False,
    eps: float = _EPS,
) -> torch.Tensor:
    """L_p2s over a batch of token layers, averaged over the L layers.

    Args:
        z_src: (L, m, D) unit-norm student tokens i; z_aug: (L, n, D) unit-norm teacher tokens j.
        match: (L, m, n) {0, 1} ground truth G.
        detach_weights: stop gradients through the peakedness weights (the public code does not).

    With S_hat = (1 + cos) / 2, c_j = peakedness of column j over i, w_col = softmax_j(c),
    c_i = peakedness of row i over j, w_row = softmax_i(c):
    ``L = 1/2 sum_{G=1} (w_col_j + w_row_i) (-log S_hat_ij) + mean_{G=0} -log(1 - S_hat_ij)``.
    """
    with torch.autocast(device_type=z_src.device.type, enabled=False):  # similarities in float32
        cos = torch.einsum("lmd,lnd->lmn", z_src.float(), z_aug.float())
    s_hat = ((1.0 + cos) / 2.0).clamp(eps, 1.0 - eps)
    w_col = peakedness(s_hat, dim=1).softmax(dim=1)  # (L, n)
    w_row = peakedness(s_hat, dim=2).softmax(dim=1)  # (L, m)
    if detach_weights:
        w_col, w_row = w_col.detach(), w_row.detach()
    g = match.to(s_hat.dtype)
    weights = w_row.unsqueeze(2) + w_col.unsqueeze(1)  # (L, m, n)
    pos = 0.5 * (g * weights * -s_hat.log()).sum(dim=(1, 2))
    neg_mask = 1.0 - g
    neg = (neg_mask * -(1.0 - s_hat).log()).sum(dim=(1, 2)) / neg_mask.sum(dim=(1, 2)).clamp_min(1.0)
    return (pos + neg).mean()
