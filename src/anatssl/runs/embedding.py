"""Runs -> embeddings: a SAM run's network, the embedding pipeline (``anatssl embed``), any run's embedder.

:mod:`anatssl.anatomy` holds SAM's network, the cache format, matching and pairing and never opens a
run folder; this module opens the run (:class:`~anatssl.runs.rundir.RunDir`) and hands them networks:

* :func:`load_sam` -- a SAM run -> (eval-mode :class:`~anatssl.anatomy.sam_model.SAMNet`, config,
  weights hash);
* :func:`embed_dataset` -- ``anatssl embed``: every scan of a dataset into an embedding cache,
  preprocessed with the SAM run's own data preset; fresh entries are skipped;
* :func:`embedding_cache` -- an :class:`~anatssl.anatomy.cache.EmbeddingCache` that also notices when
  the recorded SAM run's weights changed since the cache was made;
* :func:`model_embedder` -- any pretraining run -> a volume embedder for correspondence (SAM: its
  fine + coarse maps; other methods: the backbone's dense features).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from anatssl.anatomy.cache import EmbeddingCache, embed_volume, load_preprocessed, preset_hash, progress_bar
from anatssl.anatomy.correspondence import dense_feature_embedder
from anatssl.anatomy.embedding import EmbeddingMap
from anatssl.anatomy.sam_model import SAMNet, weights_hash
from anatssl.config.schema import PretrainConfig
from anatssl.data.layouts import discover
from anatssl.data.manifest import DataItem
from anatssl.data.volume import Volume
from anatssl.errors import CheckpointError, DataError
from anatssl.runs.rundir import RunDir


def load_sam(run: str | Path, device: str | torch.device = "cpu") -> tuple[SAMNet, PretrainConfig, str]:
    """A SAM run directory (or its checkpoint file) -> (eval-mode SAMNet, resolved config, weights hash).

    Raises :class:`CheckpointError` for a missing checkpoint, a run of another method, or weights that do
    not fit the configured network.
    """
    rd = RunDir(run)
    path = rd.checkpoint_path()
    ckpt = rd.load_checkpoint()
    if rd.method != "sam":
        raise CheckpointError(
            f"{run} is a {rd.method!r} run, not a SAM run; the anatomical embedding model is trained with "
            "`anatssl pretrain --method sam` (use that run's directory here)"
        )
    cfg = rd.config
    p = cfg.params
    net = SAMNet(cfg.model.in_channels, p.width, tuple(p.blocks), p.embed_dim, p.fpn_dim or None)
    state = {k[len("net.") :]: v for k, v in ckpt["model"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: weights do not fit the SAM network of its config: {str(e).splitlines()[0]}"
        ) from e
    net.to(device).eval()
    return net, cfg, weights_hash(state)


def sam_weights_hash(run: str | Path) -> str:
    """The weights hash of a SAM run's last checkpoint (what an embedding cache records)."""
    return load_sam(run)[2]


def embedding_cache(root: str | Path, check_model: bool = True) -> EmbeddingCache:
    """The cache at ``root``; ``check_model``: refuse entries once the SAM run's weights changed."""
    return EmbeddingCache(root, model_hash=sam_weights_hash if check_model else None)


def check_sam_channels(items: Sequence[DataItem], in_channels: int, run: str | Path) -> None:
    """The dataset's channel count (channel files per case, or the first 4D headers) must be the SAM
    run's ``model.in_channels``; else a :class:`DataError` naming both and what to train instead."""
    from anatssl.data.source import check_channel_files

    try:
        check_channel_files(items, in_channels)
    except DataError as e:
        raise DataError(
            f"the SAM run {run} embeds {in_channels} channel(s) (its model.in_channels) and cannot embed "
            f"this dataset: {str(e).split('; set ')[0]}; train SAM on this data with the dataset's "
            "channel count (`anatssl pretrain --method sam ... model.in_channels=C`; Alice's stage 0 does "
            "so with the Alice run's model.in_channels)"
        ) from e


def embed_dataset(
    run: str | Path,
    data: str | Path | Sequence[DataItem],
    out: str | Path,
    device: str | torch.device = "cpu",
    window: int | None = 128,
    progress: bool = True,
) -> dict[str, int]:
    """``anatssl embed``: embed every scan of ``data`` with the SAM ``run`` into the cache ``out``.

    ``data``: a dataset path or its discovered items. Fresh entries are skipped, stale ones
    recomputed. Returns ``{"computed": n, "skipped": m}``.

    Every channel of a case is embedded (stacked ``(C, X, Y, Z)``, as the SAM run was trained: its
    network's first convolution takes ``model.in_channels`` channels); a dataset with another channel
    count than the run's is refused before anything is decoded, saying how to train a SAM run that fits.
    """
    net, cfg, mhash = load_sam(run, device)
    items = discover(data) if isinstance(data, (str, Path)) else list(data)
    check_sam_channels(items, cfg.model.in_channels, run)
    cache = EmbeddingCache(out)
    phash = preset_hash(cfg.data)
    cache.write_manifest(str(run), mhash, cfg.data, net)
    todo = [it for it in items if cache.stale_reason(it, mhash, phash) is not None]
    with progress_bar(progress) as bar:
        task = bar.add_task("embedding", total=len(items), completed=len(items) - len(todo))
        for it in todo:
            vol = load_preprocessed(it, cfg.data, cfg.model.in_channels)
            emap = embed_volume(net, vol, window=window, device=device)
            cache.put(it, emap, mhash, phash)
            bar.advance(task)
    return {"computed": len(todo), "skipped": len(items) - len(todo)}


def model_embedder(
    run: str | Path, layer: str = "decoder"
) -> tuple[Callable[[Volume], EmbeddingMap], PretrainConfig]:
    """SAM run -> its fine/coarse embedder; any other run -> the backbone's dense features
    (:func:`~anatssl.anatomy.correspondence.dense_feature_embedder`). Also returns the run's config
    (its ``data`` section is the preprocessing the volumes need)."""
    rd = RunDir(run)
    if rd.method == "sam":
        net, cfg, _ = load_sam(run)
        return (lambda v: embed_volume(net, v)), cfg
    backbone = rd.build_method().encoder().eval()
    return dense_feature_embedder(backbone, layer), rd.config
