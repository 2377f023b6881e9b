"""One segmentation fine-tuning step (forward + backward) in fp32 / bf16 autocast, contiguous / channels-last.

A quick check on a tiny case, not a benchmark table: the variants are interleaved (so machine load hits
them alike) and the minimum of ``--repeats`` is printed. The default is the CPU recipe's step
(``configs/finetune/segmentation_cpu.yaml``: conv fs 12, 19 classes, 2 crops of 32^3) on one thread.

    OMP_NUM_THREADS=1 python benchmarks/bench_finetune_step.py [--crop 32] [--batch 2] [--repeats 6]
"""

from __future__ import annotations

import argparse
import time

import torch
from monai.losses import DiceCELoss

from anatssl.config.schema import ModelConfig
from anatssl.downstream.segmentation import SegmentationNet
from anatssl.engine.device import autocast
from anatssl.engine.precision import cpu_has_bf16
from anatssl.models.backbones import build_backbone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--feature-size", type=int, default=12)
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="also time bf16 autocast (slow where emulated)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = SegmentationNet(
        build_backbone(ModelConfig(backbone="conv", feature_size=args.feature_size)), args.classes
    )
    loss_f = DiceCELoss(to_onehot_y=True, softmax=True)
    c = args.crop
    x0 = torch.randn(args.batch, 1, c, c, c)
    y = torch.randint(0, args.classes, (args.batch, 1, c, c, c))
    variants = [("fp32", "none", False), ("fp32 channels-last", "none", True)]
    if args.bf16:
        variants += [("bf16", "bf16", False), ("bf16 channels-last", "bf16", True)]
    times: dict[str, list[float]] = {v[0]: [] for v in variants}
    cpu = torch.device("cpu")
    for _ in range(args.repeats):
        for name, amp, cl in variants:
            fmt = torch.channels_last_3d if cl else torch.contiguous_format
            net.to(memory_format=fmt)  # type: ignore[call-overload]
            x = x0.contiguous(memory_format=fmt)
            t = time.perf_counter()
            with autocast(cpu, amp):
                logits = net(x)
            loss = loss_f(logits.float(), y)
            net.zero_grad(set_to_none=True)
            loss.backward()
            times[name].append(time.perf_counter() - t)
    shape = f"{args.batch} x {c}^3, fs {args.feature_size}, {args.threads} thread(s)"
    print(f"CPU bf16 units: {cpu_has_bf16()}; {shape}")
    for name, ts in times.items():
        print(f"{name:20s} min {min(ts):.3f} s   median {sorted(ts)[len(ts) // 2]:.3f} s")


if __name__ == "__main__":
    main()
