"""MoCo-style InfoNCE pinned to hand-computed values."""

from __future__ import annotations

import math

import torch

from anatssl.losses.infonce import info_nce


def test_hand_computed_normalised() -> None:
    q = torch.tensor([[2.0, 0.0]])  # unit after normalisation
    pos = torch.tensor([[3.0, 0.0]])
    neg = torch.tensor([[[0.0, 5.0]]])
    queue = torch.tensor([[-1.0, 0.0]])
    # cosine logits [1, 0, -1] / 0.5 = [2, 0, -2]
    expected = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-2)))
    got = info_nce(q, pos, neg, queue, temperature=0.5, normalize=True)
    torch.testing.assert_close(got, torch.tensor(expected))


def test_hand_computed_unnormalised_public_code_behaviour() -> None:
    q = torch.tensor([[2.0, 0.0]])
    pos = torch.tensor([[3.0, 0.0]])
    neg = torch.tensor([[[0.0, 5.0]]])
    queue = torch.tensor([[-1.0, 0.0]])
    # raw dot products [6, 0, -2] / 0.9
    logits = [6 / 0.9, 0.0, -2 / 0.9]
    expected = -logits[0] + math.log(sum(math.exp(v) for v in logits))
    got = info_nce(q, pos, neg, queue, temperature=0.9, normalize=False)
    torch.testing.assert_close(got, torch.tensor(expected))


def test_batch_mean_and_optional_negatives() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # no negatives at all: a single logit, loss 0
    torch.testing.assert_close(info_nce(q, pos, None, None, 0.5), torch.tensor(0.0))
    queue = torch.tensor([[0.0, 1.0]])
    l0 = -math.log(math.exp(2) / (math.exp(2) + 1))  # q0: pos 1, queue 0
    l1 = -math.log(1 / (1 + math.exp(2)))  # q1: pos 0, queue 1
    got = info_nce(q, pos, None, queue, 0.5)
    torch.testing.assert_close(got, torch.tensor((l0 + l1) / 2))
    empty = torch.zeros(0, 2)
    torch.testing.assert_close(info_nce(q, pos, None, empty, 0.5), torch.tensor(0.0))
