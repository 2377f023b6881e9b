"""``anatssl export``: a pretraining run's encoder for MONAI / Swin-UNETR, nnU-Net v2, or as safetensors."""

from __future__ import annotations

import argparse
from typing import Any

from anatssl.cli.args import command_parser

EPILOG = """\
examples:
  anatssl export --run runs/swinssl --format monai-swinunetr --out swinssl_swinunetr.pt
  anatssl export --run runs/alice --format safetensors --out alice.safetensors
  anatssl export --run runs/simmim_resenc --format nnunet --out resenc.pt  # + resenc.plans.json

Loading the monai-swinunetr file in MONAI:
  sd = torch.load("swinssl_swinunetr.pt", weights_only=True)["state_dict"]
  net = SwinUNETR(in_channels=1, out_channels=K, feature_size=48)   # the run's model.* settings
  net.load_state_dict(sd, strict=False)      # missing: out.* only (the new segmentation head)
  # or just the encoder, strictly:
  net.swinViT.load_state_dict({k[8:]: v for k, v in sd.items() if k.startswith("swinViT.")})

The nnunet file (resenc runs) is what nnUNetv2_train -pretrained_weights reads, once the plan fragment
is merged into the plans of the matching ResEnc planner: docs/nnunet.md.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = command_parser(
        sub,
        "export",
        help="export a run's encoder (MONAI SwinUNETR, nnU-Net v2 ResEnc, or safetensors)",
        description="Export the backbone of a pretraining run. Keys are MONAI SwinUNETR names "
        "(swinViT.*, encoder1..4, encoder10, decoder1..5; the SSL reconstruction conv is dropped). "
        "The file also records the run's model settings, method and step.",
        epilog=EPILOG,
    )
    p.add_argument("--run", required=True, help="a pretraining run directory (with checkpoints/last.pt)")
    p.add_argument(
        "--format",
        required=True,
        choices=["monai-swinunetr", "safetensors", "nnunet"],
        help="monai-swinunetr: torch file {'state_dict': ..., 'anatssl': meta} (swin backbone "
        "only); safetensors: the same tensors, meta in the file's metadata (any backbone); nnunet: "
        "torch file {'network_weights': ..., 'anatssl': meta} for nnUNetv2_train -pretrained_weights, "
        "and the plan fragment (architecture, patch size, spacing, normalisation) as OUT's stem + "
        ".plans.json (resenc backbone only; docs/nnunet.md)",
    )
    p.add_argument("--out", required=True, help="file to write (.pt / .safetensors)")
    p.add_argument(
        "--encoder-only",
        action="store_true",
        help="write only the Swin encoder (swinViT.*), as Tang et al.'s model_swinvit.pt",
    )
    p.add_argument(
        "--patch-size",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=None,
        help="nnunet: the plan fragment's patch size (multiples of 32, >= 64; default: the resenc "
        "variant's, L 160^3, M 128^3, tiny 64^3); use nnU-Net's planned one if its topology matches",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from anatssl.downstream.weights import export_run

    patch = tuple(args.patch_size) if args.patch_size else None
    path, n = export_run(args.run, args.format, args.out, encoder_only=args.encoder_only, patch_size=patch)
    print(f"wrote {n} tensors to {path}")
    if args.format == "nnunet":
        from anatssl.downstream.nnunet import fragment_path

        print(f"wrote the nnU-Net plan fragment to {fragment_path(path)} (merge it: docs/nnunet.md)")
    return 0
