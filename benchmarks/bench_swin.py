"""Swin encoder speed and memory: MONAI's ``SwinTransformer`` vs our ``SwinViT`` at identical weights.

For each feature size and crop, and for two models, one training step (forward, backward, AdamW) is
timed in a fresh subprocess per implementation (so that peak memory is that process's own):

* ``encoder``: ``SwinTransformer`` (MONAI) vs ``SwinViT`` (ours), loss = mean of squares of the 5
  normalised outputs;
* ``unetr``: MONAI's ``SwinUNETR`` with its own encoder vs the same network whose ``swinViT`` is our
  ``SwinViT`` (exactly the computation of our ``swin`` backbone's encode + decode), MSE to a random
  target.

Reported per row: median step time over ``--steps`` timed steps (after ``--warmup``), peak memory
(max RSS of the subprocess during the steps minus its RSS just before the first step: activations,
gradients, optimizer state and allocator slack; RSS is what the OS gives the process, torch has no
CPU allocator statistics), achieved GFLOP/s and its share of the machine's fp32 matmul peak. FLOPs
are those of MONAI's training step counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls
and convolutions, forward + backward): the *useful* work, the same number for both implementations,
so our recomputation of attention scores in backward is not counted as work done.

Usage (the lead runs the full table on a quiet machine; ``--quick`` is a smoke run)::

    python benchmarks/bench_swin.py --threads 2 --feature-sizes 12 24 48 --crops 64 96 --batch 2 \
        --out benchmarks/results/bench_swin.json
    python benchmarks/bench_swin.py --quick
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


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def build(model: str, impl: str, fs: int, compile: bool) -> torch.nn.Module:
    """The benchmarked network, seeded so that both implementations hold identical weights."""
    from monai.networks.nets import SwinUNETR
    from monai.networks.nets.swin_unetr import SwinTransformer

    from anatssl.models.backbones.swin_vit import SwinViT

    torch.manual_seed(0)
    net: torch.nn.Module
    if model == "encoder":
        net = SwinTransformer(1, fs, (7, 7, 7), (2, 2, 2), (2, 2, 2, 2), (3, 6, 12, 24))
    else:
        net = SwinUNETR(in_channels=1, out_channels=2, feature_size=fs)
    if impl == "ours":
        enc: torch.nn.Module = net if model == "encoder" else net.swinViT  # type: ignore[assignment]
        mine = SwinViT(1, fs, (7, 7, 7), (2, 2, 2, 2), (3, 6, 12, 24), compile=compile)
        mine.load_state_dict(enc.state_dict(), strict=True)
        if model == "encoder":
            net = mine
        else:
            net.swinViT = mine
    return net


def _loss(model: str, out: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    if model == "encoder":
        return sum((o.float() ** 2).mean() for o in out)  # type: ignore[return-value]
    return torch.nn.functional.mse_loss(out, target)  # type: ignore[arg-type]


def child(args: argparse.Namespace) -> dict[str, object]:
    """One (model, impl, fs, crop) measurement in this process; returns a JSON-able dict."""
    torch.set_num_threads(args.threads)
    net = build(args.model, args.impl, args.fs, args.compile)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 1, args.crop, args.crop, args.crop, generator=g)
    target = torch.randn(args.batch, 2, args.crop, args.crop, args.crop, generator=g)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp == "bf16"):
            loss = _loss(args.model, net(x), target)
        loss.backward()
        opt.step()

    result: dict[str, object] = {}
    if args.count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            _loss(args.model, net(x), target).backward()
        result["flops"] = counter.get_total_flops()
        opt.zero_grad(set_to_none=True)
    base = _rss_bytes()
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    result.update(step_s=statistics.median(times), times=times, peak_mb=(_peak_rss_bytes() - base) / 2**20)
    return result


CATEGORIES = {
    "attention GEMMs (bmm, baddbmm)": ("aten::bmm", "aten::baddbmm"),
    "softmax fwd/bwd": ("aten::_softmax", "aten::_softmax_backward_data"),
    "Linear / conv GEMMs (mm, addmm, conv)": (
        "aten::mm",
        "aten::addmm",
        "aten::mkldnn_convolution",
        "aten::convolution_backward",
    ),
    "copies (copy_, index_select, cat, pad)": (
        "aten::copy_",
        "aten::index_select",
        "aten::cat",
        "aten::constant_pad_nd",
        "aten::roll",
        "aten::clone",
    ),
}


def profile(args: argparse.Namespace) -> None:
    """Self CPU time of one training step by op category, for MONAI and ours (``--profile``)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(args.threads)
    model, fs, crop = args.models[0], args.feature_sizes[0], args.crops[0]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 1, crop, crop, crop, generator=g)
    target = torch.randn(args.batch, 2, crop, crop, crop, generator=g)
    for impl in ("monai", "ours"):
        net = build(model, impl, fs, False)
        _loss(model, net(x), target).backward()  # warm-up (plan caches)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            _loss(model, net(x), target).backward()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        print(
            f"\n{impl}: {model}, fs {fs}, {crop}^3, batch {args.batch}, {args.threads} threads: "
            f"{total / 1e6:.2f} s self CPU (forward + backward)"
        )
        seen = 0.0
        for name, ops in CATEGORIES.items():
            t = sum(e.self_cpu_time_total for e in events if e.key in ops)
            seen += t
            print(f"  {name:42s} {t / 1e6:7.2f} s  {100 * t / total:5.1f}%")
        rest = sorted(
            (e for e in events if not any(e.key in ops for ops in CATEGORIES.values())),
            key=lambda e: -e.self_cpu_time_total,
        )[:6]
        print(
            f"  {'everything else':42s} {(total - seen) / 1e6:7.2f} s  {100 * (total - seen) / total:5.1f}%"
            f"  (top: {', '.join(f'{e.key} {e.self_cpu_time_total / 1e6:.2f}' for e in rest)})"
        )
        del net


