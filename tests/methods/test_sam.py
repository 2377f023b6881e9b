"""The ``sam`` method: views -> batch -> training_step; loss terms pinned on a hand-made case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anatssl.data.volume import Volume
from anatssl.engine.data import collate
from anatssl.errors import ConfigError
from anatssl.methods import build_method
from anatssl.methods.sam import SAM, fine_to_coarse, sample_at
from anatssl.runs import load_pretrain_config


def _method(**over: object) -> SAM:
    ov = [
        "sam.width=4",
        "sam.embed_dim=8",
        "sam.crop_size=[32,32,32]",
        "sam.num_pairs=16",
        "sam.num_coarse_negatives=20",
        "sam.num_hard_negatives=8",
        "sam.num_fine_random_negatives=4",
    ]
    ov += [f"{k}={v}" for k, v in over.items()]
    m = build_method(load_pretrain_config("sam", "tiny", None, ov))
    assert isinstance(m, SAM)
    return m


def _volume(seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in (48, 40, 44)], indexing="ij")
    img = ((x**2 + y**2) < 0.8) * (0.5 + 0.2 * np.sin(5 * x) * np.cos(4 * y + 3 * z))
    img = img + rng.normal(0, 0.01, img.shape)
    return Volume(img[None].astype(np.float32), np.diag([4.0, 4.0, 4.0, 1.0]), "phantom.nii.gz")


def test_training_step_runs_and_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    m = _method()
    batch = collate([m.views(_volume(i), np.random.default_rng(i), None) for i in range(2)])
    out = m.training_step(batch, 0)
    assert set(out) >= {"loss", "loss_fine", "loss_coarse", "pos_sim_fine"}
    assert torch.isfinite(out["loss"])
    total = float(out["loss_fine"] + out["loss_coarse"])
    assert float(out["loss"].detach()) == pytest.approx(total, rel=1e-6)
    out["loss"].backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert m.encoder() is m.net


def test_loss_terms_on_a_hand_made_case() -> None:
    """Two anchors, embeddings chosen so every logit is known; one negative per anchor survives the radius."""
    m = _method(
        **{
            "sam.num_hard_negatives": 1,
            "sam.num_fine_random_negatives": 0,
            "sam.num_coarse_negatives": 1,
            "sam.radius_mm": 5.0,
            "sam.coarse_radius_mm": 0.0,
            "sam.temperature": 0.5,
        }
    )
    d = 2
    # fine maps 2x1x1 grid: view 2 cell 0 = e0, cell 1 = e1; coarse maps constant e0 (1x1x1 grid)
    f2 = torch.zeros(d, 2, 1, 1)
    f2[0, 0], f2[1, 1] = 1.0, 1.0
    f1 = torch.zeros(d, 2, 1, 1)
    f1[:, 0, 0, 0] = torch.tensor([0.6, 0.8])  # anchor 0 at cell 0, partner = view-2 cell 0 (e0)
    f1[:, 1, 0, 0] = torch.tensor([0.0, 1.0])  # anchor 1 at cell 1, partner = view-2 cell 1 (e1)
    c = torch.zeros(d, 1, 1, 1)
    c[0] = 1.0
    pts = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]])
    grid2mm = torch.eye(3) * 8.0  # cells 8 mm apart > radius: the other cell is the only negative
    torch.manual_seed(0)
    t = m.pair_losses(f1, f2, c, c, pts, pts, torch.tensor([True, True]), grid2mm)
    # fine: anchor 0 logits pos 0.6/0.5=1.2, neg <(.6,.8),e1>/0.5=1.6 ; anchor 1: pos 2, neg 0
    l0 = math.log(math.exp(1.2) + math.exp(1.6)) - 1.2
    l1 = math.log(math.exp(2.0) + 1.0) - 2.0
    assert float(t["loss_fine"]) == pytest.approx((l0 + l1) / 2, abs=1e-5)
    assert float(t["pos_sim_fine"]) == pytest.approx((0.6 + 1.0) / 2, abs=1e-6)
    # coarse: every embedding is e0 and radius 0 keeps the random negative -> logits (2, 2): log 2
    assert float(t["loss_coarse"]) == pytest.approx(math.log(2.0), abs=1e-5)


def test_sampling_helpers() -> None:
    emb = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    got = sample_at(emb, torch.tensor([[1.0, 0, 1], [0.5, 1, 0]]))
    np.testing.assert_allclose(
        got.numpy(),
        [
            [emb[0, 1, 0, 1], emb[1, 1, 0, 1]],
            [(emb[0, 0, 1, 0] + emb[0, 1, 1, 0]) / 2, (emb[1, 0, 1, 0] + emb[1, 1, 1, 0]) / 2],
        ],
    )
    # fine cell g (voxels 2g, 2g+1) -> coarse stride 8: centre voxel 2g + 0.5 -> (2g + 0.5 - 3.5) / 8
    np.testing.assert_allclose(
        fine_to_coarse(torch.tensor([[0.0, 4.0, 1.5]]), 8).numpy(), [[-3 / 8, 5 / 8, 0.0]]
    )


@pytest.mark.slow
def test_trains_a_few_steps() -> None:
    """Fine loss goes down on repeated views of one phantom (memorisation: the pipeline has a gradient)."""
    torch.manual_seed(0)
    m = _method()
    batch = collate([m.views(_volume(0), np.random.default_rng(0), None)])
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(8):
        out = m.training_step(batch, 0)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else float(out["loss"].detach())
    assert float(out["loss"].detach()) < first


def test_bad_config() -> None:
    with pytest.raises(ConfigError, match="divisible by 8"):
        _method(**{"sam.crop_size": "[36,32,32]"})
    with pytest.raises(ConfigError, match="mining_score"):
        _method(**{"sam.mining_score": "fine"})


def test_combined_mining_runs() -> None:
    torch.manual_seed(0)
    m = _method(**{"sam.mining_score": "combined"})
    batch = collate([m.views(_volume(1), np.random.default_rng(1), None)])
    assert torch.isfinite(m.training_step(batch, 0)["loss"])
    assert F.normalize(torch.ones(3), dim=0).norm() == pytest.approx(1.0)


def test_pair_losses_equal_the_explicit_negative_gather() -> None:
    """The fine / coarse InfoNCE read the negatives' cosines out of one anchor-by-candidate product;
    loss and gradients must equal SAM's formula written with gathered (N, K, D) negative vectors."""
    from anatssl.losses.infonce_dense import dense_info_nce, hard_negative_indices
    from anatssl.losses.sam import sam_pair_losses

    g = torch.Generator().manual_seed(0)
    d, n = 16, 40
    f1, f2 = (F.normalize(torch.randn(d, 8, 8, 8, generator=g), dim=0).requires_grad_() for _ in range(2))
    c1, c2 = (F.normalize(torch.randn(d, 2, 2, 2, generator=g), dim=0).requires_grad_() for _ in range(2))
    pts1, pts2 = torch.rand(n, 3, generator=g) * 7, torch.rand(n, 3, generator=g) * 7
    valid = torch.rand(n, generator=g) > 0.2
    grid2mm = torch.diag(torch.tensor([4.0, 4.0, 5.0]))
    kw = dict(
        temperature=0.5,
        num_coarse_negatives=30,
        coarse_radius_mm=12.0,
        num_hard_negatives=10,
        num_fine_random_negatives=4,
        radius_mm=6.0,
    )

    torch.manual_seed(3)
    got = sam_pair_losses(f1, f2, c1, c2, pts1, pts2, valid, grid2mm, coarse_stride=8, **kw)  # type: ignore[arg-type]
    got_loss = got["loss_fine"] + got["loss_coarse"]
    got_grads = torch.autograd.grad(got_loss, [f1, f2, c1, c2])

    # the same draws, written out with explicit negative vectors
    torch.manual_seed(3)
    w = valid.float()
    q_f, pos_f = F.normalize(sample_at(f1, pts1), dim=1), F.normalize(sample_at(f2, pts2), dim=1)
    q_c = F.normalize(sample_at(c1, fine_to_coarse(pts1, 8)), dim=1)
    pos_c = F.normalize(sample_at(c2, fine_to_coarse(pts2, 8)), dim=1)
    cand = torch.stack(torch.meshgrid(*[torch.arange(8)] * 3, indexing="ij"), -1).view(-1, 3).float()
    dist = torch.linalg.norm((cand[None] - pts2[:, None]) @ grid2mm.t(), dim=-1)
    ridx = torch.randint(0, len(cand), (30,))
    neg_c = F.normalize(sample_at(c2, fine_to_coarse(cand[ridx], 8)), dim=1)
    loss_c = dense_info_nce(q_c, pos_c, neg_c[None].expand(n, -1, -1), 0.5, dist[:, ridx] >= 12.0, w)
    with torch.no_grad():
        score = q_c @ F.normalize(sample_at(c2, fine_to_coarse(cand, 8)), dim=1).t()
        hidx, hvalid = hard_negative_indices(score, dist < 6.0, 10)
        r = torch.randint(0, len(cand), (n, 4))
        hidx, hvalid = torch.cat([hidx, r], 1), torch.cat([hvalid, torch.gather(dist, 1, r) >= 6.0], 1)
    neg_f = f2.reshape(d, -1).t()[hidx]  # (N, K, D)
    loss_f = dense_info_nce(q_f, pos_f, neg_f, 0.5, hvalid, w)
    want_grads = torch.autograd.grad(loss_f + loss_c, [f1, f2, c1, c2])

    assert float(got["loss_fine"]) == pytest.approx(float(loss_f), abs=1e-6)
    assert float(got["loss_coarse"]) == pytest.approx(float(loss_c), abs=1e-6)
    assert float(loss_f) > 0.5 and float(loss_c) > 0.5  # a real loss, not an all-masked 0
    for a, b in zip(got_grads, want_grads):
        assert float(b.abs().max()) > 0
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)
