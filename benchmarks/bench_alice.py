"""Alice training-step time and peak memory at the tiny and base presets (and the CASA variants).

One step = views already cut (random crops, block masks), student forward on the masked crops,
teacher forward, CASA, the three losses, backward, per-parameter clipping, AdamW, EMA update: what
``anatssl pretrain --method alice`` does per step minus data loading and pair mining (measured
separately by ``bench_pair_mining.py``). Each configuration runs in a fresh subprocess so that its
peak memory is its own: CUDA ``max_memory_allocated`` on a GPU, otherwise the process's peak resident
set size (``ru_maxrss``: weights, activations, gradients, optimizer state, allocator slack), next to
the RSS before the first step.

Usage (the lead runs the full table on a quiet machine / a GPU; ``--quick`` is a smoke run)::

    python benchmarks/bench_alice.py --presets tiny base --casa-targets teacher_decoder teacher_encoder \
        --steps 5 --out benchmarks/results/bench_alice.json
    python benchmarks/bench_alice.py --quick
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

import torch


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(spec: dict) -> dict:
    from anatssl.methods import build_method
    from anatssl.runs import load_pretrain_config

    torch.set_num_threads(spec["threads"])
    cfg = load_pretrain_config("alice", spec["preset"], None, spec["overrides"])
    dev = torch.device(spec["device"])
    torch.manual_seed(0)
    method = build_method(cfg).to(dev).train()
    groups = [g for g in method.param_groups(cfg.optim.weight_decay) if g["params"]]
    opt = torch.optim.AdamW(groups, lr=1e-4)
    b, s = cfg.train.batch_size, cfg.params.crop_size
    g = torch.Generator().manual_seed(0)
    batch = {
        "q": torch.rand(b, 1, s, s, s, generator=g),
        "k": torch.rand(b, 1, s, s, s, generator=g),
        "q_mask": torch.rand(b, s, s, s, generator=g) > 0.75,
        "k_mask": torch.rand(b, s, s, s, generator=g) > 0.75,
    }
    batch = {k: v.to(dev) for k, v in batch.items()}
    amp = cfg.train.amp if dev.type == "cuda" else "none"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    ctx = torch.autocast("cuda", dtype=dtype) if dtype is not None else torch.autocast("cpu", enabled=False)

    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        with ctx:
            out = method.training_step(batch, cfg.params.freeze_last_layer_steps + i)
        out["loss"].backward()
        method.clip_gradients(cfg.optim.clip_grad)
        opt.step()
        method.on_step_end(i)

    rss_before = _rss()
    for i in range(spec["warmup"]):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for i in range(spec["steps"]):
        t0 = time.perf_counter()
        step(spec["warmup"] + i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    n_params = sum(p.numel() for p in method.parameters() if p.requires_grad)
    return {
        "preset": spec["preset"],
        "overrides": spec["overrides"],
        "device": str(dev),
        "amp": amp,
        "batch": b,
        "crop": s,
        "trainable_params": n_params,
        "step_s_median": statistics.median(times),
        "step_s_all": times,
        "peak_mem_mib": peak / 2**20,
        "peak_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "peak RSS of the process",
        "rss_before_steps_mib": rss_before / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "base"])
    ap.add_argument(
        "--casa-targets",
        nargs="+",
        default=["teacher_decoder"],
        help="teacher_decoder (default, shared CASA) and/or teacher_encoder (EMA copy of CASA)",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], metavar="key=value", help="extra config overrides")
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: tiny preset, conv backbone, 32^3, 1 step"
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))))
        return
    extra = list(args.set)
    if args.quick:
        args.presets, args.steps, args.warmup = ["tiny"], 1, 1
        extra += ["model.backbone=conv", "model.feature_size=4", "alice.crop_size=32"]
    rows = []
    for preset in args.presets:
        for target in args.casa_targets:
            spec = {
                "preset": preset,
                "overrides": [f"alice.casa_target={target}", *extra],
                "device": args.device,
                "steps": args.steps,
                "warmup": args.warmup,
                "threads": args.threads,
            }
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(spec)],
                capture_output=True,
                text=True,
                check=False,
            )
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"{preset} {target}: failed\n{proc.stderr[-2000:]}")
                continue
            rows.append(json.loads(line[0][7:]))
    print(
        f"{'preset':>6} {'casa_target':>16} {'device':>6} {'batch':>5} {'crop':>4} {'params M':>8} "
        f"{'step s':>7} {'peak MiB':>9}"
    )
    for r in rows:
        target = r["overrides"][0].split("=", 1)[1]
        print(
            f"{r['preset']:>6} {target:>16} {r['device']:>6} {r['batch']:>5} {r['crop']:>4} "
            f"{r['trainable_params'] / 1e6:>8.2f} {r['step_s_median']:>7.3f} {r['peak_mem_mib']:>9.0f}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
