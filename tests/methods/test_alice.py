"""Alice: loss terms against their formulas, EMA and schedules, clipping, freezing, checkpoint contents."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from anatssl.errors import ConfigError
from anatssl.methods import build_method
from anatssl.methods.alice import Alice, AliceConfig, teacher_momentum, teacher_temperature
from anatssl.runs import build_pretrain_config

SMALL = {
    "crop_size": 32,
    "out_dim": 32,
    "head_hidden_dim": 32,
    "head_bottleneck_dim": 16,
    "casa_heads": 4,
    "casa_ffn_dim": 32,
    "pairing": "random",
    "freeze_last_layer_steps": 0,
}


def _method(max_steps: int = 10, **alice: object) -> Alice:
    torch.manual_seed(0)
    cfg = build_pretrain_config(
        {
            "method": "alice",
            "model": {"backbone": "conv", "feature_size": 4},
            "train": {"max_steps": max_steps},
            "alice": {**SMALL, **alice},
        }
    )
    m = build_method(cfg)
    assert isinstance(m, Alice)
    return m.train()


def _batch(b: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "q": torch.rand(b, 1, 32, 32, 32, generator=g),
        "k": torch.rand(b, 1, 32, 32, 32, generator=g),
        "q_mask": torch.rand(b, 32, 32, 32, generator=g) > 0.5,
        "k_mask": torch.rand(b, 32, 32, 32, generator=g) > 0.5,
    }


def _h(t: torch.Tensor, s: torch.Tensor, c: torch.Tensor, tt: float, ts: float) -> torch.Tensor:
    """Cross-entropy written out: -sum exp((t-c)/tt) / Z * (s/ts - log sum exp(s/ts))."""
    e = torch.exp((t - c) / tt - ((t - c) / tt).max(-1, keepdim=True).values)
    p = e / e.sum(-1, keepdim=True)
    return -(p * (s / ts - torch.logsumexp(s / ts, -1, keepdim=True))).sum(-1)


def test_terms_are_finite_and_sum_to_the_loss() -> None:
    m = _method()
    out = m.training_step(_batch(), 0)
    for k in ("loss", "loss_cls", "loss_patch", "loss_rec"):
        assert torch.isfinite(out[k]), k
    torch.testing.assert_close(out["loss"].detach(), out["loss_cls"] + out["loss_patch"] + out["loss_rec"])
    assert float(out["teacher_temp"]) == pytest.approx(0.008)


def test_loss_terms_match_their_formulas() -> None:
    m = _method(casa_dropout=0.0)
    batch = _batch()
    c_cls, c_tok = m.cls_loss.center.clone(), m.patch_loss.center.clone()
    c_cls += torch.linspace(-0.1, 0.1, 32)  # non-zero centres, so that centring is exercised
    c_tok -= torch.linspace(-0.2, 0.2, 32)
    m.cls_loss.center.copy_(c_cls)
    m.patch_loss.center.copy_(c_tok)
    step = 3
    tt = 0.008 + (0.01 - 0.008) * step / 1000
    out = m.training_step(batch, step)
    x_t = torch.cat([batch["q"], batch["k"]])
    x_s = x_t * ~torch.cat([batch["q_mask"], batch["k_mask"]]).unsqueeze(1)
    with torch.no_grad():
        s, t = m.student(x_s), m.teacher(x_t)
        l_cls = 0.5 * (
            _h(t["cls"][:2], s["cls"][2:], c_cls, tt, 0.1).mean()
            + _h(t["cls"][2:], s["cls"][:2], c_cls, tt, 0.1).mean()
        )
        online, target = m.casa(s["enc"], s["dec"]), m.casa(s["enc"], t["dec"])
        h = _h(target, online, c_tok, tt, 0.1)
        l_patch = 0.5 * (h[:2].mean() + h[2:].mean())
        l_rec = 5.0 * ((s["recon"] - x_t) ** 2).mean()
    torch.testing.assert_close(out["loss_cls"], l_cls, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["loss_patch"], l_patch, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["loss_rec"], l_rec, rtol=1e-4, atol=1e-6)
    # centres moved by the EMA rule towards the teacher batch means
    torch.testing.assert_close(m.cls_loss.center, 0.9 * c_cls + 0.1 * t["cls"].mean(0, keepdim=True))
    tok_mean = target.reshape(-1, 32).mean(0, keepdim=True)
    torch.testing.assert_close(m.patch_loss.center, 0.9 * c_tok + 0.1 * tok_mean)


def test_masked_only_reconstruction() -> None:
    m = _method(rec_masked_only=True, casa_dropout=0.0)
    batch = _batch()
    out = m.training_step(batch, 0)
    x_t = torch.cat([batch["q"], batch["k"]])
    mask = torch.cat([batch["q_mask"], batch["k_mask"]]).unsqueeze(1)
    with torch.no_grad():
        recon = m.student(x_t.masked_fill(mask, 0.0))["recon"]
    torch.testing.assert_close(out["loss_rec"], 5.0 * ((recon - x_t) ** 2)[mask].mean(), rtol=1e-4, atol=1e-6)


def test_step_updates_student_and_moves_teacher_by_ema() -> None:
    m = _method(max_steps=10)
    opt = torch.optim.AdamW(m.param_groups(0.04)[0]["params"] + m.param_groups(0.04)[1]["params"], lr=1e-3)
    old_t = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    out = m.training_step(_batch(), 4)
    out["loss"].backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    assert all(not p.requires_grad for p in m.teacher.parameters())
    m.clip_gradients(3.0)
    opt.step()
    m.on_step_end(4)
    mom = 1.0 - (1.0 - 0.996) * (math.cos(math.pi * 4 / 9) + 1) / 2
    s_params = dict(m.student.named_parameters())
    moved = 0
    for name, p in m.teacher.named_parameters():
        expect = mom * old_t[name] + (1 - mom) * s_params[name].detach()
        torch.testing.assert_close(p, expect, rtol=0, atol=1e-6)
        moved += int(not torch.equal(p, old_t[name]))
    assert moved > 0


def test_schedules_follow_the_formulas() -> None:
    p = AliceConfig(teacher_temp_warmup_steps=100)
    assert teacher_temperature(p, 0) == pytest.approx(0.008)
    assert teacher_temperature(p, 50) == pytest.approx(0.009)
    assert teacher_temperature(p, 100) == teacher_temperature(p, 5000) == pytest.approx(0.01)
    dino = AliceConfig(tau_preset="dino", teacher_temp_warmup_steps=10)
    assert teacher_temperature(dino, 0) == pytest.approx(0.04)
    assert teacher_temperature(dino, 5) == pytest.approx(0.055)
    assert teacher_temperature(dino, 10) == pytest.approx(0.07)
    assert teacher_momentum(p, 0, 101) == pytest.approx(0.996)
    assert teacher_momentum(p, 50, 101) == pytest.approx(0.998)
    assert teacher_momentum(p, 100, 101) == pytest.approx(1.0)
    assert teacher_momentum(p, 25, 101) == pytest.approx(1 - 0.004 * (1 + math.cos(math.pi / 4)) / 2)


def test_per_parameter_clipping() -> None:
    m = _method()
    params = [p for p in m.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.zeros_like(p)
    big, small = params[0], params[1]
    big.grad.fill_(10.0)
    small.grad.view(-1)[0] = 0.5
    norm_big = big.grad.norm().item()
    total = m.clip_gradients(3.0)
    assert total == pytest.approx(math.sqrt(norm_big**2 + 0.25), rel=1e-5)
    assert big.grad.norm().item() == pytest.approx(3.0, rel=1e-4)  # clipped on its own
    assert small.grad.view(-1)[0].item() == pytest.approx(0.5)  # untouched by the big one


def test_last_layers_frozen_for_the_first_steps() -> None:
    m = _method(freeze_last_layer_steps=2)
    last = [p for n, p in m.student.named_parameters() if "last_layer" in n and p.requires_grad]
    assert len(last) == 2  # directions of the cls and token last layers; the gains are frozen for good
    m.training_step(_batch(), 1)["loss"].backward()
    assert all(p.grad is None for p in last)
    m.zero_grad()
    m.training_step(_batch(), 2)["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in last)
    gains = [p for n, p in m.student.named_parameters() if n.endswith("original0")]
    assert gains and not any(p.requires_grad for p in gains)


def test_teacher_encoder_variant_and_checkpoint_contents() -> None:
    m = _method(casa_target="teacher_encoder")
    out = m.training_step(_batch(), 0)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert all(p.grad is None for p in m.casa_teacher.parameters())
    assert any(p.grad is not None for p in m.casa.parameters())
    m.on_step_end(0)
    keys = m.state_dict().keys()
    for prefix in (
        "student.backbone.",
        "student.head.",
        "teacher.backbone.",
        "teacher.head.",
        "casa.",
        "casa_teacher.",
        "cls_loss.center",
        "patch_loss.center",
    ):
        assert any(k.startswith(prefix) for k in keys), prefix
    # a fresh method loads the state dict strictly, CASA included
    m2 = _method(casa_target="teacher_encoder")
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2.casa.q_proj.weight, m.casa.q_proj.weight)
    default = _method().state_dict().keys()
    assert any(k.startswith("casa.") for k in default)
    assert not any(k.startswith("casa_teacher.") for k in default)


def test_teachers_stay_in_eval_mode() -> None:
    m = _method(casa_target="teacher_encoder")
    m.train()
    assert m.student.training and m.casa.training
    assert not m.teacher.training and not m.casa_teacher.training


def test_views_need_embeddings_for_sam_pairing() -> None:
    m = _method(pairing="sam")
    with pytest.raises(ConfigError, match="--embeddings"):
        _ = m.views


@pytest.mark.parametrize(
    ("key", "value", "msg"),
    [
        ("pairing", "nearest", "alice.pairing"),
        ("casa_target", "student", "alice.casa_target"),
        ("tau_preset", "hot", "alice.tau_preset"),
        ("crop_size", 40, "multiple of"),
        ("casa_heads", 5, "divisible"),
    ],
)
def test_bad_config(key: str, value: object, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        build_pretrain_config({"method": "alice", "alice": {key: value}})


def test_presets_resolve() -> None:
    from anatssl.runs import load_pretrain_config

    tiny = load_pretrain_config("alice", "tiny")
    base = load_pretrain_config("alice", "base")
    assert tiny.params.out_dim == 256 and base.params.out_dim == 512 and base.params.casa_ffn_dim == 2048
    assert base.optim.lr_scaling == "linear" and base.optim.clip_grad == 3.0
    assert base.optim.weight_decay == 0.04 and base.optim.weight_decay_end == 0.4
    assert base.params.lambda_rec == 5.0 and base.data.hu_window == (-125.0, 225.0)


# -- runs on real NIfTI files ---------------------------------------------------------------------------
FAST_RUN = [
    "model.backbone=conv",
    "model.feature_size=4",
    "alice.crop_size=32",
    "alice.border_margin=8",
    "alice.out_dim=32",
    "alice.head_hidden_dim=32",
    "alice.head_bottleneck_dim=16",
    "alice.casa_heads=4",
    "alice.casa_ffn_dim=32",
    "train.progress=false",
    "train.tensorboard=false",
    "optim.warmup_steps=1",
]


def _write_subjects(folder: Path, n: int = 3, size: int = 48) -> Path:
    import nibabel as nib
    import numpy as np

    from anatssl.data.synthetic import make_subject

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s = make_subject(i, size=size)
        nib.save(nib.Nifti1Image(s.image_hu.astype(np.int16), s.affine), str(folder / f"case_{i}.nii.gz"))
    return folder


def _cfg(*overrides: str) -> object:
    from anatssl.runs import load_pretrain_config

    return load_pretrain_config("alice", "tiny", None, [*FAST_RUN, *overrides])


def test_startup_rejects_a_volume_without_foreground(tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    from anatssl.errors import DataError
    from anatssl.runs.alice_stage0 import prepare_alice_run

    data = _write_subjects(tmp_path / "data", n=2, size=40)
    air = np.random.default_rng(0).integers(-1000, -300, (40, 40, 40)).astype(np.int16)  # below the window
    nib.save(nib.Nifti1Image(air, np.diag([8.0, 8, 8, 1])), str(data / "air.nii.gz"))
    cfg = _cfg("alice.pairing=random", "data.foreground_crop=false")
    with pytest.raises(DataError, match=r"air\.nii\.gz: no voxel above the foreground threshold"):
        prepare_alice_run(cfg, str(data), str(tmp_path / "run"))


def test_startup_needs_two_volumes_for_cross_patient_pairs(tmp_path: Path) -> None:
    from anatssl.errors import DataError
    from anatssl.runs.alice_stage0 import prepare_alice_run

    data = _write_subjects(tmp_path / "data", n=1, size=40)
    with pytest.raises(DataError, match="at least 2 training volumes"):
        prepare_alice_run(_cfg("alice.pairing=random"), str(data), str(tmp_path / "run"))
    assert prepare_alice_run(_cfg("alice.pairing=same"), str(data), str(tmp_path / "run")) == ""


@pytest.mark.slow
def test_pretrain_random_pairing_batch_two_resumes_exactly(tmp_path: Path) -> None:
    """4 steps in one go == 2 steps, then --resume to 4 (CASA dropout on: RNG state is restored too)."""
    import json
    import shutil

    from anatssl.engine.trainer import pretrain
    from anatssl.runs.alice_stage0 import prepare_alice_run

    data = str(_write_subjects(tmp_path / "data"))
    opts = (
        "alice.pairing=random",
        "train.max_steps=4",
        "train.batch_size=2",
        "train.ckpt_every=2",
        "train.keep_checkpoints=true",
    )
    cfg = _cfg(*opts)
    prepare_alice_run(cfg, data, str(tmp_path / "a"))
    pretrain(cfg, data, tmp_path / "a")
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for r in rows:
        for k in ("loss", "loss_cls", "loss_patch", "loss_rec"):
            assert math.isfinite(r[k]), (k, r)
    # resume from the step-2 checkpoint in a copy of the run
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "a" / "config.yaml", tmp_path / "b" / "config.yaml")
    ckpts = tmp_path / "a" / "checkpoints"
    shutil.copy(ckpts / "step_0000002.pt", tmp_path / "b" / "checkpoints" / "last.pt")
    pretrain(_cfg(*opts), data, tmp_path / "b", resume=True)
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=0, atol=0, msg=k)
    assert any(k.startswith("casa.") for k in a["model"])


@pytest.mark.slow
def test_stage0_trains_sam_caches_embeddings_and_detects_stale_ones(tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    from anatssl.engine.trainer import pretrain
    from anatssl.errors import DataError
    from anatssl.runs.alice_stage0 import prepare_alice_run

    data = _write_subjects(tmp_path / "data")
    run = tmp_path / "run"
    cfg = _cfg("alice.sam_steps=2", "train.max_steps=2", "alice.casa_target=teacher_encoder")
    emb = prepare_alice_run(cfg, str(data), str(run))
    assert Path(emb) == (run / "embeddings").resolve()
    assert (run / "sam" / "checkpoints" / "last.pt").is_file()
    assert len(list(Path(emb).glob("*.npz"))) == 3
    cfg.params.embeddings_dir = emb
    pretrain(cfg, str(data), run)
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and "pair_score" in rows[0]
    # a scan changes after embedding: the cache is stale and Alice says so at start-up
    img = nib.load(str(data / "case_1.nii.gz"))
    arr = np.asarray(img.dataobj).copy()
    arr[0, 0, 0] += 1
    nib.save(nib.Nifti1Image(arr, img.affine), str(data / "case_1.nii.gz"))
    with pytest.raises(DataError, match=r"case_1\.nii\.gz.*stale"):
        prepare_alice_run(_cfg(), str(data), str(tmp_path / "run2"), embeddings=emb)
