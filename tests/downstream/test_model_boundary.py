"""Networks take plain tensors (issue 19): MONAI's transforms hand out MetaTensors, the model boundary
strips them once (``anatssl.models.boundary.plain``), and the fused window attention works on any tensor
subclass anyway (its backward used ``new_empty(3, ...)``, which ``MetaTensor.new_empty`` rejects)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from downstream_fixtures import write_labelled_dataset
from monai import transforms as T
from monai.data import MetaTensor, list_data_collate
from monai.losses import DiceCELoss

from anatssl.downstream.config import load_finetune_config
from anatssl.downstream.labelled import read_labelled_dataset
from anatssl.downstream.loop import build_finetune_optimizer, train_steps
from anatssl.downstream.segmentation import _items, base_transforms, build_segmentation_net
from anatssl.models.backbones.window_attention import WindowAttentionFunction, build_plan
from anatssl.models.boundary import plain


def test_plain_strips_metatensors_recursively_and_shares_storage() -> None:
    m = MetaTensor(torch.arange(6.0).view(2, 3), affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    t = torch.ones(2)
    batch = {"image": m, "views": [m, (m, "name", 3)], "plain": t, "name": "case_000", "n": None}
    out = plain(batch)
    assert type(out["image"]) is torch.Tensor and torch.equal(out["image"], m.as_tensor())
    assert out["image"].data_ptr() == m.data_ptr()  # no copy
    assert type(out["views"]) is list and type(out["views"][1]) is tuple
    assert [type(v) for v in (out["views"][0], out["views"][1][0])] == [torch.Tensor, torch.Tensor]
    assert out["views"][1][1:] == ("name", 3)
    assert out["plain"] is t and out["name"] == "case_000" and out["n"] is None
    assert type(batch["image"]) is MetaTensor  # the input is not modified
    assert type(plain(m)) is torch.Tensor and plain(t) is t


def test_window_attention_backward_accepts_a_metatensor() -> None:
    """The fused attention's forward and backward on MetaTensor inputs give the plain-tensor gradients."""
    torch.manual_seed(0)
    plan = build_plan(1, (6, 6, 4), (3, 3, 2), (1, 1, 1), torch.device("cpu"))
    heads, d = 2, 3
    qkv = torch.randn(plan.num_windows * plan.tokens, 3 * heads * d)
    bias = torch.randn(heads, plan.tokens, plan.tokens)
    grads = []
    for a in (qkv.clone(), MetaTensor(qkv.clone())):
        a.requires_grad_(True)
        b = bias.clone().requires_grad_(True)
        out = WindowAttentionFunction.apply(a, b, plan, heads, 0.7)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((torch.as_tensor(a.grad).as_subclass(torch.Tensor), b.grad))
    assert torch.allclose(grads[0][0], grads[1][0]) and torch.allclose(grads[0][1], grads[1][1])
    assert grads[0][0].abs().sum() > 0 and grads[0][1].abs().sum() > 0


def test_swin_segmentation_step_on_a_metatensor_batch_from_the_finetuning_transforms(tmp_path: Path) -> None:
    """The crash of issue 19: a MetaTensor batch from the fine-tuning run's loading transforms (cut to
    64 x 32 x 32, the smallest crop a swin trains on, to keep the test fast), one training step of
    ``SegmentationNet`` on the default ``swin`` backbone through the fine-tuning loop; the network
    sees plain tensors."""
    data = write_labelled_dataset(tmp_path / "data", n=1, size=64)
    cfg = load_finetune_config(
        "segmentation",
        "tiny",
        None,
        [
            "model.backbone=swin",
            "model.feature_size=12",
            "train.max_steps=1",
            "segmentation.roi_size=[64,32,32]",
            "segmentation.samples_per_volume=1",
            "train.progress=false",
            "optim.warmup_steps=0",
        ],
    )
    cases, label_map = read_labelled_dataset(data, need_labels=True)
    values = sorted(label_map)
    crop = T.CenterSpatialCropd(keys=["image", "label"], roi_size=(64, 32, 32))
    tf = T.Compose([*base_transforms(cfg, values), crop])
    batch = list_data_collate([tf(item) for item in _items(cases)])
    assert isinstance(batch["image"], MetaTensor) and batch["image"].shape == (1, 1, 64, 32, 32)

    net = build_segmentation_net(cfg, len(values))
    opt = build_finetune_optimizer(net, cfg, loaded=set())
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    loss_f = DiceCELoss(to_onehot_y=True, softmax=True)
    seen: list[type] = []

    def loss_fn(b: dict[str, Any]) -> torch.Tensor:
        seen.extend([type(b["image"]), type(b["label"])])
        return loss_f(net(b["image"]), b["label"])

    (tmp_path / "run").mkdir()
    history = train_steps(net, opt, iter([batch]), loss_fn, cfg, tmp_path / "run", "test")
    assert seen == [torch.Tensor, torch.Tensor]
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0]["loss"]))
    changed = [k for k, v in net.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert any(k.startswith("swinViT.") for k in changed) and any(k.startswith("out.") for k in changed)
