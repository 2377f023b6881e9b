"""The SAM arm of a suite (``Suite.sam``) and the data of suites that are not torso phantoms.

Per seed, three cells in the suite's cell store (``DIR/cells``), resumable like the others:

* ``pretrain-sam-s{seed}``: SAM pretrained on the volumes outside the held-out split (the first
  ``n_test`` of the fixed shuffle, as every other cell's test set), so its landmarks are matched on
  subjects it never saw;
* ``correspondence-sam-s{seed}``: :func:`anatssl.bench.runner.correspondence_cell` (every landmark of
  each held-out subject matched into every other one, with the same-voxel and random-foreground
  baselines and their paired bootstrap intervals);
* ``correspondence-sam_init-s{seed}``: the same with the random-init SAM of that seed (the weights the
  pretraining started from): the control that says what training added.

``DIR/sam.json`` and ``DIR/sam.md`` tabulate them with the ratio of SAM's mean radial error to the
same-voxel guess (the goal of issue 14: at most 0.5).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from anatssl.bench.suites import Suite


def suite_data(suite: Suite, out: Path) -> Path:
    """The suite's dataset in ``out/data`` (written once): ``anatssl synth`` with the suite's ``data``
    arguments, of its ``kind`` (``torso``, the default, or ``mri-brain``)."""
    data = out / "data"
    if (data / "dataset.json").is_file():
        return data
    args = dict(suite.data)
    kind = args.pop("kind", "torso")
    if kind == "mri-brain":
        from anatssl.data.synthetic.mri_brain import write_brain_dataset

        write_brain_dataset(data, **args)
    else:
        from anatssl.bench.runner import make_synthetic_data

        make_synthetic_data(data, **args)
    return data


def write_init_run(method: str, overrides: Sequence[str], out: Path, preset: str = "tiny") -> Path:
    """A run directory (config.yaml + checkpoints/last.pt at step 0) holding ``method``'s random init
    for ``overrides``, seeded by their ``seed`` as the pretraining seeds its model: the control."""
    import torch

    from anatssl.config import pretrain_config_to_dict, save_yaml
    from anatssl.engine.checkpoint import FORMAT, VERSION, atomic_torch_save
    from anatssl.methods import build_method
    from anatssl.runs import load_pretrain_config

    cfg = load_pretrain_config(method, preset, None, list(overrides))
    torch.manual_seed(cfg.seed)
    model = build_method(cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(pretrain_config_to_dict(cfg), out / "config.yaml")
    record = {
        "format": FORMAT,
        "version": VERSION,
        "step": 0,
        "method": method,
        "config": pretrain_config_to_dict(cfg),
        "model": model.state_dict(),
    }
    atomic_torch_save(record, out / "checkpoints" / "last.pt")
    return out


def pretraining_split(data: Path, suite: Suite, out: Path, data_format: str | None = None) -> Path:
    """A dataset.json (``out``) listing the volumes outside the suite's held-out split of ``data`` (read
    as the layout ``data_format``; None: detected)."""
    from anatssl.config.finetune import SplitConfig
    from anatssl.downstream.labelled import read_labelled_dataset, split_cases

    cases, _ = read_labelled_dataset(data, fmt=data_format)
    _, test = split_cases(cases, SplitConfig(n_test=suite.n_test))
    held_out = {c.image.resolve() for c in test}
    keep = [{"image": str(c.image.resolve())} for c in cases if c.image.resolve() not in held_out]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"name": f"{suite.name}-pretraining", "training": keep}, indent=1))
    return out


def sam_cells(suite: Suite, data: Path, out: Path, data_format: str | None = None) -> list[tuple[str, Any]]:
    """Every cell of the SAM arm, in order (pretraining before the matching that reads it); ``data``
    is read as the layout ``data_format`` (None: detected)."""
    from anatssl.bench.runner import pretrain_run

    if suite.sam is None:
        return []
    train = pretraining_split(data, suite, out / "sam" / "pretraining.json", data_format)
    cells: list[tuple[str, Any]] = []
    for seed in suite.seeds:
        overrides = [*suite.sam, f"seed={seed}", "train.progress=false", "train.tensorboard=false"]
        run_dir = out / "pretrain" / f"sam_s{seed}"
        init_dir = out / "pretrain" / f"sam_init_s{seed}"
        cells += [
            (f"pretrain-sam-s{seed}", partial(pretrain_run, "sam", train, run_dir, overrides, suite.preset)),
            (
                f"correspondence-sam-s{seed}",
                partial(_match, str(run_dir), data, suite, out, f"sam_s{seed}", data_format),
            ),
            (
                f"correspondence-sam_init-s{seed}",
                partial(_match_init, overrides, init_dir, data, suite, out, seed, data_format),
            ),
            (
                f"correspondence-sam_prior-s{seed}",
                partial(_match, str(run_dir), data, suite, out, f"sam_prior_s{seed}", data_format, "affine"),
            ),
            (
                f"correspondence-sam_init_prior-s{seed}",
                partial(
                    _match, str(init_dir), data, suite, out, f"sam_init_prior_s{seed}", data_format, "affine"
                ),
            ),
        ]
    return cells


def _match(
    run: str,
    data: Path,
    suite: Suite,
    out: Path,
    name: str,
    data_format: str | None = None,
    prior: str | None = None,
) -> dict[str, Any]:
    from anatssl.bench.runner import correspondence_cell

    return correspondence_cell(run, data, suite, out / "correspondence" / name, data_format, prior)


def _match_init(
    overrides: Sequence[str],
    init_dir: Path,
    data: Path,
    suite: Suite,
    out: Path,
    seed: int,
    data_format: str | None = None,
) -> dict[str, Any]:
    write_init_run("sam", overrides, init_dir, suite.preset)
    return _match(str(init_dir), data, suite, out, f"sam_init_s{seed}", data_format)


ROWS = ("model", "same_voxel", "random_foreground")


def summarise_sam(suite: Suite, cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per seed: SAM and its random init (mean radial error, median, share within 10 mm), the
    baselines, SAM / same-voxel, and the paired intervals of ``vs_baselines``."""
    per_seed: dict[str, Any] = {}
    for seed in suite.seeds:
        sam = cells.get(f"correspondence-sam-s{seed}") or {}
        init = cells.get(f"correspondence-sam_init-s{seed}") or {}
        pre = cells.get(f"pretrain-sam-s{seed}") or {}
        with_prior = cells.get(f"correspondence-sam_prior-s{seed}") or {}
        init_prior = cells.get(f"correspondence-sam_init_prior-s{seed}") or {}
        if not sam.get("available"):
            continue
        rec: dict[str, Any] = {
            "sam": sam["model"],
            "sam_init": init.get("model"),
            "same_voxel": sam["same_voxel"],
            "random_foreground": sam["random_foreground"],
            "ratio_to_same_voxel": sam["model"]["mre_mm"] / sam["same_voxel"]["mre_mm"],
            "vs_baselines": sam.get("vs_baselines"),
            "init_vs_baselines": init.get("vs_baselines"),
            "subjects": sam.get("subjects"),
            "pretrain_cpu_seconds": pre.get("cpu_seconds"),
            "pretrain_steps": pre.get("steps"),
            # the affine consistency prior (matching.fit_affine_prior, window 20 mm)
            "sam_prior": with_prior.get("model"),
            "sam_init_prior": init_prior.get("model"),
            "affine_fit": with_prior.get("affine_fit"),
            "prior_vs_baselines": with_prior.get("vs_baselines"),
            "prior_inliers": (with_prior.get("prior") or {}).get("mean_inlier_fraction"),
        }
        if with_prior.get("model"):
            rec["prior_ratio_to_same_voxel"] = with_prior["model"]["mre_mm"] / sam["same_voxel"]["mre_mm"]
        per_seed[str(seed)] = rec
    return {"suite": suite.name, "overrides": list(suite.sam or ()), "seeds": per_seed}


