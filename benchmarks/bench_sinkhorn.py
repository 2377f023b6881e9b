"""Dustbin Sinkhorn speed: our batched log-domain solver vs a per-layer Python loop vs POT.

S2DC solves one (m+1) x (n+1) transport problem per sample and token layer (B * Tz problems per step,
100 iterations each). Three implementations of the same problems, each timed forward and forward +
backward (POT: forward only, it is a reference solver):

* ``batched``: :func:`anatssl.losses.sinkhorn.log_sinkhorn_dustbin` on the (L, m, n) stack;
* ``loop``: the same function called once per layer (what a straightforward port does);
* ``pot``: ``ot.sinkhorn(a, b, M, reg=1, method="sinkhorn_log")`` per layer on the augmented matrix
  with cost M = -Z (so exp(-M / reg) = exp(Z)), if POT (``pip install pot``) is installed.

Also checked: the three plans agree (max abs difference of the plans is printed).

Usage (the lead runs the full table on a quiet machine; ``--quick`` is a smoke run)::

    python benchmarks/bench_sinkhorn.py --out benchmarks/results/bench_sinkhorn.json
    python benchmarks/bench_sinkhorn.py --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from anatssl.losses.sinkhorn import log_sinkhorn_dustbin

# (name, layers L, tokens per layer): S2DC base with deepest tokens (B=1: 3 layers of 12 x 12), the
# same at batch 4, stage-3 tokens (6 layers of 24 x 24), and the tiny preset (2 layers of 4 x 4)
CASES = [("tiny", 2, 16), ("base_b1", 3, 144), ("base_b4", 12, 144), ("base_stage3", 6, 576)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn: Any, device: torch.device, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_case(
    name: str, layers: int, n: int, iters: int, device: torch.device, warmup: int, reps: int, with_pot: bool
) -> dict[str, Any]:
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(layers, n, 64, device=device), dim=-1)
    scores = (z @ z.transpose(1, 2) / 0.07).contiguous()
    row: dict[str, Any] = {"case": name, "layers": layers, "tokens": n, "iters": iters, "device": str(device)}

    def batched() -> torch.Tensor:
        return log_sinkhorn_dustbin(scores, 1.0, iters)

    def loop() -> torch.Tensor:
        return torch.cat([log_sinkhorn_dustbin(scores[i : i + 1], 1.0, iters) for i in range(layers)])

    def batched_bwd() -> None:
        s = scores.detach().requires_grad_(True)
        log_sinkhorn_dustbin(s, 1.0, iters).exp().sum().backward()

    def loop_bwd() -> None:
        s = scores.detach().requires_grad_(True)
        plans = [log_sinkhorn_dustbin(s[i : i + 1], 1.0, iters) for i in range(layers)]
        torch.cat(plans).exp().sum().backward()

    row["batched_fwd_ms"] = 1e3 * _time(batched, device, warmup, reps)
    row["loop_fwd_ms"] = 1e3 * _time(loop, device, warmup, reps)
    row["batched_fwdbwd_ms"] = 1e3 * _time(batched_bwd, device, warmup, reps)
    row["loop_fwdbwd_ms"] = 1e3 * _time(loop_bwd, device, warmup, reps)
    row["speedup_fwd"] = row["loop_fwd_ms"] / row["batched_fwd_ms"]
    row["max_abs_diff_loop"] = float((batched().exp() - loop().exp()).abs().max())
    if with_pot:
        try:
            import ot  # type: ignore[import-not-found]
        except ImportError:
            row["pot"] = "not installed (pip install pot)"
        else:
            m = n
            a = torch.full((m + 1,), 1.0 / (m + n), dtype=torch.float64)
            a[-1] = n / (m + n)
            b = torch.full((n + 1,), 1.0 / (m + n), dtype=torch.float64)
            b[-1] = m / (m + n)
            ours = batched().detach()
            aug = torch.zeros(layers, m + 1, n + 1, dtype=torch.float64)
            aug[:, :m, :n] = scores.double().cpu()
            aug[:, m, :] = 1.0
            aug[:, :, n] = 1.0

            def pot() -> list[Any]:
                return [
                    ot.sinkhorn(a, b, -aug[i], reg=1.0, method="sinkhorn_log", numItermax=iters, stopThr=0.0)
                    for i in range(layers)
                ]

            row["pot_fwd_ms"] = 1e3 * _time(pot, torch.device("cpu"), warmup, reps)
            plans = torch.stack([torch.as_tensor(p) for p in pot()])
            row["max_abs_diff_pot"] = float((plans - ours.exp().double().cpu()).abs().max())
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-pot", action="store_true", help="skip POT even if installed")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny and base_b1, 10 iterations, 1 rep")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cases = CASES[:2] if args.quick else CASES
    iters = 10 if args.quick else args.iters
    warmup, reps = (0, 1) if args.quick else (args.warmup, args.reps)
    rows = [run_case(*c, iters, device, warmup, reps, not args.no_pot) for c in cases]
    for r in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
