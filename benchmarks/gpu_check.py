"""One check of the GPU path before a long run: every method, the Swin parity, a fine-tuning step.

    bash benchmarks/gpu_check.sh                      # CUDA: base presets, bf16 autocast (< 8 minutes)
    bash benchmarks/gpu_check.sh --device cpu --out /tmp/gpu_check_cpu.json   # dry run, tiny shapes

What it runs, in one process, each check caught on its own so that one failure does not hide the rest:

1. **every registered method** through the real pretraining path (``runs.run_pretraining``: pre-steps,
   trainer, checkpoint) at its ``base`` preset for ``--steps`` steps under ``train.amp=bf16``, on 3
   synthetic phantoms (``anatssl synth``). Alice's stage 0 trains SAM (base preset) for 2 steps and
   embeds the phantoms first. Recorded: every step's loss (all must be finite), seconds per step
   (mean over the steps after the first, which holds cuDNN autotuning and allocator warm-up), peak
   CUDA memory (``torch.cuda.max_memory_allocated``, reset before each check);
2. **Swin parity against MONAI on CUDA**: our ``SwinViT`` (whose attention runs
   ``scaled_dot_product_attention`` per mask group on CUDA) and MONAI's ``SwinTransformer`` with one
   state dict, fp32 with TF32 off, feature size 48 on a 64^3 input: the 5 outputs and every gradient
   (parameters and input) are compared; the bounds (1e-4 absolute on outputs, 1e-3 of the tensor's
   scale on gradients) are 10x the CPU test's, for the different fp32 kernels;
3. **one segmentation fine-tuning step** at the ``base`` preset (Swin-UNETR fs 48, 96^3 crops) under
   bf16, including the sliding-window evaluation of one held-out phantom.

It writes one JSON (``--out``) with each check's figures, ``ok`` and, on failure, the error; the exit
status is 1 if any check failed (or, on CUDA, if the whole took longer than ``--budget-minutes``).

``--device cpu`` is the dry run: the same code, at each method's ``tiny`` preset with the smallest
shapes (a conv backbone of width 4, 32^3 crops; Alice with random pairing, so no SAM stage 0), Swin
parity at feature size 12 on 32^3, fine-tuning at the ``tiny`` preset with a conv backbone. The test
suite runs it (``tests/bench/test_gpu_check.py``); it says the script works, not that the GPU does.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CONV = ["model.backbone=conv", "model.feature_size=4"]
TINY: dict[str, list[str]] = {  # the CPU dry run's overrides (tests/methods/test_registry.py's SMALLEST)
    "swinssl": [*CONV, "swinssl.crop_size=[32,32,32]", "swinssl.proj_dim=16"],
    "simmim": [*CONV, "simmim.crop_size=[32,32,32]"],
    "s2dc": [
        *CONV,
        *("s2dc.grid=2", "s2dc.crop=32", "s2dc.token_stage=3", "s2dc.patch_hidden=32", "s2dc.patch_dim=16"),
        *("s2dc.global_hidden=32", "s2dc.global_dim=16", "s2dc.queue_size=6"),
    ],
    "alice": [
        *CONV,
        *("alice.pairing=random", "alice.crop_size=32", "alice.border_margin=8", "alice.out_dim=32"),
        *("alice.head_hidden_dim=32", "alice.head_bottleneck_dim=16", "alice.casa_heads=4"),
        *("alice.casa_ffn_dim=32", "alice.freeze_last_layer_steps=0"),
    ],
    "modelsgenesis": [*CONV, "modelsgenesis.crop_size=[32,32,32]", "modelsgenesis.shuffle_blocks=100"],
    "voco": [*CONV, "voco.grid=2", "voco.crop_size=[32,32,32]", "voco.proj_hidden=32", "voco.proj_dim=16"],
    "sam": [
        *("sam.width=4", "sam.embed_dim=8", "sam.crop_size=[32,32,32]", "sam.num_pairs=16"),
        *("sam.num_coarse_negatives=20", "sam.num_hard_negatives=8", "sam.num_fine_random_negatives=4"),
    ],
}
CUDA_EXTRA: dict[str, list[str]] = {"alice": ["alice.sam_steps=2"]}
"""On CUDA, Alice's stage 0 trains SAM for 2 steps only (the check is of the path, not of SAM)."""
RUN = ["train.progress=false", "train.tensorboard=false", "train.ckpt_every=100000", "train.log_every=1"]
SYNTH_SIZE = {"cuda": ("160", "160", "128"), "cpu": ("64", "64", "48")}


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def make_data(root: Path, device: torch.device) -> Path:
    """3 synthetic phantoms with organ labels (``anatssl synth``)."""
    from anatssl.cli.main import main

    out = root / "data"
    size = SYNTH_SIZE[device.type]
    code = main(["synth", "--out", str(out), "--n", "3", "--size", *size, "--seed", "0", "--quiet"])
    if code != 0:
        raise RuntimeError(f"anatssl synth exited {code}")
    return out


