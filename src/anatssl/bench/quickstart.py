"""What pretraining is worth, on synthetic data, in about ten CPU minutes.

``run_quickstart(out_dir)`` (called by ``anatssl quickstart``) is a one-seed benchmark suite: it makes
16 synthetic torsos (64^3, 6 mm), pretrains one method (S2DC by default: the fastest per step here and
the one measured ahead in issue 13) on the small CNN backbone, then scores the frozen pretrained
encoder next to the random-init encoder it started from (the control) on 4 held-out volumes:

* a linear probe on the encoder's multi-scale features with 1 and 2 labelled volumes;
* label transfer with no training (each voxel takes its nearest labelled voxel's label);
* landmark matching across the held-out volumes with the same features (mm; lower is better).

It prints one table (control, pretrained, the paired difference with its 95 % bootstrap interval over
the held-out volumes) and a one-line reading that calls a difference an effect only where its interval
excludes 0, and writes ``out_dir/report/`` (results.md, plots). It is resumable like any suite.
``anatssl benchmark --suite synthetic-probe`` (every method, two seeds, fine-tuning too) is the
comparison to cite; one seed of one method shows the protocol and its order of magnitude.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from anatssl.bench.suites import SMALL_CROPS, Suite

QUICKSTART_STEPS = 1500


def quickstart_suite(method: str, fast: bool = False, seed: int = 0) -> Suite:
    """The quickstart as a suite (data and training ``seed``). ``fast``: toy sizes (about a minute)."""
    shared = ("model.backbone=conv", "model.feature_size=12", "data.hu_window=[-1000,1000]")
    if fast:
        return Suite(
            name="quickstart",
            description=f"quickstart ({method}, toy size)",
            methods=(method,),
            seeds=(seed,),
            labeled=(),
            data={"n": 6, "size": 64, "seed": seed},
            shared=("model.backbone=conv", "model.feature_size=4", "data.hu_window=[-1000,1000]"),
            pretrain=("train.max_steps=2", "train.batch_size=1", "train.log_every=1", "optim.warmup_steps=0"),
            finetune=(),
            n_test=3,
            method_overrides={**SMALL_CROPS, "alice": (*SMALL_CROPS["alice"], "alice.sam_steps=2")},
            correspondence=False,  # the decoder-feature cell; the dense cell matches landmarks
            correspondence_subjects=3,
            dense=(1, 2),
            dense_overrides=("dense.steps=20", "dense.reference_voxels=256"),
        )
    return Suite(
        name="quickstart",
        description=f"quickstart: {method} pretrained {QUICKSTART_STEPS:,} steps (32^3 crops) on 16 "
        "synthetic torsos (64^3, 6 mm) with the small CNN backbone (feature_size 12); its frozen encoder "
        "next to the random-init encoder it started from: linear probe and label transfer with 1 and 2 "
        "labelled volumes, landmark matching; 4 held-out volumes, 1 seed",
        methods=(method,),
        seeds=(seed,),
        labeled=(),
        data={"n": 16, "size": 64, "seed": seed},
        shared=shared,
        pretrain=(
            f"train.max_steps={QUICKSTART_STEPS}",
            "train.batch_size=1",
            "train.log_every=10",
            "optim.warmup_steps=50",
        ),
        finetune=(),
        n_test=4,
        method_overrides=SMALL_CROPS,
        correspondence=False,
        correspondence_subjects=4,
        dense=(1, 2),
    )


def default_method() -> str:
    return "s2dc"


def quickstart_table(results: dict[str, Any]) -> list[str]:
    """The printed table (one row per metric: control, pretrained, paired difference with its 95 %
    interval, verdict), the same-voxel baseline of the landmark error, then the one-line reading."""
    from anatssl.bench.stats import fmt_delta, verdict

    method = next(i for i in results["inits"] if i != "scratch")
    dense = results.get("dense") or {}
    ctrl, arm = dense.get("scratch") or {}, dense.get(method) or {}
    rows: list[tuple[str, Any, Any, Any, bool, int]] = []
    for key, name in (("probe", "probe"), ("label_transfer", "transfer")):
        for n in results["spec"]["dense"]:
            c = ((ctrl.get(key) or {}).get(str(n)) or {}).get("mean_dice")
            a = ((arm.get(key) or {}).get(str(n)) or {}).get("mean_dice")
            d = ((arm.get(key) or {}).get(str(n)) or {}).get("delta_vs_scratch")
            rows.append((f"{name} Dice @{n}", c, a, d, True, 3))
    if "landmark_error_mm" in arm:
        rows.append(
            (
                "landmark error mm",  # mean over landmarks
                ctrl.get("landmark_error_mm"),
                arm["landmark_error_mm"],
                arm["landmark_error_mm"].get("delta_vs_scratch"),
                False,
                1,
            )
        )

    def v(ms: Any, digits: int) -> str:
        x = (ms or {}).get("mean", math.nan)
        return f"{x:.{digits}f}" if math.isfinite(x) else "-"

    lines = [f"{'':20s}{'random init':>12s}{method:>12s}   {'difference [95 % interval]':<28s}"]
    for label, c, a, d, hib, digits in rows:
        ver = verdict(d, hib)
        mark = ver if ver in ("helps", "hurts") else ""
        lines.append(f"{label:20s}{v(c, digits):>12s}{v(a, digits):>12s}   {fmt_delta(d, digits):<28s}{mark}")
    base = (ctrl.get("landmark_baselines_mm") or {}).get("same_voxel")
    if base and math.isfinite(base.get("mean", math.nan)):
        lines.append(f"(landmark error without learning, same voxel index: {base['mean']:.1f} mm)")
    helps = [r[0] for r in rows if verdict(r[3], r[4]) == "helps"]
    hurts = [r[0] for r in rows if verdict(r[3], r[4]) == "hurts"]
    n_test = results["spec"]["n_test"]
    if helps or hurts:
        said = [f"helps {', '.join(helps)}"] if helps else []
        said += [f"hurts {', '.join(hurts)}"] if hurts else []
        rest = len(rows) - len(helps) - len(hurts)
        text = (
            f"Reading: pretraining with {method} {'; '.join(said)} (95 % intervals over {n_test} held-out "
            f"volumes exclude 0); {rest} other difference{'s are' if rest != 1 else ' is'} not clear."
        )
    else:
        text = (
            f"Reading: no difference between {method} and the random-init control is clear (every 95 % "
            f"interval over {n_test} held-out volumes contains 0)."
        )
    return [*lines, "", text]


def run_quickstart(
    out_dir: str | Path,
    seed: int = 0,
    method: str | None = None,
    fast: bool = False,
    print_table: bool = True,
) -> dict[str, Any]:
    """Run the quickstart into ``out_dir``; -> the results dict (also ``out_dir/results.json``)."""
    from anatssl.bench.runner import run_suite

    out = Path(out_dir)
    method = method or default_method()
    results = run_suite(quickstart_suite(method, fast, seed), out)
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "results.md", report / "results.md")
    for png in (out / "plots").glob("*.png"):
        shutil.copy(png, report / png.name)
    if print_table:  # plain print: a table must not be re-wrapped to the terminal's width
        print(f"anatssl quickstart: {results['description']}\n")
        print("\n".join(quickstart_table(results)))
        cost = results["cost"]
        print(f"\n{cost['cpu_seconds'] / 60:.1f} CPU-minutes; report in {report}")
    return results
