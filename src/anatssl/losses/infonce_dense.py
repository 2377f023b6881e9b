"""Pixel-wise InfoNCE with explicit (hard) negatives, as in SAM (Yan et al., IEEE TMI 2022, Eq. 1-2).

Each anchor ``q_i`` has one positive ``p_i`` (the embedding of the same anatomical point in the other
view) and ``K`` negatives ``n_ik``; negatives can be masked out individually (e.g. because they lie
within the exclusion radius of the true partner). With all vectors unit-norm,

    L = -1/N sum_i log( exp(q_i.p_i / tau) / (exp(q_i.p_i / tau) + sum_k m_ik exp(q_i.n_ik / tau)) )

``tau = 0.5`` is SAM's default: a high temperature keeps the gradient spread over many negatives
rather than only the hardest one, which matters because "hard" negatives of a pixel-level task are
often near-duplicates of the positive (neighbouring voxels).

This file is SAM's dense variant; the MoCo-style instance InfoNCE with a queue lives in
``losses/infonce.py``.
"""

from __future__ import annotations

import torch


def dense_info_nce(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.5,
    neg_mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE over explicit negatives.

    Args:
        anchor: (N, D) unit-norm anchors.
        positive: (N, D) unit-norm positives, row i pairs with anchor i.
        negatives: (N, K, D) unit-norm negatives of each anchor.
        temperature: tau in the formula above.
        neg_mask: (N, K) bool, True = use this negative. ``None`` uses all.
        weight: (N,) float weights of the anchors (0 drops an anchor, e.g. a padded pair); the loss is
            the weighted mean. ``None`` weighs all anchors equally.

    Returns:
        scalar loss (0 when every weight is 0).
    """
    if anchor.ndim != 2 or positive.shape != anchor.shape:
        raise ValueError(
            f"anchor and positive must both be (N, D), got {tuple(anchor.shape)}, {tuple(positive.shape)}"
        )
    if negatives.ndim != 3 or negatives.shape[0] != anchor.shape[0] or negatives.shape[2] != anchor.shape[1]:
        raise ValueError(
            f"negatives must be (N, K, D) = ({anchor.shape[0]}, K, {anchor.shape[1]}), "
            f"got {tuple(negatives.shape)}"
        )
    return info_nce_from_similarities(
        (anchor * positive).sum(-1),
        torch.einsum("nd,nkd->nk", anchor, negatives),
        temperature,
        neg_mask,
        weight,
    )


def info_nce_from_similarities(
    pos_sim: torch.Tensor,
    neg_sim: torch.Tensor,
    temperature: float = 0.5,
    neg_mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`dense_info_nce` from the similarities themselves: (N,) anchor-positive and (N, K)
    anchor-negative cosines.

    For callers that can get the negatives' similarities more cheaply than by gathering (N, K, D)
    vectors: SAM's fine head reads them out of one (N, M) anchor-by-candidate product, whose backward
    is a matrix product instead of a scatter-add into the embedding map.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if pos_sim.ndim != 1 or neg_sim.ndim != 2 or neg_sim.shape[0] != pos_sim.shape[0]:
        raise ValueError(
            f"pos_sim must be (N,) and neg_sim (N, K), got {tuple(pos_sim.shape)}, {tuple(neg_sim.shape)}"
        )
    pos = pos_sim[:, None] / temperature  # (N, 1)
    neg = neg_sim / temperature  # (N, K)
    if neg_mask is not None:
        neg = neg.masked_fill(~neg_mask, float("-inf"))
    logits = torch.cat([pos, neg], dim=1)
    per_anchor = torch.logsumexp(logits, dim=1) - pos[:, 0]  # (N,)
    if weight is None:
        return per_anchor.mean()
    w = weight.to(per_anchor.dtype)
    return (per_anchor * w).sum() / w.sum().clamp_min(1e-12)


def hard_negative_indices(
    scores: torch.Tensor,
    excluded: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coarse-to-fine mining (SAM Sec. III-B): the ``k`` candidates most similar to each anchor under a
    *coarse* score, among those not ``excluded`` (within the radius of the true partner).

    Args:
        scores: (N, M) similarity of each anchor to each candidate (higher = harder).
        excluded: (N, M) bool, True = may not be a negative.
        k: how many negatives per anchor (clamped to M).

    Returns:
        ``(idx (N, k) long, valid (N, k) bool)``; ``valid`` is False where fewer than ``k`` candidates
        were allowed (those indices point at an excluded candidate and must be masked).
    """
    if scores.shape != excluded.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and excluded {tuple(excluded.shape)} differ in shape")
    k = min(k, scores.shape[1])
    masked = scores.masked_fill(excluded, float("-inf"))
    top, idx = masked.topk(k, dim=1)
    return idx, torch.isfinite(top)
