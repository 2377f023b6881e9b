"""L_p2s pinned to a closed-form 2 x 2 case and to an explicit loop over the spec's formula."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from anatssl.losses.structure_consistency import structure_consistency_loss


def test_two_by_two_closed_form() -> None:
    # cos = [[0.6, 0.8], [0.8, 0.6]] -> S_hat = [[0.8, 0.9], [0.9, 0.8]]; every row/column has the same
    # peakedness, so both weight vectors are (1/2, 1/2).
    z_src = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    z_aug = torch.tensor([[[0.6, 0.8], [0.8, 0.6]]])
    g = torch.eye(2).unsqueeze(0)
    pos = 0.5 * ((0.5 + 0.5) * -math.log(0.8) * 2)
    neg = -math.log(1 - 0.9)
    torch.testing.assert_close(structure_consistency_loss(z_src, z_aug, g), torch.tensor(pos + neg))


def _reference(zs: np.ndarray, za: np.ndarray, g: np.ndarray) -> float:
    """The spec's formula written out with loops (one layer)."""
    m, n = g.shape
    s = np.clip((1 + zs @ za.T) / 2, 1e-6, 1 - 1e-6)
    c_col = np.array([(s[:, j].max() - s[:, j].mean()) / s[:, j].std(ddof=1) for j in range(n)])
    c_row = np.array([(s[i].max() - s[i].mean()) / s[i].std(ddof=1) for i in range(m)])
    w_col = np.exp(c_col) / np.exp(c_col).sum()
    w_row = np.exp(c_row) / np.exp(c_row).sum()
    pos = 0.0
    neg, n_neg = 0.0, 0
    for i in range(m):
        for j in range(n):
            if g[i, j]:
                pos += 0.5 * (w_col[j] + w_row[i]) * -np.log(s[i, j])
            else:
                neg += -np.log(1 - s[i, j])
                n_neg += 1
    return float(pos + neg / n_neg)


def test_matches_explicit_loop_and_averages_layers() -> None:
    gen = torch.Generator().manual_seed(3)
    zs = F.normalize(torch.randn(2, 4, 5, generator=gen, dtype=torch.float64), dim=-1)
    za = F.normalize(torch.randn(2, 3, 5, generator=gen, dtype=torch.float64), dim=-1)
    g = torch.zeros(2, 4, 3)
    g[0, 0, 1] = g[0, 2, 0] = g[0, 3, 2] = 1
    g[1, 1, 1] = 1
    expected = np.mean([_reference(zs[k].numpy(), za[k].numpy(), g[k].numpy()) for k in range(2)])
    got = structure_consistency_loss(zs, za, g)
    assert abs(float(got) - expected) < 1e-5


def test_detach_switch_changes_gradients_not_value() -> None:
    gen = torch.Generator().manual_seed(4)
    zs = F.normalize(torch.randn(1, 4, 6, generator=gen), dim=-1).requires_grad_(True)
    za = F.normalize(torch.randn(1, 4, 6, generator=gen), dim=-1)
    g = torch.eye(4).unsqueeze(0)
    a = structure_consistency_loss(zs, za, g, detach_weights=False)
    (ga,) = torch.autograd.grad(a, zs)
    b = structure_consistency_loss(zs, za, g, detach_weights=True)
    (gb,) = torch.autograd.grad(b, zs)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(ga, gb)
