"""swinssl (Tang et al. 2022): views and loss terms pinned to hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anatssl.data.volume import Volume
from anatssl.losses.ntxent import nt_xent
from anatssl.methods import build_method
from anatssl.runs import load_pretrain_config
from anatssl.views.crops import crop_around, crop_at
from anatssl.views.swinssl import cutout, rotate_about_z
from engine_fixtures import FAST_SWINSSL


def test_nt_xent_matches_hand_computation() -> None:
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    # row 0 (z1[0]): sims to z1[1], z2[0], z2[1] = 0, 1, 0 -> /t = 0, 2, 0; positive = z2[0]
    expected = -math.log(math.exp(2) / (math.exp(0) + math.exp(2) + math.exp(0)))
    assert nt_xent(z1, z2, t).item() == pytest.approx(expected, rel=1e-6)  # all 4 rows are symmetric
    with pytest.raises(ValueError, match="two \\(B, D\\) tensors"):
        nt_xent(z1, z2[:1], t)


def test_rotation_is_about_the_slice_axis() -> None:
    x = np.zeros((1, 4, 4, 3), dtype=np.float32)
    x[0, 3, 0, :] = 1.0  # a line along z at (x=3, y=0)
    r = rotate_about_z(x, 1)
    assert r.shape == x.shape
    assert np.array_equal(r[0, :, :, 0], r[0, :, :, 2])  # z untouched
    assert r[0, 3, 3, 1] == 1.0 and r.sum() == x.sum()  # 90 deg in (X, Y): (i, j) -> (n-1-j, i)
    assert np.array_equal(rotate_about_z(x, 4), x)


def test_cutout_changes_boxes_only() -> None:
    rng = np.random.default_rng(0)
    x = np.full((1, 16, 16, 16), 0.5, dtype=np.float32)
    y = cutout(x, rng, max_boxes=2, min_frac=0.25, max_frac=0.25, noise_prob=0.0)
    changed = y != x
    assert 0 < changed.sum() <= 2 * 4**3 and np.all(y[changed] == 0.0)
    assert np.all(x == 0.5)  # input untouched


def test_crops_pad_outside_the_volume() -> None:
    img = np.arange(27, dtype=np.float32).reshape(1, 3, 3, 3)
    c = crop_at(img, (-1, 0, 1), (3, 3, 3))
    assert c[0, 0].sum() == 0  # x = -1 is outside
    assert c[0, 1, 0, 0] == img[0, 0, 0, 1]
    c2, start = crop_around(img, (1, 1, 1), (5, 5, 5))
    assert start == (-1, -1, -1) and c2[0, 1:4, 1:4, 1:4].tolist() == img[0].tolist()


def test_training_step_terms_are_finite_and_backpropagate() -> None:
    torch.manual_seed(0)
    cfg = load_pretrain_config("swinssl", "tiny", None, [*FAST_SWINSSL])
    method = build_method(cfg)
    rng = np.random.default_rng(0)
    vol = Volume(rng.random((1, 40, 36, 30), dtype=np.float32), np.eye(4))  # smaller than the crop: padded
    samples = [method.views(vol, np.random.default_rng(i), None) for i in range(2)]
    assert samples[0]["x1"].shape == (1, 32, 32, 32)
    batch = {k: torch.as_tensor(np.stack([s[k] for s in samples])) for k in samples[0]}
    out = method.training_step(batch, 0)
    assert set(out) == {"loss", "rot", "contrast", "inpaint"}
    assert all(torch.isfinite(v) for v in out.values())
    assert out["loss"].item() == pytest.approx(
        (out["rot"] + out["contrast"] + out["inpaint"]).item(), rel=1e-6
    )
    assert out["contrast"].item() > 0  # two volumes: each pair has negatives
    out["loss"].backward()
    for name, p in method.named_parameters():
        if not name.startswith("backbone."):
            assert p.grad is not None, name  # heads
    enc = torch.autograd.grad(
        method.backbone.encode(batch["x1"])[-1].sum(), list(method.backbone.parameters()), allow_unused=True
    )
    used = [p for p, g in zip(method.backbone.parameters(), enc) if g is not None]
    assert used and all(p.grad is not None for p in used)  # every encoder weight is trained
