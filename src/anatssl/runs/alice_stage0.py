"""Alice's pre-step (stage 0): SAM embeddings of every training volume, and a start-up data check.

Jiang et al. (ICCV 2023) pair crops across patients with SAM (Yan et al., IEEE TMI 2022). Before Alice
trains, :func:`alice_stage0` makes sure a fresh SAM embedding covers every training volume, in this
order: ``--embeddings DIR`` (checked), ``alice.embeddings_dir`` (checked), ``--sam RUN`` (embed the data
with that SAM model into ``RUN_OUT/embeddings``), otherwise train SAM (``alice.sam_steps`` steps of
``sam_<alice.sam_preset>``) into ``RUN_OUT/sam`` (resumed if unfinished, reused if finished) and
embed. It sets ``alice.embeddings_dir`` in the config the trainer then saves. With ``pairing``
``random`` / ``same`` no embeddings are needed; the data check still runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from anatssl.anatomy.pairing import PairMiner, check_coverage
from anatssl.config.schema import PretrainConfig
from anatssl.engine.device import resolve_device
from anatssl.errors import DataError
from anatssl.runs.embedding import embed_dataset, embedding_cache
from anatssl.runs.prestep import PretrainContext
from anatssl.runs.resolve import load_pretrain_config
from anatssl.runs.rundir import RunDir

log = logging.getLogger("anatssl")


def check_alice_data(ctx: PretrainContext, embeddings_dir: str | None) -> None:
    """Start-up check of every training volume: a foreground to draw queries from and, for ``sam``
    pairing, a fresh embedding that covers it. Raises one DataError listing the scans at fault."""
    p = ctx.cfg.params
    src = ctx.validated_source()
    miner = PairMiner(p.similarity_threshold, p.max_tries, p.border_margin, p.foreground_threshold)
    cache = embedding_cache(embeddings_dir) if p.pairing == "sam" and embeddings_dir else None
    if cache is not None:
        cache.manifest()  # "not a SAM embedding cache" before anything else
    problems: list[str] = []
    for i in range(len(src)):
        vol = src.load(i)
        try:
            fg = miner.foreground(vol)
            if cache is not None:  # the item: its source hash covers every channel file
                check_coverage(vol, cache.get(src.items[i]), fg)
        except DataError as e:
            problems.append(str(e))
    if p.pairing != "same" and len(src) < 2:
        problems.append(f"alice.pairing={p.pairing} needs at least 2 training volumes, got {len(src)}")
    if problems:
        more = f"\n(and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DataError(
            f"Alice cannot start: {len(problems)} problem(s) with the training data:\n- "
            + "\n- ".join(problems[:5])
            + more
        )


def sam_stage0_config(cfg: PretrainConfig) -> PretrainConfig:
    """What ``anatssl pretrain --method sam --preset <alice.sam_preset>`` resolves, for ``alice.sam_steps``
    steps, with the Alice run's seed, device, logging, workers, channels and cache folder. An MRI run
    (``data.modality=mri``) also passes its modality and MRI settings: SAM's presets are CT, and an MRI
    read through their HU window would be clipped to nonsense. CT keeps the SAM preset's own window
    (and every SAM preset keeps its own spacing)."""
    p = cfg.params
    overrides = [
        f"train.max_steps={p.sam_steps}",
        f"seed={cfg.seed}",
        f"train.device={cfg.train.device}",
        f"train.progress={str(cfg.train.progress).lower()}",
        f"train.tensorboard={str(cfg.train.tensorboard).lower()}",
        f"data.num_workers={cfg.data.num_workers}",
        f"model.in_channels={cfg.model.in_channels}",
    ]
    if cfg.data.cache_dir:
        overrides.append(f"data.cache_dir={cfg.data.cache_dir}")
    if cfg.data.modality == "mri":
        d = cfg.data
        overrides += [
            "data.modality=mri",
            f"data.mri_percentiles=[{d.mri_percentiles[0]},{d.mri_percentiles[1]}]",
            f"data.mri_gamma=[{d.mri_gamma[0]},{d.mri_gamma[1]}]",
            f"data.mri_bias_field={d.mri_bias_field}",
            f"data.mri_contrast=[{d.mri_contrast[0]},{d.mri_contrast[1]}]",
        ]
    return load_pretrain_config("sam", p.sam_preset, None, overrides)


def train_sam_stage0(ctx: PretrainContext, sam_run: Path) -> None:
    """Train (or resume) SAM into ``sam_run`` on the run's scans, preprocessed as the SAM preset says."""
    from anatssl.engine.trainer import pretrain

    sam_cfg = sam_stage0_config(ctx.cfg)
    resume = RunDir(sam_run).has_checkpoint()
    pretrain(sam_cfg, ctx.make_source(sam_cfg, sam_run), sam_run, resume=resume)


def alice_stage0(ctx: PretrainContext) -> None:
    """The pre-step (see the module docstring); sets ``ctx.cfg.params.embeddings_dir``."""
    p = ctx.cfg.params
    embeddings = ctx.options.get("embeddings")
    sam_run = ctx.options.get("sam_run")
    if p.pairing != "sam":
        if embeddings or sam_run:
            log.info("alice.pairing=%s: SAM embeddings are not used", p.pairing)
        check_alice_data(ctx, None)
        p.embeddings_dir = p.embeddings_dir or None
        return
    if embeddings or p.embeddings_dir:
        cache_dir = str(Path(embeddings or p.embeddings_dir).resolve())
        check_alice_data(ctx, cache_dir)
        p.embeddings_dir = cache_dir
        return
    cache_dir = str((ctx.out_dir / "embeddings").resolve())
    if sam_run is None:
        sam_run = ctx.out_dir / "sam"
        if RunDir(sam_run).has_checkpoint():
            log.info("alice stage 0: reusing the SAM model in %s", sam_run)
        else:
            log.info(
                "alice stage 0: no --embeddings / --sam given, training SAM (%d steps) into %s",
                p.sam_steps,
                sam_run,
            )
            train_sam_stage0(ctx, Path(sam_run))
    log.info("alice: caching the SAM embeddings of %s in %s", ctx.data, cache_dir)
    stats = embed_dataset(
        sam_run,
        ctx.items,
        cache_dir,
        device=resolve_device(ctx.cfg.train.device),
        progress=ctx.cfg.train.progress,
    )
    log.info(
        "alice: embedded %d scan(s) (%d already cached) into %s",
        stats["computed"],
        stats["skipped"],
        cache_dir,
    )
    check_alice_data(ctx, cache_dir)
    p.embeddings_dir = cache_dir


def prepare_alice_run(
    cfg: PretrainConfig,
    data: str | Path,
    out_dir: str | Path,
    embeddings: str | None = None,
    sam_run: str | None = None,
    data_format: str | None = None,
) -> str:
    """:func:`alice_stage0` on its own (what ``run_pretraining`` does before training Alice); returns
    the embeddings folder it set (``""`` when the pairing needs none). ``data_format``: the layout of
    ``data`` (:data:`anatssl.data.layouts.KNOWN_FORMATS`; None: detected), as ``--format``."""
    from anatssl.data.layouts import discover

    items = discover(data, data_format)
    options = {"embeddings": embeddings, "sam_run": sam_run}
    ctx = PretrainContext(cfg, data, Path(out_dir), items, options=options)
    alice_stage0(ctx)
    return cfg.params.embeddings_dir or ""
