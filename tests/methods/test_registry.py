"""Every registered method, the same checks (timm's habit): built from its tiny preset at the smallest
shape, one training step on CPU gives a finite loss, every trainable parameter gets a gradient (or is
named by the method's ``untrained_parameters()``, on purpose), and a checkpoint round trip through a
file restores identical outputs.

Adding a method = one entry in ``SMALLEST`` (the overrides that make its step take well under a second).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from anatssl.engine.checkpoint import atomic_torch_save, load_checkpoint
from anatssl.engine.data import collate
from anatssl.methods import METHODS, SSLMethod, build_method
from anatssl.runs import load_pretrain_config
from engine_fixtures import BlobSource

CONV = ["model.backbone=conv", "model.feature_size=4"]
SMALLEST: dict[str, list[str]] = {
    "swinssl": [*CONV, "swinssl.crop_size=[32,32,32]", "swinssl.proj_dim=16"],
    "simmim": [*CONV, "simmim.crop_size=[32,32,32]"],
    "s2dc": [
        *CONV,
        "s2dc.grid=2",
        "s2dc.crop=32",
        "s2dc.token_stage=3",
        "s2dc.patch_hidden=32",
        "s2dc.patch_dim=16",
        "s2dc.global_hidden=32",
        "s2dc.global_dim=16",
        "s2dc.queue_size=6",
    ],
    "alice": [
        *CONV,
        "alice.pairing=random",
        "alice.crop_size=32",
        "alice.border_margin=8",
        "alice.out_dim=32",
        "alice.head_hidden_dim=32",
        "alice.head_bottleneck_dim=16",
        "alice.casa_heads=4",
        "alice.casa_ffn_dim=32",
        "alice.freeze_last_layer_steps=0",
    ],
    "modelsgenesis": [*CONV, "modelsgenesis.crop_size=[32,32,32]", "modelsgenesis.shuffle_blocks=100"],
    "voco": [*CONV, "voco.grid=2", "voco.crop_size=[32,32,32]", "voco.proj_hidden=32", "voco.proj_dim=16"],
    "sam": [
        "sam.width=4",
        "sam.embed_dim=8",
        "sam.crop_size=[32,32,32]",
        "sam.num_pairs=16",
        "sam.num_coarse_negatives=20",
        "sam.num_hard_negatives=8",
        "sam.num_fine_random_negatives=4",
    ],
}


RESENC = ["model.backbone=resenc", "model.variant=tiny"]
ON_RESENC: dict[str, list[str]] = {
    "swinssl": [*RESENC, "swinssl.crop_size=[64,64,64]", "swinssl.proj_dim=16"],
    "simmim": [*RESENC, "simmim.crop_size=[64,64,64]"],
    "s2dc": [*RESENC, *(o.replace("s2dc.crop=32", "s2dc.crop=64") for o in SMALLEST["s2dc"][len(CONV) :])],
    "alice": [
        *RESENC,
        *(o.replace("alice.crop_size=32", "alice.crop_size=64") for o in SMALLEST["alice"][len(CONV) :]),
    ],
    "modelsgenesis": [*RESENC, "modelsgenesis.crop_size=[64,64,64]", "modelsgenesis.shuffle_blocks=100"],
    "voco": [*RESENC, "voco.grid=2", "voco.crop_size=[64,64,64]", "voco.proj_hidden=32", "voco.proj_dim=16"],
}
"""Every method that trains the shared backbone, on nnU-Net's residual encoder U-Net (``resenc`` tiny):
64^3 crops, because resenc's InstanceNorm needs more than one voxel at stride 32. ``sam`` trains its own
network (the ``model`` section is not read), so it has no entry."""


def _build(name: str) -> SSLMethod:
    torch.manual_seed(0)
    cfg = load_pretrain_config(name, "tiny", None, [*SMALLEST[name], "train.batch_size=2"])
    return build_method(cfg)


def _batch(method: SSLMethod, seed: int = 0) -> dict[str, object]:
    src = BlobSource()
    samples = [method.views(src.load(i), np.random.default_rng([seed, i]), src) for i in range(2)]
    return collate(samples)


def test_every_registered_method_has_an_entry() -> None:
    assert sorted(SMALLEST) == METHODS.names()


@pytest.mark.parametrize("name", METHODS.names())
def test_one_step_finite_loss_and_every_parameter_gets_a_gradient(name: str) -> None:
    method = _build(name)
    method.train()
    out = method.training_step(_batch(method), step=0)
    loss = out["loss"]
    assert loss.ndim == 0 and math.isfinite(float(loss.detach())), out
    loss.backward()
    skip = method.untrained_parameters()
    trainable = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None and not n.startswith(skip)]
    assert not missing, (
        f"{name}: no gradient for {missing[:8]} (list intentional ones in untrained_parameters)"
    )
    declared_but_trained = [
        n for n, p in trainable if n.startswith(skip) and p.grad is not None and p.grad.abs().sum() > 0
    ]
    assert not declared_but_trained, (
        f"{name}: untrained_parameters() names trained ones: {declared_but_trained[:8]}"
    )
    for n, p in trainable:
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("name", METHODS.names())
def test_checkpoint_round_trip_restores_identical_outputs(name: str, tmp_path: Path) -> None:
    a = _build(name)
    a.train()
    a.training_step(_batch(a), step=0)  # moves centres / queues / EMA state away from the initial one
    a.on_step_end(0)
    path = tmp_path / "ckpt.pt"
    atomic_torch_save(
        {"format": "anatssl-checkpoint", "model": a.state_dict(), "extra": a.extra_state_dict()}, path
    )
    torch.manual_seed(123)  # another initialisation: only the file can make b equal to a
    b = build_method(a.cfg)
    ckpt = load_checkpoint(path)
    b.load_state_dict(ckpt["model"], strict=True)
    b.load_extra_state_dict(ckpt["extra"])
    a.eval()
    b.eval()
    batch = _batch(a, seed=1)
    with torch.no_grad():
        torch.manual_seed(7)
        out_a = a.training_step(batch, step=1)
        torch.manual_seed(7)
        out_b = b.training_step(batch, step=1)
    assert out_a.keys() == out_b.keys()
    for k in out_a:
        torch.testing.assert_close(out_b[k], out_a[k], rtol=0, atol=0, msg=f"{name}: {k}")


def test_every_backbone_method_has_a_resenc_entry() -> None:
    assert sorted(ON_RESENC) == [n for n in METHODS.names() if n != "sam"]


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in ("swinssl", "voco") else n for n in sorted(ON_RESENC)],
)  # swinssl and voco only encode (deepest map, all maps): slow, to keep the default suite's growth ~30 s
def test_one_step_on_resenc(name: str) -> None:
    """The resenc backbone under every method: finite loss, every trainable parameter of the method
    (backbone included) gets a finite gradient or is declared untrained (encoder-only methods)."""
    torch.manual_seed(0)
    method = build_method(load_pretrain_config(name, "tiny", None, [*ON_RESENC[name], "train.batch_size=2"]))
    assert type(method.encoder()).__name__ == "ResEncBackbone"
    method.train()
    out = method.training_step(_batch(method), step=0)
    assert math.isfinite(float(out["loss"].detach())), out
    out["loss"].backward()
    skip = method.untrained_parameters()
    trainable = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None and not n.startswith(skip)]
    assert not missing, f"{name} on resenc: no gradient for {missing[:8]}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable if p.grad is not None)
