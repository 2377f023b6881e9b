"""Which Alice variant to recommend: CASA target (teacher_decoder / teacher_encoder) x teacher
temperature preset (alice 0.008 -> 0.01 / dino 0.04 -> 0.07).

The spec leaves both choices to the benchmark. Each variant is pretrained with the synthetic-small
suite's budget and data (conv backbone fs 12, 60 steps of batch 1, 64^3 crops, 16 synthetic torsos,
the same SAM embeddings and seed for every variant), then measured on what tells the variants apart:

* the token loss L_patch over the run: a target that the online branch can reproduce without the
  decoder (the public code's target shares CASA's weights *and* its queries with the online branch)
  drives L_patch to ~0 within a few steps, after which the token branch teaches the encoder nothing;
* the global loss L_cls at the end;
* landmark matching with the encoder-decoder's dense features on the 4 held-out volumes (the suite's
  correspondence cell), a label-free read-out of what the features learned.

Usage (about 6 CPU-minutes per variant on this 2-core machine)::

    python benchmarks/bench_alice_variants.py --work /tmp/alice_variants \\
        --embeddings bench/synthetic-small/pretrain/alice_s0/embeddings \\
        --data bench/synthetic-small/data --out benchmarks/results/bench_alice_variants.json

Without ``--data`` the suite's data are made in ``WORK/data``; without ``--embeddings`` each variant
trains its own SAM first (stage 0, 60 steps), which adds ~2 minutes per variant.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

VARIANTS = {
    "decoder-alice": ("teacher_decoder", "alice"),
    "decoder-dino": ("teacher_decoder", "dino"),
    "encoder-alice": ("teacher_encoder", "alice"),
    "encoder-dino": ("teacher_encoder", "dino"),
}


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def summarise_losses(rows: list[dict]) -> dict:
    """L_patch / L_cls over a run: start, end, minimum and the share of steps where L_patch < 1e-3."""
    patch = [r["loss_patch"] for r in rows if "loss_patch" in r]
    cls = [r["loss_cls"] for r in rows if "loss_cls" in r]
    half = patch[len(patch) // 2 :]
    return {
        "loss_patch_first": patch[0],
        "loss_patch_last": patch[-1],
        "loss_patch_min": min(patch),
        "loss_patch_mean_second_half": sum(half) / len(half),
        "share_steps_patch_below_1e-3": sum(p < 1e-3 for p in patch) / len(patch),
        "loss_cls_first": cls[0],
        "loss_cls_last": cls[-1],
        "loss_rec_last": rows[-1].get("loss_rec"),
        "steps_logged": len(rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="directory for the runs (resumable)")
    ap.add_argument("--data", type=Path, help="synthetic-small data (default: made in WORK/data)")
    ap.add_argument("--embeddings", type=Path, help="SAM embedding cache of the data (skips stage 0)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="JSON results (merged with an existing file)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from anatssl.bench.runner import correspondence_cell, make_synthetic_data, pretrain_run
    from anatssl.bench.suites import SUITES

    suite = SUITES["synthetic-small"]
    data = args.data or make_synthetic_data(args.work / "data", **suite.data)  # type: ignore[arg-type]
    results = json.loads(args.out.read_text()) if args.out and args.out.is_file() else {}
    for name in args.variants:
        target, tau = VARIANTS[name]
        run = args.work / f"{name}_s{args.seed}"
        overrides = [
            *suite.model,
            *[o for o in suite.pretrain if not o.startswith("train.max_steps")],
            f"train.max_steps={args.steps}",
            "train.log_every=1",
            "train.progress=false",
            f"seed={args.seed}",
            *suite.method_overrides.get("alice", ()),
            f"alice.casa_target={target}",
            f"alice.tau_preset={tau}",
        ]
        if args.embeddings:
            overrides.append(f"alice.embeddings_dir={args.embeddings.resolve()}")
        t0 = time.perf_counter()
        pretrain_run("alice", data, run, overrides)
        wall = time.perf_counter() - t0
        corr = correspondence_cell(str(run), data, suite, args.work / "correspondence" / name)
        rec = {
            "casa_target": target,
            "tau_preset": tau,
            "seed": args.seed,
            "steps": args.steps,
            "overrides": overrides,
            "pretrain_wall_s": wall,
            **summarise_losses(_rows(run)),
            "landmark_mre_mm": corr.get("model", {}).get("mre_mm", math.nan),
            "same_voxel_mre_mm": corr.get("same_voxel", {}).get("mre_mm", math.nan),
            "random_mre_mm": corr.get("random_foreground", {}).get("mre_mm", math.nan),
        }
        results[f"{name}_s{args.seed}"] = rec
        print(json.dumps({name: {k: v for k, v in rec.items() if k != "overrides"}}, indent=1), flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