def check_method(name: str, device: torch.device, data: Path, root: Path, steps: int) -> dict[str, Any]:
    from anatssl.runs import load_pretrain_config
    from anatssl.runs.pretraining import run_pretraining

    cuda = device.type == "cuda"
    preset = "base" if cuda else "tiny"
    shapes = CUDA_EXTRA.get(name, []) if cuda else TINY.get(name, CONV)
    overrides = [*RUN, f"train.max_steps={steps}", f"train.device={device}", "train.amp=bf16", *shapes]
    cfg = load_pretrain_config(name, preset, None, overrides)
    out = root / f"pretrain_{name}"
    run_pretraining(cfg, data, out)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [float(r["loss"]) for r in rows]
    seconds = [float(r["seconds"]) for r in rows]
    timed = seconds[1:] or seconds
    finite = len(losses) == steps and all(math.isfinite(v) for v in losses)
    return {
        "ok": finite,
        "error": None if finite else f"{len(losses)} of {steps} steps logged, losses {losses}",
        "preset": preset,
        "overrides": shapes,
        "losses": losses,
        "step_s": statistics.mean(timed),
        "first_step_s": seconds[0] if seconds else None,
        "peak_cuda_mb": _peak_mb(device),
    }


def check_swin_parity(device: torch.device) -> dict[str, Any]:
    from monai.networks.nets.swin_unetr import SwinTransformer

    from anatssl.models.backbones.swin_vit import SwinViT

    cuda = device.type == "cuda"
    fs, size = (48, 64) if cuda else (12, 32)
    heads, depths, window = (3, 6, 12, 24), (2, 2, 2, 2), (7, 7, 7)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        torch.manual_seed(0)
        ref = SwinTransformer(1, fs, window, (2, 2, 2), depths, heads)
        sd = ref.state_dict()
        g = torch.Generator().manual_seed(1)
        for key, value in sd.items():  # MONAI's 0.02 init would hide a wrong bias gather
            if key.endswith("relative_position_bias_table"):
                value.copy_(0.5 * torch.randn(value.shape, generator=g))
        ref.load_state_dict(sd, strict=True)
        ours = SwinViT(1, fs, window, depths, heads)
        ours.load_state_dict(sd, strict=True)
        ref, ours = ref.to(device), ours.to(device)
        x = torch.randn(1, 1, size, size, size, generator=g).to(device)
        xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_ref, out_ours = ref(xr, True), ours(xo, True)
        out_err = max(float((a - b).detach().abs().max()) for a, b in zip(out_ref, out_ours))
        weights = [torch.randn(a.shape, generator=g).to(device) for a in out_ref]
        sum((o * w).sum() for o, w in zip(out_ref, weights)).backward()
        sum((o * w).sum() for o, w in zip(out_ours, weights)).backward()
        pairs = [
            (f"param:{k}", p.grad, dict(ours.named_parameters())[k].grad) for k, p in ref.named_parameters()
        ]
        pairs.append(("input", xr.grad, xo.grad))
        grad_err, worst = 0.0, ""
        for key, gr, go in pairs:
            if gr is None or go is None:
                raise RuntimeError(f"{key}: no gradient")
            rel = float((go - gr).abs().max()) / max(1.0, float(gr.abs().max()))
            if rel > grad_err:
                grad_err, worst = rel, key
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    ok = len(out_ours) == 5 and out_err <= 1e-4 and grad_err <= 1e-3
    return {
        "ok": ok,
        "error": None
        if ok
        else f"outputs {out_err:.3g} (bound 1e-4), gradients {grad_err:.3g} at {worst} (1e-3)",
        "feature_size": fs,
        "input": [size] * 3,
        "attention": "scaled_dot_product_attention" if cuda else "chunked (CPU)",
        "max_abs_output_diff": out_err,
        "max_rel_grad_diff": grad_err,
        "worst_grad": worst,
        "peak_cuda_mb": _peak_mb(device),
    }


