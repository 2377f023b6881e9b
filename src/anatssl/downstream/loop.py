"""The step-based fine-tuning loop shared by segmentation and classification.

AdamW with two parameter groups (tensors loaded from pretrained weights get ``optim.encoder_lr_mult``
times the lr, new ones the plain lr), the lr a function of the step (linear warm-up then cosine to
``min_lr``, the engine's ``warmup_cosine``), global-norm clipping, and one ``metrics.jsonl`` row per
logged step (step, loss, lr, seconds) through the engine's :class:`RunLogger`. Steps are numbered as
in pretraining: row ``step`` k is the state after k optimizer steps (1 .. ``train.max_steps``), logged
at multiples of ``train.log_every`` and at the last step; its ``lr`` is the one that step used.

Validation (:class:`Validator`): at steps ``val_every``, ``2*val_every``, ... and the last a callback
scores the validation volumes; the row of that step gets ``val_dice`` (measured after the step's
update) and is always logged. With ``train.select=best`` the weights of the best validation score
(the earliest on ties) are kept and restored at the end; with ``last`` the final weights stay.
fp16 (CUDA) steps go through a ``GradScaler``; the autocast region itself is the loss function's
(the forward pass), so the loss is reduced in fp32.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anatssl.downstream.config import FinetuneConfig
from anatssl.engine import distributed as D
from anatssl.engine.logger import RunLogger
from anatssl.engine.schedules import warmup_cosine
from anatssl.errors import TrainingError
from anatssl.models.boundary import plain

log = logging.getLogger("anatssl")


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


@dataclass
class Validator:
    """Scores the validation set during training and keeps the best weights when asked to.

    ``score()`` -> mean validation Dice (NaN counts as the worst), or ``(mean, details)`` where
    ``details`` (e.g. Dice per structure) is kept in the curve. ``every``: steps between scores.
    """

    score: Callable[[], float | tuple[float, dict[str, Any]]]
    every: int
    keep_best: bool = False
    curve: list[dict[str, Any]] = field(default_factory=list)
    best_step: int | None = None
    best_value: float = -math.inf
    best_state: dict[str, torch.Tensor] | None = None

    def due(self, step: int, max_steps: int) -> bool:
        """Whether to score after optimizer step ``step`` (1-based, as logged)."""
        return self.every > 0 and (step % self.every == 0 or step == max_steps)

    def __call__(self, net: nn.Module, step: int) -> float:
        t0 = time.perf_counter()
        scored = self.score()
        value, details = (float(scored[0]), scored[1]) if isinstance(scored, tuple) else (float(scored), {})
        net.train()
        self.curve.append({"step": step, "val_dice": value, "seconds": time.perf_counter() - t0, **details})
        v = value if math.isfinite(value) else -math.inf
        if self.best_step is None or v > self.best_value:
            self.best_step, self.best_value = step, v
            if self.keep_best:
                self.best_state = {k: t.detach().clone() for k, t in net.state_dict().items()}
        return value

    def restore_best(self, net: nn.Module) -> None:
        if self.best_state is not None:
            net.load_state_dict(self.best_state)

    def summary(self, select: str, last_step: int) -> dict[str, Any]:
        """metrics.json's ``selection``: the rule, the step whose weights were evaluated, its score."""
        last = self.curve[-1]["val_dice"] if self.curve else math.nan
        if select == "best" and self.best_step is not None:
            return {
                "rule": "best",
                "step": self.best_step,
                "val_dice": self.best_value,
                "last_val_dice": last,
            }
        return {"rule": "last", "step": last_step, "val_dice": last, "best_step": self.best_step}


def train_steps(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    batches: Iterator[Any],
    loss_fn: Callable[[Any], torch.Tensor],
    cfg: FinetuneConfig,
    out_dir: Path,
    description: str,
    validator: Validator | None = None,
    amp: str = "none",
) -> list[dict[str, Any]]:
    """Run ``cfg.train.max_steps`` optimizer steps; ``loss_fn(batch)`` returns the scalar loss.

    ``validator``: scored when due (its value in the step's row as ``val_dice``); with
    ``keep_best`` its best weights are loaded into ``net`` at the end. ``amp``: the resolved
    precision (``fp16`` adds gradient scaling).

    Under DDP (``loss_fn`` runs the DDP-wrapped ``net``): only rank 0 writes ``metrics.jsonl``;
    after the last step the last row gets ``rank_weight_sums`` (every rank's parameter sum, before
    any best-weights restore), and a warning if the ranks differ, which DDP should never let happen.
    """
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    net.train()
    history: list[dict[str, Any]] = []
    params = [p for g in opt.param_groups for p in g["params"]]
    with RunLogger(
        out_dir,
        cfg.train.max_steps,
        0,
        enabled=D.is_main(),
        tensorboard=False,
        progress=cfg.train.progress,
        description=description,
    ) as logger:
        for index in range(cfg.train.max_steps):
            step = index + 1  # optimizer steps done after this one, as pretraining numbers them
            t0 = time.perf_counter()
            lr = lr_at(cfg, index)
            for g in opt.param_groups:
                g["lr"] = lr * g["lr_mult"]
            loss = loss_fn(plain(next(batches)))  # networks take plain tensors, not MetaTensors
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(f"{description}: non-finite loss {value} at step {step}; lower optim.lr")
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if cfg.optim.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            dt = time.perf_counter() - t0
            row = {"step": step, "loss": value, "lr": lr, "seconds": dt}
            due = validator is not None and validator.due(step, cfg.train.max_steps)
            if validator is not None and due:
                row["val_dice"] = validator(net, step)
                row["val_seconds"] = validator.curve[-1]["seconds"]
            history.append(row)
            if due or step % max(cfg.train.log_every, 1) == 0 or step == cfg.train.max_steps:
                logger.log(
                    {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in row.items()}
                )
            logger.advance(step, value, dt)
    if D.is_dist():
        history[-1]["rank_weight_sums"] = sums = D.weight_sums(net)
        if len(set(sums)) > 1:
            log.warning("%s: the processes ended with different weights (sums %s)", description, sums)
    if validator is not None and validator.keep_best:
        validator.restore_best(net)
    return history


def cycle(loader: Any) -> Iterator[Any]:
    """Endless iteration over a DataLoader (a new shuffled epoch each pass)."""
    while True:
        yield from loader
