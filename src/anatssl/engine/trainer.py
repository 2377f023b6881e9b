"""The method-agnostic pretraining loop: *how* a method runs, never *what* it computes.

AdamW with per-step schedules, gradient accumulation and clipping, AMP, DDP through ``torchrun``,
``metrics.jsonl`` + TensorBoard + a progress bar, atomic checkpoints that resume exactly (model,
optimizer, scaler, RNG; schedules and data order are functions of the step), one process per run
folder (``RUN/run.lock``, :mod:`anatssl.engine.runlock`), Ctrl-C / SIGTERM / SIGUSR1 save a checkpoint
at the next step boundary and raise :class:`~anatssl.engine.signals.RunInterrupted` (exit status 128 + the
signal, :mod:`anatssl.engine.signals`), a non-finite loss stops the run with a clear message and keeps
the last good checkpoint. A resume names the config keys that changed since the checkpoint, and
refuses with that list, before loading anything, when the checkpoint's weights do not fit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from anatssl.config import PretrainConfig, pretrain_config_to_dict, save_yaml
from anatssl.data.source import VolumeSource
from anatssl.engine import distributed as D
from anatssl.engine.checkpoint import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    FORMAT,
    LAST_CHECKPOINT,
    METRICS_FILE,
    VERSION,
    atomic_torch_save,
    config_diff,
    group_keys,
    load_checkpoint,
    remove_orphaned_temp_files,
    rng_state,
    set_rng_state,
    step_checkpoint_name,
)
from anatssl.engine.data import StepBatchSampler, ViewDataset, collate
from anatssl.engine.device import autocast, resolve_device, to_device
from anatssl.engine.logger import RunLogger, setup_console_logging
from anatssl.engine.runlock import hold_run_lock, run_lock
from anatssl.engine.schedules import cosine_schedule, warmup_cosine
from anatssl.engine.signals import RunInterrupted, StopSignals, ignore_stop_signals, signal_name
from anatssl.engine.sync_batchnorm import convert_sync_batchnorm
from anatssl.errors import CheckpointError, ConfigError, TrainingError
from anatssl.methods import SSLMethod, build_method
from anatssl.models.boundary import plain

log = logging.getLogger("anatssl")


def peak_lr(cfg: PretrainConfig) -> float:
    """``optim.lr``, times total_batch / 256 under ``optim.lr_scaling=linear`` (DINO's rule)."""
    if cfg.optim.lr_scaling == "linear":
        total = cfg.train.batch_size * cfg.train.grad_accum * D.world_size()
        return cfg.optim.lr * total / 256.0
    return cfg.optim.lr


def lr_at(cfg: PretrainConfig, step: int) -> float:
    peak = peak_lr(cfg)
    return warmup_cosine(step, cfg.train.max_steps, peak, min(cfg.optim.min_lr, peak), cfg.optim.warmup_steps)


def wd_at(cfg: PretrainConfig, step: int) -> float:
    end = cfg.optim.weight_decay if cfg.optim.weight_decay_end is None else cfg.optim.weight_decay_end
    return cosine_schedule(step, cfg.train.max_steps, cfg.optim.weight_decay, end)


def build_optimizer(method: SSLMethod, cfg: PretrainConfig) -> torch.optim.AdamW:
    groups = method.param_groups(cfg.optim.weight_decay)
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ConfigError(f"method {cfg.method!r} has no trainable parameters")
    return torch.optim.AdamW(groups, lr=peak_lr(cfg), betas=cfg.optim.betas)


def _build_source(cfg: PretrainConfig, data: Any, out_dir: Path) -> Any:
    """A dataset path -> its :class:`VolumeSource`; a source or in-memory provider (len + load) as is."""
    if not isinstance(data, (str, Path)):
        return data
    return VolumeSource(
        data,
        cfg.data,
        cache_dir=cfg.data.cache_dir,
        fallback_cache_dir=out_dir / "cache",
        channels=cfg.model.in_channels,
    )


def _truncate_metrics(path: Path, start_step: int) -> None:
    """On resume, drop rows logged after the checkpoint the run resumes from, and a row that a kill
    cut short (not valid JSON)."""
    if not path.is_file():
        return
    keep = []
    for ln in path.read_text().splitlines():
        try:
            row = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("step", start_step + 1) <= start_step:
            keep.append(ln)
    path.write_text("".join(ln + "\n" for ln in keep))


class Trainer:
    def __init__(self, cfg: PretrainConfig, data: Any, out_dir: str | Path, resume: bool = False) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / CHECKPOINT_DIR
        self.last_path = self.ckpt_dir / LAST_CHECKPOINT
        self.device = resolve_device(cfg.train.device)
        if not cfg.train.dist_timeout_minutes > 0:
            raise ConfigError(f"train.dist_timeout_minutes must be > 0, got {cfg.train.dist_timeout_minutes}")
        D.init_from_env(self.device, cfg.train.dist_timeout_minutes)
        hold_run_lock(self.out_dir)  # rank 0; a no-op when the caller (run_pretraining) holds it already
        if cfg.train.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.amp=fp16 needs CUDA; on CPU use train.amp=bf16 or none")
        if self.last_path.exists() and not resume:
            raise ConfigError(
                f"{self.out_dir} already holds a run ({self.last_path.relative_to(self.out_dir)}); pass "
                "--resume (or --resume auto) to continue it, or choose another --out"
            )
        if resume and not self.last_path.exists():
            raise CheckpointError(f"--resume: {self.last_path} does not exist; start without --resume")
        self.resume = resume
        if D.is_main():
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for p in remove_orphaned_temp_files(self.ckpt_dir):
                log.warning("removed %s: a checkpoint write that was killed before it finished left it", p)
        self._ckpt: dict[str, Any] | None = None
        if resume:  # read and compare before anything is written: config.yaml keeps the run's config
            self._ckpt = load_checkpoint(self.last_path, map_location=self.device)
            self._check_resume_config(self._ckpt)
        elif D.is_main():
            save_yaml(pretrain_config_to_dict(cfg), self.out_dir / CONFIG_FILE)
        D.barrier()

        # data first: a bad dataset fails before any model is built
        self.source = _build_source(cfg, data, self.out_dir)
        if isinstance(self.source, VolumeSource) and not self.source.validated:
            # every rank: each preprocesses its share of the scans the cache lacks (VolumeSource.validate)
            self.source.validate(progress=cfg.train.progress and D.is_main())

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every fresh start
        self.method = build_method(cfg).to(self.device)
        self._check_volume_sizes()
        if cfg.train.compile:
            enc = self.method.encoder()
            enc.encode = torch.compile(enc.encode)  # type: ignore[assignment,arg-type]
        self.optimizer = build_optimizer(self.method, cfg)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.train.amp == "fp16" else None
        self.start_step = 0
        if self._ckpt is not None:
            self._load(self.last_path, self._ckpt)
            self._ckpt = None
            if D.is_main():
                save_yaml(pretrain_config_to_dict(cfg), self.out_dir / CONFIG_FILE)
        if not resume:  # per-rank stream for in-step randomness (masks, dropout); resume restores it
            torch.manual_seed(cfg.seed + 1000 * (D.rank() + 1))
        self.model: torch.nn.Module = self.method
        if D.is_dist():
            if cfg.train.sync_batchnorm:  # same parameter objects: the optimizer above still holds them
                convert_sync_batchnorm(self.method)
            ddp_kw: dict[str, Any] = {"find_unused_parameters": True}
            if self.device.type == "cuda":
                ddp_kw["device_ids"] = [self.device.index]
            self.model = torch.nn.parallel.DistributedDataParallel(self.method, **ddp_kw)

    # -- start-up checks -------------------------------------------------------------------------------
    def _check_volume_sizes(self) -> None:
        """Say once, at start-up, which scans are smaller than the method's crop (they get zero-padded)."""
        crop = self.method.min_volume_shape
        if not crop or not D.is_main() or not hasattr(self.source, "shapes"):
            return
        small = [(p, s) for p, s in self.source.shapes() if any(a < b for a, b in zip(s, crop))]
        if small:
            listing = ", ".join(f"{Path(p).name} {tuple(s)}" for p, s in small[:5])
            more = f" and {len(small) - 5} more" if len(small) > 5 else ""
            log.warning(
                "%d scan(s) are smaller than the crop %s and will be zero-padded: %s%s",
                len(small),
                tuple(crop),
                listing,
                more,
            )

    # -- checkpoints -----------------------------------------------------------------------------------
    def state(self, step: int) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "step": step,
            "method": self.cfg.method,
            "config": pretrain_config_to_dict(self.cfg),
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_state(),
            "extra": self.method.extra_state_dict(),
        }

    def save(self, step: int) -> None:
        if not D.is_main():
            return
        state = self.state(step)
        atomic_torch_save(state, self.last_path)
        if self.cfg.train.keep_checkpoints:
            atomic_torch_save(state, self.ckpt_dir / step_checkpoint_name(step))

    def _changed_keys(self, ckpt: dict[str, Any]) -> list[str]:
        """The resolved-config keys that differ between the checkpoint and this run's config."""
        saved = ckpt.get("config")
        if not isinstance(saved, dict):
            return []
        return config_diff(saved, pretrain_config_to_dict(self.cfg))

    def _check_resume_config(self, ckpt: dict[str, Any]) -> None:
        """Say which settings a resume changes (e.g. a larger ``train.max_steps``) before loading."""
        if ckpt.get("method") != self.cfg.method:
            raise CheckpointError(
                f"{self.last_path} was written by method {ckpt.get('method')!r}, not {self.cfg.method!r}"
            )
        changed = self._changed_keys(ckpt)
        if changed and D.is_main():
            log.info("resuming with changed settings: %s", "; ".join(changed))

    def _does_not_fit(self, path: Path, ckpt: dict[str, Any], what: str) -> CheckpointError:
        changed = self._changed_keys(ckpt)
        why = (
            f"the resolved config differs from the checkpoint's in: {'; '.join(changed)}"
            if changed
            else "the config is the same, so the code that builds the model changed"
        )
        return CheckpointError(
            f"--resume: {path} (step {ckpt.get('step')}) does not fit the model this config builds ({what}); "
            f"{why}. Resume without changing those keys (RUN/config.yaml holds the run's config), "
            "or start a new run with another --out"
        )

    def _load(self, path: Path, ckpt: dict[str, Any]) -> None:
        """Restore the run from ``ckpt``; its weights are compared with the model (names and shapes)
        before anything is copied, so a mismatch names the config keys, not PyTorch's key dump."""
        state = ckpt.get("model")
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} has no 'model' state dict")
        own = self.method.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        reshaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or reshaped:
            found = (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped))
            parts = [f"{name} {group_keys(keys, limit=4)}" for name, keys in found if keys]
            raise self._does_not_fit(path, ckpt, "; ".join(parts))
        self.method.load_state_dict(state)
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise self._does_not_fit(path, ckpt, f"optimizer state: {e}") from e
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.method.load_extra_state_dict(ckpt.get("extra", {}))
        self.start_step = int(ckpt["step"])
        log.info("resuming %s from step %d", self.out_dir, self.start_step)

    # -- the loop --------------------------------------------------------------------------------------
    def _set_schedules(self, step: int) -> tuple[float, float]:
        lr, wd = lr_at(self.cfg, step), wd_at(self.cfg, step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
            if g.get("apply_wd_schedule", True):
                g["weight_decay"] = wd
        return lr, wd

    def loader(self) -> DataLoader[dict[str, Any]]:
        cfg = self.cfg
        sampler = StepBatchSampler(
            self.start_step,
            cfg.train.max_steps,
            cfg.train.batch_size,
            cfg.train.grad_accum,
            D.rank(),
            D.world_size(),
        )
        nw = cfg.data.num_workers
        return DataLoader(
            ViewDataset(self.source, self.method.views, cfg.seed),
            batch_sampler=sampler,
            num_workers=nw,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=2 if nw > 0 else None,
            worker_init_fn=ignore_stop_signals if nw > 0 else None,
            # its own generator: creating the iterator must not draw from the global torch RNG,
            # which a resume has just restored (dropout / drop-path would otherwise shift)
            generator=torch.Generator().manual_seed(cfg.seed),
        )

    def _step(self, micro_batches: list[dict[str, Any]], step: int) -> dict[str, float]:
        cfg = self.cfg
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for i, batch in enumerate(micro_batches):
            batch = to_device(plain(batch), self.device)  # networks take plain tensors
            sync = (
                self.model.no_sync()  # type: ignore[operator]
                if D.is_dist() and i < len(micro_batches) - 1
                else contextlib.nullcontext()
            )
            with sync:
                with autocast(self.device, cfg.train.amp):
                    out = self.model(batch, step)
                loss = out["loss"]
                finite = torch.isfinite(loss.detach()).float()
                if D.all_reduce_mean(finite).item() < 1.0:
                    terms = {k: float(v.detach().float()) for k, v in out.items()}
                    raise TrainingError(
                        f"non-finite loss at step {step + 1} (terms: {terms}); the last good checkpoint is "
                        f"kept at {self.last_path}. Lower optim.lr, check the data for NaNs, or use amp=none"
                    )
                scaled = loss / len(micro_batches)
                if self.scaler is not None:
                    self.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach().float()) / len(micro_batches)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if cfg.optim.clip_grad > 0:
            totals["grad_norm"] = self.method.clip_gradients(cfg.optim.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.method.on_step_end(step)
        return totals

    def _out_of_time(self, t_run: float) -> bool:
        """Whether ``train.max_minutes`` has passed; rank 0's clock decides for every rank."""
        limit = self.cfg.train.max_minutes
        if limit is None:
            return False
        flag = torch.tensor(float(time.perf_counter() - t_run > 60.0 * limit), device=self.device)
        if D.is_dist():
            dist.broadcast(flag, 0)
        return bool(flag.item())

    def _agreed_signal(self, received: int) -> int:
        """The stop signal any rank received (the largest number), so that every rank stops at the same
        step; 0 when none did."""
        if not D.is_dist():
            return received
        flag = torch.tensor(float(received), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def fit(self) -> Path:
        cfg = self.cfg
        if self.resume:
            if D.is_main():
                _truncate_metrics(self.out_dir / METRICS_FILE, self.start_step)
        if self.start_step >= cfg.train.max_steps:
            log.info("nothing to do: the run is at step %d of %d", self.start_step, cfg.train.max_steps)
            return self.out_dir
        step = self.start_step
        pause = cfg.train.stop_after
        # a pause point already reached (the run is being resumed past it) no longer applies
        stop = min(cfg.train.max_steps, pause) if pause and pause > self.start_step else cfg.train.max_steps
        logger = RunLogger(
            self.out_dir,
            cfg.train.max_steps,
            self.start_step,
            enabled=D.is_main(),
            tensorboard=cfg.train.tensorboard,
            progress=cfg.train.progress,
            description=f"{cfg.method} pretrain",
        )
        t_run = time.perf_counter()
        signum = 0
        saved = self.start_step if self.last_path.exists() else -1
        try:
            with StopSignals() as signals, logger:
                it = iter(self.loader())
                while step < stop:
                    t0 = time.perf_counter()
                    try:
                        micro = [next(it) for _ in range(cfg.train.grad_accum)]
                    except Exception:
                        if not signals.received:  # loader workers that a Ctrl-C ended: stop as asked
                            raise
                        signum = signals.received
                        break
                    lr, wd = self._set_schedules(step)
                    terms = self._step(micro, step)
                    step += 1
                    seconds = time.perf_counter() - t0
                    if step % cfg.train.log_every == 0 or step == stop:
                        row = {"step": step, **terms, "lr": lr, "weight_decay": wd, "seconds": seconds}
                        logger.log(row)
                    logger.advance(step, terms["loss"], seconds)
                    if self._out_of_time(t_run) and step < stop:
                        log.info(
                            "train.max_minutes=%g reached at step %d of %d; continue with --resume",
                            cfg.train.max_minutes,
                            step,
                            cfg.train.max_steps,
                        )
                        stop = step
                    if step % cfg.train.ckpt_every == 0 or step == stop:
                        self.save(step)
                        saved = step
                    signum = self._agreed_signal(signals.received)
                    if signum:
                        break
        except KeyboardInterrupt:  # a second Ctrl-C: the state may be mid-step, so nothing is saved
            if D.is_main():
                log.warning("aborted at step %d, not saved; %s keeps step %d", step, self.last_path, saved)
            raise
        if signum:
            if saved != step:
                self.save(step)
            D.barrier()
            raise RunInterrupted(
                f"stopped by {signal_name(signum)} at step {step} of {cfg.train.max_steps}; saved "
                f"{self.last_path}; continue with `--resume auto` (exit status {128 + signum})",
                signum,
                step,
            )
        D.barrier()
        if D.is_main():
            log.info(
                "finished %d steps in %.1f s; checkpoint %s",
                step - self.start_step,
                time.perf_counter() - t_run,
                self.last_path,
            )
        return self.out_dir


def pretrain(cfg: PretrainConfig, data: Any, out_dir: str | Path, resume: bool = False) -> Path:
    """Run (or resume) a pretraining run; returns the run directory."""
    setup_console_logging()
    with run_lock(out_dir):
        return Trainer(cfg, data, out_dir, resume=resume).fit()