def sam_markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"SAM arm of {summary['suite']} ({' '.join(summary['overrides'])}): landmark matching across the "
        "held-out subjects",
        "",
        "| seed | predictor | MRE mm | median mm | within 10 mm | n |",
        "|---|---|---|---|---|---|",
    ]
    for seed, rec in summary["seeds"].items():
        for name, key in (
            ("SAM", "sam"),
            ("SAM, random init", "sam_init"),
            ("SAM + affine prior (20 mm window)", "sam_prior"),
            ("SAM random init + affine prior", "sam_init_prior"),
            ("the fitted affine alone", "affine_fit"),
            ("same voxel", "same_voxel"),
            ("random body voxel", "random_foreground"),
        ):
            m = rec.get(key)
            if m:
                lines.append(
                    f"| {seed} | {name} | {m['mre_mm']:.2f} | {m['median_mm']:.2f} | "
                    f"{100 * m['within_10mm']:.1f} % | {m['n']} |"
                )
        d = (rec.get("vs_baselines") or {}).get("same_voxel")
        lines.append("")
        lines.append(
            f"seed {seed}: SAM / same voxel = {rec['ratio_to_same_voxel']:.2f}"
            + (
                f"; SAM closer in {100 * d['model_closer']:.1f} % of the matches, mean difference "
                f"{d['mean_difference_mm']:+.2f} mm, 95 % interval [{d['ci95_mm'][0]:+.2f}, "
                f"{d['ci95_mm'][1]:+.2f}] (bootstrap over subjects)"
                if d
                else ""
            )
        )
        dp = (rec.get("prior_vs_baselines") or {}).get("same_voxel")
        if dp:
            ratio, (lo, hi) = rec["prior_ratio_to_same_voxel"], dp["ci95_mm"]
            inl = 100 * (rec.get("prior_inliers") or 0)
            lines.append(
                f"seed {seed}, with the affine prior: SAM / same voxel = {ratio:.2f}; mean difference "
                f"{dp['mean_difference_mm']:+.2f} mm, 95 % interval [{lo:+.2f}, {hi:+.2f}]; {inl:.0f} % of "
                "the fitting matches within 10 mm of the affine"
            )
    return "\n".join(lines) + "\n"


def run_sam_arm(suite: Suite, data: Path, out: Path, data_format: str | None = None) -> dict[str, Any]:
    """Run (or resume) the SAM arm's cells on ``data`` (read as the layout ``data_format``; None:
    detected); write ``out/sam.json`` and ``out/sam.md``."""
    from anatssl.bench.runner import CellStore

    store = CellStore(out)
    cells = {name: store.run(name, fn) for name, fn in sam_cells(suite, data, out, data_format)}
    summary = summarise_sam(suite, cells)
    (out / "sam.json").write_text(json.dumps(summary, indent=2))
    (out / "sam.md").write_text(sam_markdown(summary))
    return summary
