"""S2DC training-step time and peak memory at the tiny and base presets.

One step = the method's ``training_step`` (EMA update, student forward on the G x G src crops, one
teacher forward on aug_full + aug_crop + the chosen src crop, L_p2p with 100 Sinkhorn iterations,
L_p2s, L_g with the queue) + backward + AdamW, on a batch cut by the method's own view function from
a random volume (view cutting is timed separately: it runs in DataLoader workers during training).

Reported per preset: median step time over ``--steps`` timed steps after ``--warmup``, the Sinkhorn
share of it (the same step with ``s2dc.use_p2p=false`` is timed too), peak memory and the view time.
Each configuration runs in a fresh subprocess, so its peak memory is its own: CUDA
``max_memory_allocated``; on CPU the process's peak resident set size (``ru_maxrss``: weights,
activations, gradients, AdamW state, allocator slack), next to the RSS before the first step.

Usage (the lead runs the full table on a GPU / quiet machine; ``--quick`` is a CPU smoke run)::

    python benchmarks/bench_s2dc.py --presets tiny base --out benchmarks/results/bench_s2dc.json
    python benchmarks/bench_s2dc.py --presets base --amp bf16
    python benchmarks/bench_s2dc.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anatssl.data.volume import Volume
from anatssl.engine.data import collate
from anatssl.methods import build_method
from anatssl.runs import load_pretrain_config

QUICK = [
    "model.backbone=conv",
    "model.feature_size=4",
    "s2dc.crop=32",
    "s2dc.token_stage=3",
    "s2dc.patch_hidden=32",
    "s2dc.patch_dim=16",
    "s2dc.global_hidden=32",
    "s2dc.global_dim=16",
]


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(
    preset: str,
    overrides: list[str],
    device: torch.device,
    amp: str,
    warmup: int,
    steps: int,
    batch_size: int | None,
) -> dict[str, Any]:
    cfg = load_pretrain_config("s2dc", preset, overrides=overrides)
    torch.manual_seed(0)
    method = build_method(cfg).to(device)
    hp = method.hp  # type: ignore[attr-defined]
    b = batch_size or cfg.train.batch_size
    slab = method.min_volume_shape  # type: ignore[attr-defined]
    vol = Volume(np.random.default_rng(0).random((1, *slab), dtype=np.float32), np.eye(4))
    t0 = time.perf_counter()
    samples = [method.views(vol, np.random.default_rng(i), None) for i in range(b)]
    view_s = (time.perf_counter() - t0) / b
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in collate(samples).items()}
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=3e-4, weight_decay=0.1)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def step(i: int) -> float:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = method.training_step(batch, i)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out["loss"].detach())

    rss_before = _rss()
    for i in range(warmup):
        step(i)
    _sync(device)
    times = []
    for i in range(warmup, warmup + steps):
        t0 = time.perf_counter()
        loss = step(i)
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _peak_rss()
    return {
        "preset": preset,
        "overrides": overrides,
        "device": str(device),
        "amp": amp,
        "batch_volumes": b,
        "grid": hp.grid,
        "crop": hp.crop,
        "token_stage": hp.token_stage,
        "backbone": f"{cfg.model.backbone} fs{cfg.model.feature_size}",
        "step_s": statistics.median(times),
        "peak_mem_gib": peak / 2**30,
        "peak_mem_kind": "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS of the process",
        "rss_before_steps_gib": rss_before / 2**30,
        "views_s_per_volume": view_s,
        "last_loss": loss,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "base"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    ap.add_argument("--batch-size", type=int, help="volumes per step (default: the preset's)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--no-ablation", action="store_true", help="skip the use_p2p=false (no Sinkhorn) row")
    ap.add_argument("--quick", action="store_true", help="CPU smoke run: tiny preset shrunk to a conv net")
    ap.add_argument("--out", type=Path)
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="extra config overrides")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.worker:  # one configuration in this (fresh) process
        spec = json.loads(args.worker)
        row = bench(
            spec["preset"],
            spec["overrides"],
            device,
            args.amp,
            spec["warmup"],
            spec["steps"],
            args.batch_size,
        )
        print("RESULT " + json.dumps(row))
        return
    presets = ["tiny"] if args.quick else args.presets
    extra = [*(QUICK if args.quick else []), *args.overrides]
    warmup, steps = (1, 1) if args.quick else (args.warmup, args.steps)
    rows = []
    for preset in presets:
        variants = [extra] if args.no_ablation else [extra, [*extra, "s2dc.use_p2p=false"]]
        for ov in variants:
            spec = {"preset": preset, "overrides": ov, "warmup": warmup, "steps": steps}
            cmd = [sys.executable, __file__, "--worker", json.dumps(spec), "--device", args.device]
            cmd += ["--amp", args.amp, "--threads", str(args.threads)]
            cmd += ["--batch-size", str(args.batch_size)] if args.batch_size else []
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:  # e.g. killed for memory (rc -9): say so, go on
                print(f"{preset} {ov}: failed (rc {proc.returncode})\n{proc.stderr[-2000:]}")
                rows.append({"preset": preset, "overrides": ov, "failed": f"rc {proc.returncode}"})
                continue
            row = json.loads(line[0][len("RESULT ") :])
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
