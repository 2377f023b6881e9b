"""Time per pretraining step and peak memory of any method at a preset, through the real trainer.

    python benchmarks/bench_pretrain.py --method swinssl --preset tiny --steps 6
    python benchmarks/bench_pretrain.py --method swinssl --preset base --steps 3 --set train.batch_size=2
    python benchmarks/bench_pretrain.py --method swinssl simmim s2dc alice voco modelsgenesis \
        --preset tiny base --steps 3 --set train.amp=none --json benchmarks/results/bench_pretrain_all.json

Each configuration runs in a fresh subprocess so that peak memory (max RSS on CPU, the CUDA
allocator's peak on GPU) belongs to that configuration alone. The first step (allocator warm-up,
lazy initialisation) is excluded from the mean. Data: synthetic phantoms made by ``anatssl synth``.
With ``--json`` every finished configuration is written at once and a rerun skips the configurations
the file already holds (a long table survives an interruption).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[5]))
from anatssl.runs import load_pretrain_config
from anatssl.engine.trainer import pretrain
overrides = json.loads(sys.argv[4]) + ["train.progress=false", "train.tensorboard=false",
                                       f"train.max_steps={sys.argv[3]}", "train.ckpt_every=100000"]
cfg = load_pretrain_config(sys.argv[1], sys.argv[2], None, overrides)
pretrain(cfg, sys.argv[6], sys.argv[7])
rows = [json.loads(l) for l in open(sys.argv[7] + "/metrics.jsonl")]
peak_cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
print("RESULT " + json.dumps({"seconds": [r["seconds"] for r in rows],
      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cuda_mb": peak_cuda,
      "loss": rows[-1]["loss"]}))
"""


def _run_child(
    method: str,
    preset: str,
    steps: int,
    overrides: list[str],
    threads: int,
    data: Path,
    tmp: Path,
    timeout: float,
) -> subprocess.CompletedProcess:
    args = [method, preset, str(steps), json.dumps(overrides), str(threads), str(data), str(tmp / "run")]
    return subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        timeout=timeout,
    )


def run_one(
    method: str, preset: str, steps: int, overrides: list[str], threads: int, data: Path, timeout: float
) -> dict:
    """One configuration in a fresh process; a failure (killed for memory: -9, over ``timeout``) is
    returned as ``{"error": ...}`` so the other configurations still run."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            out = _run_child(method, preset, steps, overrides, threads, data, Path(tmp), timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"over the --timeout of {timeout:.0f} s", "seconds": []}
    if out.returncode != 0:
        return {"error": f"exit status {out.returncode}: {out.stderr[-1500:]}", "seconds": []}
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT ") :])
    timed = res["seconds"][1:] or res["seconds"]
    res["step_s"] = statistics.mean(timed)
    res["step_s_std"] = statistics.pstdev(timed)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", nargs="+", default=["swinssl"], help="one or more methods")
    ap.add_argument("--preset", nargs="+", default=["tiny", "base"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900, help="seconds one configuration may take")
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for every run")
    ap.add_argument("--data", help="a dataset (default: 4 synthetic 96^3 phantoms in a temp dir)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    data = Path(args.data) if args.data else Path(tmp.name) / "synth"
    if not args.data:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "anatssl.cli.main",
                "synth",
                "--out",
                str(data),
                "--n",
                "4",
                "--seed",
                "0",
                "--size",
                "96",
            ],
            check=True,
            capture_output=True,
        )
    results: list[dict] = []
    if args.json and Path(args.json).is_file():
        results = json.loads(Path(args.json).read_text())
    for method in args.method:
        for preset in args.preset:
            if any(
                r["method"] == method and r["preset"] == preset and r["overrides"] == args.set
                for r in results
            ):
                print(f"{method} {preset}: in {args.json} already, skipped", flush=True)
                continue
            res = run_one(method, preset, args.steps, args.set, args.threads, data, args.timeout)
            if "error" in res:
                print(f"{method} {preset}: failed, {res['error'][:300]}", flush=True)
                res.update(method=method, preset=preset, overrides=args.set, step_s=None, rss_mb=None)
                results.append(res)
                continue
            res.update(
                method=method, preset=preset, overrides=args.set, steps=args.steps, threads=args.threads
            )
            results.append(res)
            print(
                f"{method} {preset}: {res['step_s']:.2f} s/step, peak RSS {res['rss_mb']:.0f} MiB", flush=True
            )
            if args.json:
                tmp = Path(args.json).with_suffix(".tmp")
                tmp.write_text(json.dumps(results, indent=2))
                tmp.replace(args.json)
    print("| method | preset | overrides | step (s) | peak RSS (MiB) | peak CUDA (MiB) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        if r.get("error"):
            print(f"| {r['method']} | {r['preset']} | {' '.join(r['overrides']) or '-'} | failed | - | - |")
            continue
        cuda = f"{r['cuda_mb']:.0f}" if r["cuda_mb"] is not None else "-"
        print(
            f"| {r['method']} | {r['preset']} | {' '.join(r['overrides']) or '-'} | "
            f"{r['step_s']:.2f} +- {r['step_s_std']:.2f} | {r['rss_mb']:.0f} | {cuda} |"
        )


if __name__ == "__main__":
    main()
