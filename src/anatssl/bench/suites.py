"""Benchmark suites: which methods, seeds, budgets and label counts a comparison runs.

A suite is a table entry, not code: every method of a suite pretrains the same backbone (``model``)
for the same number of steps and batch size on the same synthetic data, then every pretrained
encoder and a scratch baseline are fine-tuned with the same few-shot label counts, seeds and
fine-tuning budget, and scored on the same fixed held-out volumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from anatssl.errors import ConfigError


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    labeled: tuple[int, ...]
    """Numbers of labelled training volumes (few-shot points of the Dice-vs-labels curve)."""
    data: dict[str, Any]
    """Synthetic dataset: ``n`` subjects, ``size`` grid, ``seed`` (``anatssl synth`` arguments)."""
    shared: tuple[str, ...]
    """Overrides of every pretraining and every fine-tuning: the one backbone (``model.*``) and the one
    preprocessing (``data.*``) of the comparison. Without a shared ``data.hu_window`` each pretrained
    arm would be fine-tuned with its method's window (Alice's preset: [-125, 225] HU, the others'
    [-1000, 1000]) and scratch with the fine-tuning preset's, so the table would compare windows."""
    pretrain: tuple[str, ...]
    """Overrides every method gets on top of its ``tiny`` preset: the shared budget."""
    finetune: tuple[str, ...]
    """Overrides of the segmentation fine-tuning (``configs/finetune/segmentation_tiny.yaml``)."""
    n_test: int = 4
    method_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per-method settings that make the methods fit the shared crop (e.g. crop sizes)."""
    correspondence: bool = True
    """Landmark matching of the held-out volumes with each run's features (anatomy/correspondence.py)."""
    correspondence_subjects: int = 4
    """Held-out subjects used for matching (N (N-1) ordered pairs)."""


SUITES: dict[str, Suite] = {
    "smoke": Suite(
        name="smoke",
        description="every stage once at toy size (2 steps each, conv backbone): checks the pipeline, "
        "not the methods; a few minutes on a laptop CPU",
        methods=("swinssl", "simmim"),
        seeds=(0,),
        labeled=(2,),
        data={"n": 6, "size": 64, "seed": 0},
        shared=("model.backbone=conv", "model.feature_size=8", "data.hu_window=[-1000,1000]"),
        pretrain=("train.max_steps=2", "train.batch_size=1", "train.ckpt_every=1000", "train.log_every=1"),
        finetune=(
            "train.max_steps=2",
            "train.batch_size=1",
            "segmentation.samples_per_volume=1",
            "segmentation.roi_size=[64,64,64]",
            "segmentation.sw_batch_size=1",
            "segmentation.overlay_cases=1",
            "optim.warmup_steps=0",
        ),
        n_test=2,
        method_overrides={
            "swinssl": ("swinssl.crop_size=[64,64,64]",),
            "simmim": ("simmim.crop_size=[64,64,64]",),
        },
        correspondence_subjects=2,
    ),
    "synthetic-small": Suite(
        name="synthetic-small",
        description="the README comparison at CPU scale: the conv backbone (feature_size 12) pretrained 200 "
        "steps (batch 1, 64^3 crops, one HU window [-1000, 1000] for every method; Alice's SAM trained 1,100 "
        "steps first) per method on 16 synthetic torsos (96^3), fine-tuned 150 steps (two 64^3 crops per "
        "step, lr 1e-3) with 2 and 6 labelled volumes, seeds 0 and 1, scored on 4 held-out volumes",
        methods=("swinssl", "simmim", "s2dc", "alice"),
        seeds=(0, 1),
        labeled=(2, 6),
        data={"n": 16, "size": 96, "seed": 0},
        shared=("model.backbone=conv", "model.feature_size=12", "data.hu_window=[-1000,1000]"),
        pretrain=("train.max_steps=200", "train.batch_size=1", "train.ckpt_every=50", "train.log_every=2"),
        finetune=(
            "train.max_steps=150",
            "train.batch_size=1",
            "segmentation.samples_per_volume=2",
            "segmentation.roi_size=[64,64,64]",
            "optim.warmup_steps=10",
            "optim.lr=1e-3",
        ),
        n_test=4,
        correspondence_subjects=4,
        method_overrides={
            "swinssl": ("swinssl.crop_size=[64,64,64]",),
            "simmim": ("simmim.crop_size=[64,64,64]",),
            "alice": ("alice.sam_steps=1100",),  # SAM's full tiny preset (docs/methods/sam.md)
        },
    ),
}

SUITES["smoke-swin"] = replace(
    SUITES["smoke"],
    name="smoke-swin",
    description="the smoke suite on the swin backbone (feature_size 12, 64^3 crops) that every shipped "
    "pretraining preset trains: checks the pipeline of the default backbone (the other suites use conv "
    "for CPU speed); several minutes on a laptop CPU",
    shared=("model.backbone=swin", "model.feature_size=12", "data.hu_window=[-1000,1000]"),
)


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ConfigError(f"unknown benchmark suite {name!r}; available: {', '.join(sorted(SUITES))}")
    return SUITES[name]
