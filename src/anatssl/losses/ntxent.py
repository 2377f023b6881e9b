"""NT-Xent (SimCLR; Chen et al. 2020), the contrastive term of Tang et al.'s Swin-UNETR pretraining."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """(B, D), (B, D) -> scalar. Positives: (z1[i], z2[i]); negatives: the other 2B - 2 embeddings.

    Temperature 0.5 as in Tang et al. (their ``Contrast`` loss uses ``temperature=0.5``).
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(
            f"nt_xent needs two (B, D) tensors of one shape, got {tuple(z1.shape)}, {tuple(z2.shape)}"
        )
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target)