def check_finetune(device: torch.device, data: Path, root: Path) -> dict[str, Any]:
    from anatssl.downstream.config import load_finetune_config
    from anatssl.downstream.runner import run_finetune

    cuda = device.type == "cuda"
    preset = "base" if cuda else "tiny"
    overrides = ["train.max_steps=1", "train.progress=false", f"train.device={device}", "split.n_test=1"]
    overrides += ["split.labeled=2", "optim.warmup_steps=0", "segmentation.overlay_cases=0"]
    overrides += ["train.amp=bf16"] if cuda else [*CONV, "segmentation.roi_size=[32,32,32]", "train.amp=none"]
    cfg = load_finetune_config("segmentation", preset, None, overrides)
    t0 = time.perf_counter()
    metrics = run_finetune(cfg, data, "scratch", root / "finetune")
    loss = float(metrics["final_loss"])
    ok = math.isfinite(loss) and math.isfinite(float(metrics["mean_dice"]))
    return {
        "ok": ok,
        "error": None if ok else f"loss {loss}, mean Dice {metrics['mean_dice']}",
        "preset": preset,
        "roi_size": list(cfg.segmentation.roi_size),
        "feature_size": cfg.model.feature_size,
        "precision": metrics["precision"],
        "loss": loss,
        "train_step_s": metrics["train_seconds"],
        "eval_s": metrics["eval_seconds"],
        "total_s": time.perf_counter() - t0,
        "peak_cuda_mb": _peak_mb(device),
    }


def _run(name: str, fn: Callable[[], dict[str, Any]], device: torch.device) -> dict[str, Any]:
    _reset(device)
    t0 = time.perf_counter()
    try:
        result = fn()
    except Exception as e:  # one failing check must not hide the others
        result = {
            "ok": False,
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc()[-3000:],
        }
    result["seconds"] = time.perf_counter() - t0
    print(f"[gpu_check] {name}: {'ok' if result['ok'] else 'FAILED'} ({result['seconds']:.1f} s)", flush=True)
    if not result["ok"]:
        print(f"[gpu_check]   {result['error']}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (the check) or cpu (the dry run, tiny shapes)")
    ap.add_argument("--out", default="gpu_check.json", help="the JSON to write")
    ap.add_argument("--steps", type=int, default=3, help="pretraining steps per method (>= 2)")
    ap.add_argument("--methods", nargs="*", help="default: every registered method")
    ap.add_argument("--budget-minutes", type=float, default=8.0, help="CUDA: fail if the whole takes longer")
    args = ap.parse_args(argv)
    from anatssl.engine.logger import setup_console_logging
    from anatssl.methods import METHODS

    setup_console_logging()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("[gpu_check] --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    methods = args.methods or sorted(METHODS.names())
    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "steps": args.steps,
        "methods": {},
    }
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        root = Path(tmp)
        data = make_data(root, device)
        for name in methods:
            report["methods"][name] = _run(
                name, lambda n=name: check_method(n, device, data, root, args.steps), device
            )
        report["swin_parity"] = _run("swin parity vs MONAI", lambda: check_swin_parity(device), device)
        report["finetune_segmentation"] = _run(
            "segmentation step", lambda: check_finetune(device, data, root), device
        )
    total = time.perf_counter() - t_start
    checks = [*report["methods"].values(), report["swin_parity"], report["finetune_segmentation"]]
    over = device.type == "cuda" and total > 60.0 * args.budget_minutes
    report.update(total_s=total, over_budget=over, ok=all(c["ok"] for c in checks) and not over)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    failed = [k for k, v in report["methods"].items() if not v["ok"]]
    failed += [k for k in ("swin_parity", "finetune_segmentation") if not report[k]["ok"]]
    verdict = "ok" if report["ok"] else "FAILED"
    print(
        f"[gpu_check] {verdict}: {len(checks) - len(failed)} of {len(checks)} checks "
        f"passed in {total:.0f} s{' (over budget)' if over else ''}"
        + (f"; failed: {', '.join(failed)}" if failed else "")
        + f"; wrote {args.out}"
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
