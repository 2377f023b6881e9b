"""The whole story on synthetic data in about ten CPU minutes: synth -> pretrain -> fine-tune vs scratch.

``run_quickstart(out_dir)`` (called by ``anatssl quickstart``) is a one-seed benchmark suite: it makes
a small synthetic torso set, pretrains one method (Alice when it is registered, else swinssl), fine-tunes
the pretrained encoder and a scratch copy with two labelled volumes, scores the held-out volumes
(Dice, HD95, landmark correspondence), prints the table and writes ``out_dir/report/`` (results.md,
plots, prediction overlays). It is resumable like any suite: rerunning skips finished stages.
It uses the small CNN backbone (``conv``, 4x cheaper per step than Swin on a CPU) so that fine-tuning
gets enough steps to segment something in ten minutes; the budget is far too small for pretraining to
show its worth reliably: it shows the pipeline and the numbers' format, and
``anatssl benchmark --suite synthetic-small`` (every method, two seeds, two label counts) is the
comparison.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from anatssl.bench.suites import Suite


def quickstart_suite(method: str, fast: bool = False, seed: int = 0) -> Suite:
    """The quickstart as a suite (data and training ``seed``). ``fast``: toy sizes (about a minute)."""
    crop = "[64,64,64]"
    per_method: dict[str, tuple[str, ...]] = {
        "swinssl": (f"swinssl.crop_size={crop}",),
        "simmim": (f"simmim.crop_size={crop}",),
        "alice": ("alice.sam_steps=30",) if not fast else ("alice.sam_steps=2",),
    }
    if fast:
        return Suite(
            name="quickstart",
            description=f"quickstart ({method}, toy size)",
            methods=(method,),
            seeds=(seed,),
            labeled=(2,),
            data={"n": 6, "size": 64, "seed": seed},
            shared=("model.backbone=conv", "model.feature_size=8", "data.hu_window=[-1000,1000]"),
            pretrain=("train.max_steps=2", "train.batch_size=1", "train.log_every=1"),
            finetune=(
                "train.max_steps=2",
                "train.batch_size=1",
                "segmentation.samples_per_volume=1",
                "segmentation.sw_batch_size=1",
                "segmentation.overlay_cases=1",
                "optim.warmup_steps=0",
            ),
            n_test=2,
            method_overrides=per_method,
            correspondence_subjects=2,
        )
    return Suite(
        name="quickstart",
        description=f"quickstart: {method} pretrained 60 steps on 12 synthetic torsos (96^3) with the small "
        "CNN backbone, then fine-tuned 60 steps (lr 1e-3) with 2 labelled volumes next to a scratch copy, "
        "both with the pretraining's HU window [-1000, 1000]; 4 held-out volumes, 1 seed",
        methods=(method,),
        seeds=(seed,),
        labeled=(2,),
        data={"n": 12, "size": 96, "seed": seed},
        shared=("model.backbone=conv", "model.feature_size=12", "data.hu_window=[-1000,1000]"),
        pretrain=(
            "train.max_steps=60",
            "train.batch_size=1",
            "train.log_every=5",
            "train.ckpt_every=20",
            "optim.warmup_steps=5",
        ),
        finetune=(
            "train.max_steps=60",
            "train.batch_size=1",
            "segmentation.samples_per_volume=2",
            "optim.warmup_steps=5",
            "optim.lr=1e-3",
        ),
        n_test=4,
        method_overrides=per_method,
        correspondence_subjects=4,
    )


def default_method() -> str:
    from anatssl.methods import METHODS

    return "alice" if "alice" in METHODS else "swinssl"


def run_quickstart(
    out_dir: str | Path,
    seed: int = 0,
    method: str | None = None,
    fast: bool = False,
    print_table: bool = True,
) -> dict[str, Any]:
    """Run the quickstart into ``out_dir``; -> the results dict (also ``out_dir/results.json``)."""
    from anatssl.bench.results import markdown_table
    from anatssl.bench.runner import run_suite

    out = Path(out_dir)
    method = method or default_method()
    results = run_suite(quickstart_suite(method, fast, seed), out)
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "results.md", report / "results.md")
    for png in (out / "plots").glob("*.png"):
        shutil.copy(png, report / png.name)
    for init in ("scratch", method):
        for png in sorted((out / "finetune").glob(f"{init}_n*_s{seed}/report/overlay_*.png"))[:1]:
            shutil.copy(png, report / f"overlay_{init}.png")
    if print_table:
        from rich.console import Console

        c = Console()
        c.print(f"[bold]anatssl quickstart[/bold]: {results['description']}")
        c.print(markdown_table(results), markup=False)
        cost = results["cost"]
        c.print(f"{cost['cpu_seconds'] / 60:.1f} CPU-minutes; report in {report}", markup=False)
    return results