def matmul_peak(threads: int, n: int = 4096, reps: int = 5) -> float:
    """Achieved fp32 GFLOP/s of a large (n x n) @ (n x n) matmul: the machine's practical peak."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def run_child(args: argparse.Namespace, model: str, impl: str, fs: int, crop: int, flops: bool) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--model",
        model,
        "--impl",
        impl,
        "--fs",
        str(fs),
        "--crop",
        str(crop),
        "--batch",
        str(args.batch),
        "--threads",
        str(args.threads),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    if flops:
        cmd.append("--count-flops")
    if args.amp != "none":
        cmd += ["--amp", args.amp]
    if args.compile and impl == "ours":
        cmd.append("--compile")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        return {"error": lines[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _best(runs: list[dict]) -> dict:
    """The repeat with the fastest step (peak memory: the largest seen; FLOPs: from the first)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    best = dict(min(ok, key=lambda r: r["step_s"]))
    best["peak_mb"] = max(r["peak_mb"] for r in ok)
    best["all_step_s"] = [r["step_s"] for r in ok]
    if "flops" in ok[0]:
        best["flops"] = ok[0]["flops"]
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--feature-sizes", type=int, nargs="+", default=[12, 24, 48], help="SwinUNETR feature sizes"
    )
    p.add_argument("--crops", type=int, nargs="+", default=[64, 96], help="cubic crop edges (voxels)")
    p.add_argument(
        "--models",
        nargs="+",
        default=["encoder", "unetr"],
        choices=["encoder", "unetr"],
        help="encoder alone, or the whole SwinUNETR (our encoder swapped in for 'ours')",
    )
    p.add_argument("--batch", type=int, default=2, help="volumes per step")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every measurement")
    p.add_argument("--steps", type=int, default=3, help="timed training steps (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (plan caches, allocator)")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="subprocesses per implementation, alternating MONAI / ours; the fastest is reported "
        "(use 2-3 when other work shares the machine)",
    )
    p.add_argument("--compile", action="store_true", help="also torch.compile our blocks' per-token parts")
    p.add_argument(
        "--amp",
        default="none",
        choices=["none", "bf16"],
        help="CPU bf16 autocast for both implementations (timing only; parity is fp32)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: fs 12, 64^3, batch 1, 1 step")
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead of the table: time by op category (torch.profiler) for the first "
        "model / feature size / crop given, MONAI and ours",
    )
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    # internal: one measurement per subprocess
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="encoder", help=argparse.SUPPRESS)
    p.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
    p.add_argument("--fs", type=int, default=12, help=argparse.SUPPRESS)
    p.add_argument("--crop", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--count-flops", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.profile:
        profile(args)
        return 0
    if args.quick:
        args.feature_sizes, args.crops, args.batch, args.steps, args.warmup = [12], [64], 1, 1, 1

    peak = matmul_peak(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, fp32 matmul peak {peak:.1f} GFLOP/s")
    header = (
        "| model | fs | crop | MONAI step s | ours step s | speed-up | MONAI peak MB | ours peak MB "
        "| mem ratio | GFLOP/step | MONAI GFLOP/s (% peak) | ours GFLOP/s (% peak) |"
    )
    print(header)
    print("|---" * 12 + "|")
    rows = []
    for model in args.models:
        for fs in args.feature_sizes:
            for crop in args.crops:
                # alternate the implementations so that a change of machine load hits both alike
                runs: dict[str, list[dict]] = {"monai": [], "ours": []}
                for r in range(args.repeats):
                    for impl in ("monai", "ours"):
                        count = impl == "monai" and r == 0
                        runs[impl].append(run_child(args, model, impl, fs, crop, flops=count))
                ref, ours = _best(runs["monai"]), _best(runs["ours"])
                row = {
                    "model": model,
                    "fs": fs,
                    "crop": crop,
                    "batch": args.batch,
                    "threads": args.threads,
                    "matmul_peak_gflops": peak,
                    "monai": ref,
                    "ours": ours,
                }
                rows.append(row)
                if "error" in ref or "error" in ours:
                    print(f"| {model} | {fs} | {crop} | {ref.get('error', '')} | {ours.get('error', '')} |")
                    continue
                gf = ref["flops"] / 1e9
                gm, go = gf / ref["step_s"], gf / ours["step_s"]
                tm, to, mm, mo = ref["step_s"], ours["step_s"], ref["peak_mb"], ours["peak_mb"]
                print(
                    f"| {model} | {fs} | {crop}^3 | {tm:.2f} | {to:.2f} | {tm / to:.2f}x "
                    f"| {mm:.0f} | {mo:.0f} | {mo / max(mm, 1e-9):.2f} | {gf:.1f} "
                    f"| {gm:.1f} ({100 * gm / peak:.1f}%) | {go:.1f} ({100 * go / peak:.1f}%) |",
                    flush=True,
                )
    peak_end = matmul_peak(args.threads)
    print(f"fp32 matmul peak at the end of the run: {peak_end:.1f} GFLOP/s (start: {peak:.1f})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
