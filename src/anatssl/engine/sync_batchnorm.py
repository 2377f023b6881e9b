"""BatchNorm whose batch statistics span every rank (``train.sync_batchnorm``), on CPU and CUDA.

Under DDP each rank's ``BatchNorm`` sees only its own batch: S2DC's projection heads normalise over a
per-GPU batch of a few crops' tokens and SAM's BatchNorm over one GPU's crops, so the statistics (and
the running averages that evaluation uses) depend on the number of GPUs. :class:`SyncBatchNorm`
normalises with the statistics of the concatenated batch of all ranks, so a ``W``-process run computes
what one process computes on the ``W`` times larger batch.

Why not ``torch.nn.SyncBatchNorm``: it refuses CPU tensors ("SyncBatchNorm expected input tensor to be
on GPU"), so the gloo runs this project tests with could not use it. This one is written with the
differentiable sums of :mod:`anatssl.engine.autograd_collectives` (two all-reduces per layer and
forward: ``[sum x, count]``, then ``sum (x - mean)^2``, the two-pass variance, exact to rounding);
its backward is autograd's through those sums, i.e. the same all-reduced gradient sums that
``torch.nn.SyncBatchNorm``'s hand-written backward computes. In eval mode, or without a process group,
it is ``F.batch_norm`` exactly as ``nn.BatchNorm*d``. Statistics are accumulated in float32 (float64
stays float64) whatever the autocast region; the output has the input's dtype.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from anatssl.engine import distributed as D
from anatssl.engine.autograd_collectives import all_reduce_sum_with_grad


class SyncBatchNorm(_BatchNorm):
    """(N, C, *) -> (N, C, *), statistics over N and * of every rank (see the module docstring)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training and D.is_dist() and D.world_size() > 1):
            return super().forward(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as _BatchNorm
                factor = 1.0 / float(self.num_batches_tracked.item())
        with torch.autocast(device_type=input.device.type, enabled=False):
            y = self._sync_forward(input, factor)
        return y.to(input.dtype)

    def _sync_forward(self, input: torch.Tensor, factor: float) -> torch.Tensor:
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        x = input.to(torch.promote_types(input.dtype, torch.float32))
        count = torch.full((1,), float(input.numel() // max(c, 1)), dtype=x.dtype, device=x.device)
        s = all_reduce_sum_with_grad(torch.cat([x.sum(dims), count]))
        n = s[c]
        mean = s[:c] / n
        shape = (1, c) + (1,) * (input.dim() - 2)
        xc = x - mean.reshape(shape)
        var = all_reduce_sum_with_grad((xc * xc).sum(dims)) / n  # biased: used to normalise
        if self.training and self.track_running_stats:
            if self.running_mean is None or self.running_var is None:
                raise RuntimeError("track_running_stats without running statistics")
            with torch.no_grad():
                unbiased = var * (n / (n - 1)) if float(n) > 1 else var
                self.running_mean.mul_(1 - factor).add_(
                    mean.detach().to(self.running_mean.dtype), alpha=factor
                )
                self.running_var.mul_(1 - factor).add_(
                    unbiased.detach().to(self.running_var.dtype), alpha=factor
                )
        y = xc * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            y = y * self.weight.to(x.dtype).reshape(shape) + self.bias.to(x.dtype).reshape(shape)
        return y


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` in ``module`` by a :class:`SyncBatchNorm` in place.

    The new layers *share* the old ones' parameters and running-statistics tensors (the same
    objects, as ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` does), so an optimizer built before
    the conversion keeps working and a state dict keeps its keys. Returns ``module`` (or the new layer
    when ``module`` itself is a BatchNorm).
    """
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        new = SyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            new.weight = module.weight
            new.bias = module.bias
        new.running_mean = module.running_mean
        new.running_var = module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def count_batchnorm(module: nn.Module) -> tuple[int, int]:
    """(plain BatchNorm layers, :class:`SyncBatchNorm` layers) in ``module``."""
    plain = sum(isinstance(m, _BatchNorm) and not isinstance(m, SyncBatchNorm) for m in module.modules())
    synced = sum(isinstance(m, SyncBatchNorm) for m in module.modules())
    return plain, synced
