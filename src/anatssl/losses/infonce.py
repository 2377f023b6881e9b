"""MoCo-style InfoNCE with per-sample negatives and a shared queue of negatives (He et al., CVPR 2020).

Generic: S2DC's global term uses it (query = student global embedding of a src crop, positive = the
teacher's embedding of the same crop augmented, per-sample negatives = the other augmented crops of
the slab, shared negatives = a :class:`~anatssl.engine.queue.FeatureQueue`); any method with a
query/key/queue structure can reuse it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor | None = None,
    shared_negatives: torch.Tensor | None = None,
    temperature: float = 0.2,
    normalize: bool = True,
) -> torch.Tensor:
    """Mean over the batch of ``-log softmax(logits)[0]`` with logits = [q.k+, q.k-_1, ...] / temperature.

    Args:
        query: (B, D); positive: (B, D).
        negatives: (B, K, D) negatives of each sample (or None).
        shared_negatives: (Q, D) negatives common to all samples, e.g. a queue (or None / empty).
        temperature: softmax temperature.
        normalize: L2-normalise every vector first (cosine logits). ``False`` uses raw dot products,
            as S2DC's public code does for its global vectors.
    """
    if query.shape != positive.shape or query.ndim != 2:
        raise ValueError(
            f"query and positive must both be (B, D); got {tuple(query.shape)}, {tuple(positive.shape)}"
        )
    with torch.autocast(device_type=query.device.type, enabled=False):  # logits in float32
        return _info_nce_fp32(query, positive, negatives, shared_negatives, temperature, normalize)


def _info_nce_fp32(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor | None,
    shared_negatives: torch.Tensor | None,
    temperature: float,
    normalize: bool,
) -> torch.Tensor:
    q, k = query.float(), positive.float()
    if normalize:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    logits = [(q * k).sum(-1, keepdim=True)]
    if negatives is not None and negatives.numel():
        neg = negatives.float()
        if normalize:
            neg = F.normalize(neg, dim=-1)
        logits.append(torch.einsum("bd,bkd->bk", q, neg))
    if shared_negatives is not None and shared_negatives.numel():
        sh = shared_negatives.float()
        if normalize:
            sh = F.normalize(sh, dim=-1)
        logits.append(q @ sh.t())
    all_logits = torch.cat(logits, dim=1) / temperature
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(all_logits, target)
