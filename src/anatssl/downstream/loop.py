"""The step-based fine-tuning loop shared by segmentation and classification.

AdamW with two parameter groups (tensors loaded from pretrained weights get ``optim.encoder_lr_mult``
times the lr, new ones the plain lr), the lr a function of the step (linear warm-up then cosine to
``min_lr``, the engine's ``warmup_cosine``), global-norm clipping, and one ``metrics.jsonl`` row per
logged step (step, loss, lr, seconds) through the engine's :class:`RunLogger`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anatssl.downstream.config import FinetuneConfig
from anatssl.engine.logger import RunLogger
from anatssl.engine.schedules import warmup_cosine
from anatssl.errors import TrainingError


def build_finetune_optimizer(
    net: nn.Module, cfg: FinetuneConfig, loaded: set[str], frozen_prefixes: tuple[str, ...] = ()
) -> torch.optim.AdamW:
    """AdamW over trainable parameters; ``loaded`` names (state-dict keys) get ``encoder_lr_mult``."""
    pre: list[nn.Parameter] = []
    new: list[nn.Parameter] = []
    for name, p in net.named_parameters():
        if frozen_prefixes and name.startswith(frozen_prefixes):
            p.requires_grad_(False)
            continue
        (pre if name in loaded else new).append(p)
    groups = []
    if pre:
        groups.append({"params": pre, "lr_mult": cfg.optim.encoder_lr_mult})
    if new:
        groups.append({"params": new, "lr_mult": 1.0})
    if not groups:
        raise TrainingError("no trainable parameters: everything is frozen")
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)


def lr_at(cfg: FinetuneConfig, step: int) -> float:
    warm = min(cfg.optim.warmup_steps, max(cfg.train.max_steps - 1, 0))
    return warmup_cosine(step, cfg.train.max_steps, cfg.optim.lr, cfg.optim.min_lr, warm)


def train_steps(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    batches: Iterator[Any],
    loss_fn: Callable[[Any], torch.Tensor],
    cfg: FinetuneConfig,
    out_dir: Path,
    description: str,
) -> list[dict[str, float]]:
    """Run ``cfg.train.max_steps`` optimizer steps; ``loss_fn(batch)`` returns the scalar loss."""
    net.train()
    history: list[dict[str, float]] = []
    params = [p for g in opt.param_groups for p in g["params"]]
    with RunLogger(
        out_dir,
        cfg.train.max_steps,
        0,
        tensorboard=False,
        progress=cfg.train.progress,
        description=description,
    ) as logger:
        for step in range(cfg.train.max_steps):
            t0 = time.perf_counter()
            lr = lr_at(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr * g["lr_mult"]
            loss = loss_fn(next(batches))
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(f"{description}: non-finite loss {value} at step {step}; lower optim.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
            opt.step()
            dt = time.perf_counter() - t0
            row = {"step": step, "loss": value, "lr": lr, "seconds": dt}
            history.append(row)
            if step % max(cfg.train.log_every, 1) == 0 or step == cfg.train.max_steps - 1:
                logger.log(row)
            logger.advance(step + 1, value, dt)
    return history


def cycle(loader: Any) -> Iterator[Any]:
    """Endless iteration over a DataLoader (a new shuffled epoch each pass)."""
    while True:
        yield from loader
