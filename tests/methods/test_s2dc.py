"""S2DC end to end on small synthetic volumes: views -> training_step, gradients, teacher, switches,
token stitching, and start-up errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from anatssl.data.volume import Volume
from anatssl.engine.data import collate
from anatssl.errors import ConfigError
from anatssl.methods import build_method
from anatssl.methods.s2dc import S2DC
from anatssl.runs import load_pretrain_config
from engine_fixtures import FAST_S2DC, MemorySource

FAST = FAST_S2DC


def _volume(seed: int = 0, shape: tuple[int, int, int] = (72, 70, 40)) -> Volume:
    """Smooth random blobs in [0, 1] (structure for the tokens to tell apart)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    img = np.zeros(shape)
    for _ in range(6):
        c, r = rng.random(3), rng.uniform(0.1, 0.3)
        img += np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / r**2) * rng.uniform(0.3, 1)
    return Volume((img / img.max())[None].astype(np.float32), np.eye(4))


def _method(*extra: str) -> S2DC:
    torch.manual_seed(0)
    method = build_method(load_pretrain_config("s2dc", "tiny", overrides=[*FAST, *extra]))
    assert isinstance(method, S2DC)
    return method


def _batch(method: S2DC, n: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    return collate([method.views(_volume(seed + i), np.random.default_rng(seed + i), None) for i in range(n)])


def test_training_step_terms_gradients_and_teacher() -> None:
    method = _method()
    batch = _batch(method)
    out = method.training_step(batch, step=0)
    for key in ("loss", "p2p", "p2s", "g", "p_match"):
        assert key in out and torch.isfinite(out[key]), key
    expected = 0.5 * (out["p2p"] + out["p2s"] + out["g"])
    torch.testing.assert_close(out["loss"].detach(), expected)
    out["loss"].backward()
    enc = method.student["backbone"].down  # type: ignore[union-attr]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    for head in ("patch_head", "global_head"):
        assert all(p.grad is not None for p in method.student[head].parameters())
    assert all(p.grad is None for p in method.teacher.parameters())
    assert int(method.queue.count) == 2  # one teacher src-crop key per sample
    # teacher moves towards the student at the next step, before its forward pass
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    opt.step()
    w_t = method.teacher["patch_head"].fc1.weight.clone()
    method.training_step(batch, step=1)
    w_s = method.student["patch_head"].fc1.weight.detach()
    torch.testing.assert_close(method.teacher["patch_head"].fc1.weight, 0.999 * w_t + 0.001 * w_s)
    # a second micro-batch of the same step does not update the teacher again
    w_t1 = method.teacher["patch_head"].fc1.weight.clone()
    method.training_step(batch, step=1)
    torch.testing.assert_close(method.teacher["patch_head"].fc1.weight, w_t1)


def test_token_stitching_matches_the_view_index_convention() -> None:
    """Per-crop tokens whose value is their slab coordinate land at layer index x * Ty + y."""
    method = _method()
    g, t, b = 2, method.t, 1
    z = torch.zeros(b * g * g, t**3, 3)
    for gx in range(g):
        for gy in range(g):
            for n in range(t**3):
                a, bb, k = n // (t * t), (n // t) % t, n % t  # x-major flattening of (t, t, t)
                z[gx * g + gy, n] = torch.tensor([gx * t + a, gy * t + bb, k], dtype=torch.float32)
    layers = method._layer_tokens(z, b)
    side = g * t
    assert layers.shape == (b * t, side * side, 3)
    for k in range(t):
        for x in range(side):
            for y in range(side):
                assert layers[k, x * side + y].tolist() == [x, y, k]


@pytest.mark.parametrize(
    "extra",
    [
        ["s2dc.matcher=dual_softmax"],
        ["s2dc.use_p2p=false"],
        ["s2dc.use_p2s=false", "s2dc.use_g=false"],
        ["s2dc.use_p2p=false", "s2dc.use_p2s=false"],
        ["s2dc.official=true"],
        ["s2dc.detach_p2s_weights=true", "s2dc.learn_alpha=true"],
    ],
)
def test_switches_run(extra: list[str]) -> None:
    method = _method(*extra)
    out = method.training_step(_batch(method, n=1), step=0)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    if "s2dc.learn_alpha=true" in extra:
        assert isinstance(method.alpha, torch.nn.Parameter) and method.alpha.grad is not None
    if "s2dc.use_p2p=false" in extra:
        assert "p2p" not in out


def test_official_switch_flips_the_four_behaviours() -> None:
    fixed = _method().hp
    official = _method("s2dc.official=true")
    hp = official.hp
    assert (fixed.tau, fixed.normalize_global, fixed.crop_scale_mode, fixed.bn_axis) == (
        0.07,
        True,
        "fixed",
        "channels",
    )
    assert (hp.tau, hp.normalize_global, hp.crop_scale_mode, hp.bn_axis) == (1.0, False, "official", "tokens")
    assert official.student["patch_head"].bn1.num_features == official.t**3  # BatchNorm over the tokens
    # an explicit value still wins over the switch
    assert _method("s2dc.official=true", "s2dc.tau=0.2").hp.tau == 0.2


def test_presets_resolve() -> None:
    for preset in ("tiny", "base", "official"):
        cfg = load_pretrain_config("s2dc", preset)
        assert cfg.optim.lr == 3e-4 and cfg.optim.weight_decay == 0.1 and cfg.optim.min_lr == 0.0
    base = load_pretrain_config("s2dc", "base")
    hp = base.params
    assert (hp.grid, hp.crop, hp.patch_hidden, hp.queue_size) == (4, 96, 2048, 90)
    assert base.optim.warmup_steps == 500 and base.model.feature_size * 16 == 768
    assert load_pretrain_config("s2dc", "official").params.tau == 1.0


def test_state_dict_round_trip_keeps_queue_and_teacher() -> None:
    a = _method()
    a.training_step(_batch(a, n=2), step=0)
    b = _method()
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.queue.features(), a.queue.features())
    torch.testing.assert_close(b.teacher["global_head"].fc3.weight, a.teacher["global_head"].fc3.weight)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("s2dc.token_stage=7", "token_stage = 7 does not exist"),
        ("s2dc.crop=48", "divisible by 32"),
        ("s2dc.matcher=hungarian", "dual_softmax"),
        ("s2dc.bn_axis=batch", "bn_axis"),
        ("s2dc.tau=0", "tau"),
        ("s2dc.grid=0", "grid"),
    ],
)
def test_bad_settings_fail_at_start_up(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _method(override)


def test_all_terms_off_is_an_error() -> None:
    with pytest.raises(ConfigError, match="nothing to train"):
        _method("s2dc.use_p2p=false", "s2dc.use_p2s=false", "s2dc.use_g=false")


def test_small_volume_is_padded_and_announced_by_min_volume_shape() -> None:
    method = _method()
    assert method.min_volume_shape == (64, 64, 32)
    out = method.views(_volume(0, shape=(40, 50, 20)), np.random.default_rng(0), None)
    assert out["src"].shape == (4, 1, 32, 32, 32)


@pytest.mark.slow
def test_swin_backbone_trains_a_step() -> None:
    method = _method("model.backbone=swin", "model.feature_size=12", "s2dc.token_stage=4", "s2dc.crop=64")
    out = method.training_step(_batch(method, n=1), step=0)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert all(
        p.grad is not None
        for p in method.student["backbone"].swinViT.parameters()  # type: ignore[union-attr]
        if p.requires_grad
    )


def test_pretrain_resumes_exactly(tmp_path: Path) -> None:
    """6 steps in one go == 3 steps, pause, ``--resume`` to 6: same losses, weights, teacher and queue."""
    from anatssl.engine.checkpoint import load_checkpoint
    from anatssl.engine.trainer import pretrain

    opts = [
        *FAST,
        "train.max_steps=6",
        "train.batch_size=1",
        "train.progress=false",
        "train.tensorboard=false",
    ]
    source = MemorySource(n=3, shape=(64, 64, 32))
    full, part = tmp_path / "full", tmp_path / "part"
    pretrain(load_pretrain_config("s2dc", "tiny", overrides=opts), source, full)
    pretrain(load_pretrain_config("s2dc", "tiny", overrides=[*opts, "train.stop_after=3"]), source, part)
    assert load_checkpoint(part / "checkpoints" / "last.pt")["step"] == 3
    pretrain(load_pretrain_config("s2dc", "tiny", overrides=opts), source, part, resume=True)
    rows = [[json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()] for r in (full, part)]
    assert [r["step"] for r in rows[1]] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(*rows):
        for key in ("loss", "p2p", "p2s", "g"):
            assert math.isfinite(ra[key]) and ra[key] == rb[key], (key, ra, rb)
    wa = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(part / "checkpoints" / "last.pt")["model"]
    assert any(k.startswith("teacher.") for k in wa) and "queue.queue" in wa
    assert int(wa["queue.count"]) == 6  # one key per step, queue of 6 now full
    for k, v in wa.items():
        torch.testing.assert_close(wb[k], v, rtol=0, atol=0, msg=k)
