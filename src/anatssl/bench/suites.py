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
    """Synthetic dataset: ``n`` subjects, ``size`` grid, ``seed`` (``anatssl synth`` arguments); with
    ``kind: mri-brain`` the warped MNI152 brains of ``anatssl synth --kind mri-brain`` (``size`` and
    ``spacing`` optional), written by :func:`anatssl.bench.sam_arm.suite_data`."""
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
    dense: tuple[int, ...] = ()
    """Labelled-volume counts of the frozen-encoder dense probe and label transfer (bench/dense.py) for
    every arm and the random-init control (``scratch``), every seed; () = no dense cells."""
    dense_overrides: tuple[str, ...] = ()
    """Overrides of the dense evaluation (``dense.*``, on top of ``shared``)."""
    budget: tuple[float, ...] = ()
    """Fractions of the pretraining steps at which the dense evaluation is repeated (the
    pretraining-budget curve); 0 is the random-init control and 1 the finished run, so only the
    fractions between them cost cells (the pretraining keeps those checkpoints)."""
    preset: str = "tiny"
    """Pretraining preset of every method (``configs/pretrain/<method>_<preset>.yaml``)."""
    finetune_preset: str = "tiny"
    """Fine-tuning and dense-evaluation preset (``configs/finetune/segmentation_<preset>.yaml``)."""
    budget_dense: tuple[int, ...] = (1,)
    """Labelled counts scored at the budget curve's intermediate checkpoints (its cheap end: pretraining
    should matter most with one labelled volume)."""
    finetune_seeds: tuple[int, ...] | None = None
    """Seeds of the fine-tuning cells (None: ``seeds``); fine-tuning is the expensive cell."""
    sam: tuple[str, ...] | None = None
    """Overrides of a SAM arm (on SAM's ``preset``), or None for none: per seed, SAM is pretrained on the
    volumes outside the held-out ``n_test`` and matches their landmarks; scored beside the learning-free
    baselines and the random-init SAM of the same seed (:mod:`anatssl.bench.sam_arm`)."""

    @property
    def pretrain_steps(self) -> int:
        """``train.max_steps`` of the shared pretraining budget (``pretrain`` overrides)."""
        for o in self.pretrain:
            if o.startswith("train.max_steps="):
                return int(o.split("=", 1)[1])
        raise ConfigError(f"suite {self.name!r}: its pretrain overrides set no train.max_steps")


SSL_ARMS = ("swinssl", "simmim", "s2dc", "alice", "voco", "modelsgenesis")
"""Every pretraining method of the project that trains the shared backbone (SAM trains its own
embedding network; it enters through Alice's stage 0)."""

PROBE_SPLIT = ("split.n_val=2",)
"""The split of ``synthetic-probe``: 6 test (``n_test``), 2 validation (as the CPU fine-tuning recipe),
a pool of 8 labelled volumes; fine-tuning and dense evaluation share it, so both use the same N."""

CPU_RECIPE = (*PROBE_SPLIT, "train.max_steps=400")
"""On top of the CPU fine-tuning recipe of issue 13, item 1 (``finetune_preset="cpu"``:
configs/finetune/segmentation_cpu.yaml: class-balanced 32^3 crops, batch Dice + CE with class weights,
no flips or intensity shift, validation-selected): the suite's split, and 400 of its 800 steps to fit
the suite's budget."""

