"""S2DC's patch-to-patch discrepancy loss L_p2p (Pan et al., ICCV 2025, Sec. 3.2).

Student tokens of ``src`` and teacher tokens of ``aug_full`` are matched softly (Sinkhorn with a
dustbin, or dual softmax); the soft assignment ``P`` is pushed towards the known correspondence ``G``
with a class-balanced binary cross-entropy, so that tokens of *different* structures become
distinguishable (only the true partner may score high).
"""

from __future__ import annotations

import torch

from anatssl.losses.sinkhorn import dual_softmax, sinkhorn_assignment

_EPS = 1e-6


def balanced_bce(prob: torch.Tensor, target: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """(L, m, n) probabilities and {0,1} targets -> scalar.

    Per problem l: ``-mean_{G=1} log P - mean_{G=0} log(1 - P)`` with P clamped to [eps, 1 - eps];
    the positive part is averaged over the problems that have at least one positive (a token layer
    that fell completely outside the other view has none), the negative part over all problems.
    """
    p = prob.float().clamp(eps, 1.0 - eps)
    pos = target.to(p.dtype)
    neg = 1.0 - pos
    n_pos = pos.sum(dim=(1, 2))
    n_neg = neg.sum(dim=(1, 2)).clamp_min(1.0)
    pos_term = -(p.log() * pos).sum(dim=(1, 2)) / n_pos.clamp_min(1.0)
    neg_term = -((1.0 - p).log() * neg).sum(dim=(1, 2)) / n_neg
    has_pos = (n_pos > 0).to(p.dtype)
    pos_mean = (pos_term * has_pos).sum() / has_pos.sum().clamp_min(1.0)
    return pos_mean + neg_term.mean()


def patch_discrepancy_loss(
    z_src: torch.Tensor,
    z_aug: torch.Tensor,
    match: torch.Tensor,
    tau: float,
    alpha: torch.Tensor | float = 1.0,
    matcher: str = "sinkhorn",
    iters: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_p2p over a batch of token layers.

    Args:
        z_src: (L, m, D) unit-norm student tokens (one row of L = one sample's token layer).
        z_aug: (L, n, D) unit-norm teacher tokens.
        match: (L, m, n) {0, 1} ground-truth correspondence G.
        tau: temperature of S = <z, z'> / tau. 0.07 by default: with tau = 1 the scores lie in [-1, 1]
            and even perfect features leave the plan near uniform (P_match ~ 0.01 for 144 tokens).
        alpha: dustbin score (Sinkhorn only).
        matcher: ``sinkhorn`` (default) or ``dual_softmax``.
    Returns:
        (loss, P) with P (L, m, n) float32.
    """
    with torch.autocast(device_type=z_src.device.type, enabled=False):  # scores in float32
        scores = torch.einsum("lmd,lnd->lmn", z_src.float(), z_aug.float()) / tau
    if matcher == "sinkhorn":
        prob = sinkhorn_assignment(scores, alpha, iters)
    elif matcher == "dual_softmax":
        prob = dual_softmax(scores)
    else:
        raise ValueError(f"matcher = {matcher!r}; valid values: 'sinkhorn', 'dual_softmax'")
    return balanced_bce(prob, match), prob
