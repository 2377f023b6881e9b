"""SAM's losses (Yan et al., IEEE TMI 2022): InfoNCE on the coarse and the fine embedding of one crop pair,
the fine one against coarse-to-fine mined hard negatives (see :mod:`anatssl.methods.sam`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anatssl.losses.infonce_dense import hard_negative_indices, info_nce_from_similarities
from anatssl.views.sam import FINE_STRIDE


def sample_at(emb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(D, X, Y, Z) map, (N, 3) fractional grid indices -> (N, D) trilinear samples (border-clamped)."""
    size = torch.tensor(emb.shape[1:], dtype=idx.dtype, device=idx.device)
    norm = 2 * idx / (size - 1).clamp_min(1) - 1  # align_corners=True: index 0 -> -1, n-1 -> 1
    grid = norm.flip(-1).view(1, -1, 1, 1, 3).to(emb.dtype)  # grid_sample wants (z, y, x) = (W, H, D) order
    out = F.grid_sample(emb[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(emb.shape[0], -1).t()


def fine_to_coarse(idx: torch.Tensor, coarse_stride: int) -> torch.Tensor:
    """Fine-grid indices -> fractional coarse-grid indices (both block-centred, see ``sam_model``)."""
    vox = FINE_STRIDE * idx + (FINE_STRIDE - 1) / 2
    return (vox - (coarse_stride - 1) / 2) / coarse_stride


def sam_pair_losses(
    f1: torch.Tensor,
    f2: torch.Tensor,
    c1: torch.Tensor,
    c2: torch.Tensor,
    pts1: torch.Tensor,
    pts2: torch.Tensor,
    valid: torch.Tensor,
    grid2mm: torch.Tensor,
    *,
    coarse_stride: int,
    temperature: float,
    num_coarse_negatives: int,
    coarse_radius_mm: float,
    num_hard_negatives: int,
    num_fine_random_negatives: int,
    radius_mm: float,
    mining_score: str = "coarse",
) -> dict[str, torch.Tensor]:
    """Losses of one crop pair. f*: (D, F...) fine maps, c*: (D, C...) coarse maps, pts*: (N, 3) fine
    indices, valid: (N,), grid2mm: (3, 3) view-2 fine step -> mm. Settings as in ``SAMConfig``."""
    cs = coarse_stride
    w = valid.float()

    q_f = F.normalize(sample_at(f1, pts1), dim=1)
    pos_f = F.normalize(sample_at(f2, pts2), dim=1)
    q_c = F.normalize(sample_at(c1, fine_to_coarse(pts1, cs)), dim=1)
    pos_c = F.normalize(sample_at(c2, fine_to_coarse(pts2, cs)), dim=1)

    # every fine-grid position of view 2 is a candidate
    fshape = f2.shape[1:]
    axes = [torch.arange(n, device=f2.device) for n in fshape]
    cand = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).view(-1, 3).float()  # (M, 3)
    dist = torch.linalg.norm((cand[None] - pts2[:, None]) @ grid2mm.t(), dim=-1)  # (N, M) mm

    # coarse head: random negatives of the other crop
    m = cand.shape[0]
    ridx = torch.randint(0, m, (num_coarse_negatives,), device=f2.device)
    neg_c = F.normalize(sample_at(c2, fine_to_coarse(cand[ridx], cs)), dim=1)  # (K, D)
    mask_c = dist[:, ridx] >= coarse_radius_mm
    # every anchor shares the K negatives: one (N, K) product, not (N, K, D) copies
    loss_c = info_nce_from_similarities((q_c * pos_c).sum(1), q_c @ neg_c.t(), temperature, mask_c, w)

    # fine head: coarse-to-fine hard negatives + a few random ones
    f2_flat = f2.reshape(f2.shape[0], -1).t()  # (M, D)
    with torch.no_grad():
        c2_up = F.normalize(sample_at(c2, fine_to_coarse(cand, cs)), dim=1)  # (M, D)
        score = q_c @ c2_up.t()
        if mining_score == "combined":
            score = 0.5 * (score + q_f @ f2_flat.t())
        hidx, hvalid = hard_negative_indices(score, dist < radius_mm, num_hard_negatives)
        if num_fine_random_negatives > 0:
            r = torch.randint(0, m, (len(q_f), num_fine_random_negatives), device=f2.device)
            hidx = torch.cat([hidx, r], 1)
            hvalid = torch.cat([hvalid, torch.gather(dist, 1, r) >= radius_mm], 1)
    # the negatives' cosines read out of the (N, M) anchor-by-candidate product: the same numbers as
    # gathering (N, K, D) vectors, but its backward is a matrix product, not a scatter-add into the map
    # (measured: SAM tiny on brain MRI at 4 mm, one thread, median step 1.99 -> 1.24 s; docs/methods/sam.md)
    neg_f = torch.gather(q_f @ f2_flat.t(), 1, hidx)  # (N, K)
    loss_f = info_nce_from_similarities((q_f * pos_f).sum(1), neg_f, temperature, hvalid, w)
    pos_sim = ((q_f * pos_f).sum(1) * w).sum() / w.sum().clamp_min(1)
    return {"loss_fine": loss_f, "loss_coarse": loss_c, "pos_sim_fine": pos_sim.detach()}
