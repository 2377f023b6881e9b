"""NT-Xent (SimCLR; Chen et al. 2020), the contrastive term of Tang et al.'s Swin-UNETR pretraining."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anatssl.engine import distributed as D
from anatssl.engine.autograd_collectives import all_gather_with_grad


def nt_xent(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, all_ranks: bool = False
) -> torch.Tensor:
    """(B, D), (B, D) -> scalar. Positives: (z1[i], z2[i]); negatives: every other embedding.

    Temperature 0.5 as in Tang et al. (their ``Contrast`` loss uses ``temperature=0.5``). The logits
    are computed in float32 whatever the autocast region.

    ``all_ranks`` (under DDP): the negatives are the other ``2 W B - 2`` embeddings of *all* ranks,
    gathered with :func:`~anatssl.engine.autograd_collectives.all_gather_with_grad` (whose backward
    sends each rank the gradient of its own embeddings from every rank's loss); the anchors are this
    rank's ``2 B``. Each rank returns the mean over its anchors, so the mean of the ranks' losses is
    the loss of one process on the concatenated batch (rank order), and DDP's averaged gradient is its
    gradient. Without it (or on one process) the negatives are the other ``2 B - 2`` of this rank
    (SimCLR's per-GPU negatives; lightly #59).
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(
            f"nt_xent needs two (B, D) tensors of one shape, got {tuple(z1.shape)}, {tuple(z2.shape)}"
        )
    with torch.autocast(device_type=z1.device.type, enabled=False):
        return _nt_xent_fp32(z1.float(), z2.float(), temperature, all_ranks)


def _nt_xent_fp32(z1: torch.Tensor, z2: torch.Tensor, temperature: float, all_ranks: bool) -> torch.Tensor:
    b = z1.shape[0]
    q = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, D): this rank's anchors
    w, r = (D.world_size(), D.rank()) if all_ranks else (1, 0)
    if w > 1:
        k = F.normalize(torch.cat([all_gather_with_grad(z1), all_gather_with_grad(z2)]), dim=1)
    else:
        k = q  # (2 W B, D): [z1 of every rank, z2 of every rank]
    sim = q @ k.t() / temperature
    i = torch.arange(b, device=q.device)
    own1, own2 = r * b + i, w * b + r * b + i  # columns of this rank's z1 and z2 rows
    rows = torch.arange(2 * b, device=q.device)
    sim = sim.index_put((rows, torch.cat([own1, own2])), torch.tensor(float("-inf"), device=q.device))
    target = torch.cat([own2, own1])
    return F.cross_entropy(sim, target)
