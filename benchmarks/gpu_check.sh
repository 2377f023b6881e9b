#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): every method's base preset for a few steps under bf16,
# the Swin parity against MONAI on CUDA, one base-size segmentation fine-tuning step -> one JSON.
#   bash benchmarks/gpu_check.sh [--out gpu_check.json] [--steps 3]       # on a CUDA machine, < 8 min
#   bash benchmarks/gpu_check.sh --device cpu --out /tmp/check.json       # dry run: tiny shapes, CPU
# Exit status: 0 when every check passed, 1 when one failed, 2 when CUDA is asked for and absent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python}" "$here/gpu_check.py" "$@"