SMALL_CROPS: dict[str, tuple[str, ...]] = {
    # batch 2: at batch 1 swinssl's NT-Xent has no negatives and is identically 0 (its own warning)
    "swinssl": ("swinssl.crop_size=[32,32,32]", "train.batch_size=2"),
    "simmim": ("simmim.crop_size=[32,32,32]", "simmim.mask_patch=8"),
    "s2dc": ("s2dc.crop=32", "s2dc.token_stage=3"),
    "alice": ("alice.crop_size=32", "alice.sam_steps=300", "alice.casa_target=teacher_encoder"),
    # a 2 x 2 grid of 32^3 base crops (region 64 x 64 x 32) and 2 random crops of the same region
    "voco": ("voco.grid=2", "voco.crop_size=[32,32,32]"),
    "modelsgenesis": ("modelsgenesis.crop_size=[32,32,32]",),
}
"""32^3 crops for 64^3 volumes (S2DC: a 2 x 2 slab of 32^3 crops, tokens of the stride-16 stage, 2^3 per
crop; SimMIM: 8^3 mask blocks, 4^3 per crop; Alice: the recommended CASA target, docs/methods/alice.md,
and a 300-step SAM for its pairs; VoCo: a 2 x 2 grid of base crops; Models Genesis: 32^3 sub-volumes)."""

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
    "synthetic-probe": Suite(
        name="synthetic-probe",
        description="the CPU suite that can see an effect: the conv backbone (feature_size 12) "
        "pretrained 1,200 steps (batch 1, 32^3 crops; S2DC a 2 x 2 slab of 32^3; Alice's SAM 300 steps "
        "first) by every method on 16 synthetic torsos (64^3, 6 mm), seeds 0 and 1; the frozen encoders and "
        "the random-init control of each seed scored by a linear probe and by label transfer with 1, 2 and "
        "4 labelled volumes on 6 held-out volumes, and by landmark matching, also at 25 % and 50 % of the "
        "pretraining; fine-tuning with the CPU recipe (segmentation_cpu, 400 steps of 32^3 class-balanced "
        "crops, best of 2 validation volumes) with 1 and all 8 labelled volumes, seed 0",
        methods=SSL_ARMS,
        seeds=(0, 1),
        labeled=(1, 8),
        data={"n": 16, "size": 64, "seed": 0},
        shared=("model.backbone=conv", "model.feature_size=12", "data.hu_window=[-1000,1000]"),
        pretrain=(
            "train.max_steps=1200",
            "train.batch_size=1",
            "train.log_every=10",
            "optim.warmup_steps=50",
            # fp32: this machine's CPU (AMD EPYC, AVX2) has neither AMX-BF16 nor AVX512-BF16
            # (torch.ops.mkldnn._is_mkldnn_bf16_supported() is False); an S2DC step measured 0.39-0.50 s
            # in fp32 and 4.4-5.3 s in bf16 here, interleaved. Add train.amp=bf16 on a CPU that has them.
        ),
        finetune=CPU_RECIPE,
        n_test=6,
        method_overrides=SMALL_CROPS,
        correspondence=False,  # landmarks are matched by the dense cells, with the multi-scale features
        correspondence_subjects=6,
        dense=(1, 2, 4),
        dense_overrides=PROBE_SPLIT,
        budget=(0.0, 0.25, 0.5, 1.0),
        finetune_seeds=(0,),
        finetune_preset="cpu",
    ),
    "gpu-probe": Suite(
        name="gpu-probe",
        description="the GPU suite, the same protocol at paper-like scale: the swin backbone "
        "(feature_size 48, base presets, bf16) pretrained 4,000 steps by every method (Alice's SAM 4,000 "
        "steps first) on 64 synthetic torsos (96^3, 4 mm), seeds 0-2; probe and label transfer with 1, 2 "
        "and 4 labelled volumes on 12 held-out volumes, landmarks, the budget curve at 25 % and 50 %; "
        "fine-tuning (base preset, 96^3 crops, 3,000 steps, best of 8 validation volumes) with 1, 2 and all "
        "44 labelled volumes, seed 0. About a day on one GPU (an estimate, not measured); runs as is where "
        "CUDA is present",
        methods=SSL_ARMS,
        seeds=(0, 1, 2),
        labeled=(1, 2, 44),
        data={"n": 64, "size": 96, "seed": 0},
        # one grid and one network for every arm: no respacing (the base presets resample to 1.5 x 1.5 x 2
        # mm, S2DC's does not) and no drop path (Alice's preset has 0.1, which its fine-tuning would inherit)
        shared=(
            "model.backbone=swin",
            "model.feature_size=48",
            "model.drop_path_rate=0.0",
            "data.hu_window=[-1000,1000]",
            "data.spacing=null",
        ),
        pretrain=("train.max_steps=4000", "train.log_every=50", "train.amp=bf16"),
        finetune=(
            "split.n_val=8",
            "train.max_steps=3000",
            "train.val_every=250",
            "train.select=best",
            "segmentation.roi_size=[96,96,96]",
            "segmentation.crop=classes",
            "segmentation.flips=false",
        ),
        n_test=12,
        correspondence=False,  # landmarks are matched by the dense cells
        correspondence_subjects=12,
        dense=(1, 2, 4),
        dense_overrides=("split.n_val=8",),
        budget=(0.0, 0.25, 0.5, 1.0),
        preset="base",
        finetune_preset="base",
        method_overrides={"alice": ("alice.casa_target=teacher_encoder", "alice.sam_steps=4000")},
        finetune_seeds=(0,),
    ),
}

SAM_MRI = (
    "data.modality=mri",
    "data.spacing=[4,4,4]",
    "sam.radius_mm=10",
    "sam.coarse_radius_mm=25",
    "sam.mining_score=combined",
    "train.max_steps=660",
)
"""SAM's tiny preset on brain MRI = the ``mri_tiny`` preset (the same resolved config): 4 mm (the brain is
~35 x 44 x 33 voxels; 32^3 crops, 128 mm, hold most of it), exclusion radii scaled down with the anatomy
(10 mm fine, 25 mm coarse instead of the torso's 24 / 60), hard negatives mined with the combined fine +
coarse score, 660 steps: about 14 CPU-minutes on one thread (docs/results/real-mri.md)."""

SUITES["real-mri"] = Suite(
    name="real-mri",
    description="real MRI anatomy (optional: pip install -e '.[mri]' and apt-get install mricron-data): "
    "32 copies of the MNI152 T1 template (nilearn) under known random affine + elastic warps and MRI-like "
    "intensity changes (64 x 76 x 64 at 3 mm), Harvard-Oxford cortical (left/right) + JHU white-matter "
    "labels (144) and their centroids as landmarks; SAM (the mri_tiny preset: 4 mm, 660 steps, ~14 "
    "CPU-minutes) trained on the 24 non-held-out volumes matches the landmarks of 8 held-out ones against "
    "the same-voxel guess and its random init; the conv backbone (feature_size 12) pretrained 600 steps by "
    "S2DC and SimMIM, frozen-probed and label-transferred with 1, 2 and 4 labelled volumes against its "
    "random init, seeds 0 and 1; fine-tuned with the CPU recipe (400 steps) with 1 and 4 labelled volumes "
    "against scratch, seed 0",
    methods=("s2dc", "simmim"),
    seeds=(0, 1),
    finetune_seeds=(0,),
    labeled=(1, 4),
    data={"kind": "mri-brain", "n": 32, "seed": 0},
    shared=("model.backbone=conv", "model.feature_size=12", "data.modality=mri", "data.spacing=[4,4,4]"),
    pretrain=(
        "train.max_steps=600",
        "train.batch_size=1",
        "train.log_every=10",
        "optim.warmup_steps=50",
    ),
    finetune=CPU_RECIPE,
    n_test=8,
    method_overrides={k: SMALL_CROPS[k] for k in ("s2dc", "simmim")},
    correspondence=False,  # landmarks are matched by the dense cells and by the SAM arm
    correspondence_subjects=8,
    dense=(1, 2, 4),
    dense_overrides=PROBE_SPLIT,
    finetune_preset="cpu",
    sam=SAM_MRI,
)

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
