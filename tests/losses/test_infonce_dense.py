"""SAM's dense InfoNCE pinned to hand-computed values."""

import math

import pytest
import torch

from anatssl.losses.infonce_dense import dense_info_nce, hard_negative_indices, info_nce_from_similarities


def _case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    neg = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]], [[1.0, 0.0], [0.6, 0.8]]])
    return anchor, pos, neg


def test_hand_computed_value() -> None:
    a, p, n = _case()
    # anchor 0: logits 0.6/0.5=1.2 (pos), 0, -2 ; anchor 1: 2 (pos), 0, 1.6
    l0 = math.log(math.exp(1.2) + 1 + math.exp(-2)) - 1.2  # 0.29413
    l1 = math.log(math.exp(2.0) + 1 + math.exp(1.6)) - 2.0  # 0.59092
    assert l0 == pytest.approx(0.2941286, abs=1e-6)
    got = dense_info_nce(a, p, n, temperature=0.5)
    assert float(got) == pytest.approx((l0 + l1) / 2, abs=1e-6)


def test_mask_and_weight() -> None:
    a, p, n = _case()
    mask = torch.tensor([[True, False], [True, True]])
    w = torch.tensor([1.0, 0.0])  # drop anchor 1
    got = dense_info_nce(a, p, n, temperature=0.5, neg_mask=mask, weight=w)
    assert float(got) == pytest.approx(math.log(math.exp(1.2) + 1) - 1.2, abs=1e-6)  # 0.26328


def test_all_negatives_masked_gives_zero() -> None:
    a, p, n = _case()
    got = dense_info_nce(a, p, n, neg_mask=torch.zeros(2, 2, dtype=torch.bool))
    assert float(got) == pytest.approx(0.0, abs=1e-7)


def test_bad_shapes() -> None:
    a, p, n = _case()
    with pytest.raises(ValueError, match="negatives must be"):
        dense_info_nce(a, p, n[:, :, :1])
    with pytest.raises(ValueError, match="temperature"):
        dense_info_nce(a, p, n, temperature=0.0)


def test_hard_negatives_skip_excluded() -> None:
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.5], [0.0, 0.2, 0.3, 0.1]])
    excluded = torch.tensor([[True, False, False, False], [False, False, True, True]])
    idx, valid = hard_negative_indices(scores, excluded, k=3)
    assert idx[0].tolist() == [1, 3, 2] and valid[0].all()
    assert idx[1, :2].tolist() == [1, 0] and valid[1].tolist() == [True, True, False]


def test_from_similarities_equals_explicit_negatives() -> None:
    a, p, n = _case()
    mask = torch.tensor([[True, False], [True, True]])
    w = torch.tensor([1.0, 0.5])
    want = dense_info_nce(a, p, n, temperature=0.5, neg_mask=mask, weight=w)
    got = info_nce_from_similarities((a * p).sum(1), torch.einsum("nd,nkd->nk", a, n), 0.5, mask, w)
    assert float(got) == pytest.approx(float(want), abs=1e-7)
    # anchor 0 keeps negative 0 only (cos 0), anchor 1 both (cos 0 and 0.8)
    l0 = math.log(math.exp(1.2) + 1) - 1.2
    l1 = math.log(math.exp(2.0) + 1 + math.exp(1.6)) - 2.0
    assert float(got) == pytest.approx((l0 + 0.5 * l1) / 1.5, abs=1e-6)
    with pytest.raises(ValueError, match="pos_sim must be"):
        info_nce_from_similarities(torch.zeros(2, 1), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="temperature"):
        info_nce_from_similarities(torch.zeros(2), torch.zeros(2, 3), temperature=0.0)
