"""``SwinViT``: the Swin-UNETR encoder (MONAI's ``SwinTransformer``), re-implemented for speed.

Hatamizadeh et al. 2022, "Swin UNETR" (arXiv:2201.01266) and "Swin UNETR-V2" (MICCAI 2023) on
Liu et al. 2021's shifted windows (arXiv:2103.14030). Parameter and buffer names, shapes and the
arithmetic are MONAI's (``monai.networks.nets.swin_unetr.SwinTransformer`` with patch size 2,
``downsample="merging"``, qkv bias, MLP ratio 4, no patch norm), so a state dict moves between the
two with ``strict=True`` (``relative_position_index`` is a persistent buffer there, so it is here).
The outputs agree with MONAI's to float rounding (``tests/models/test_swin_parity.py``).

What differs is how the work is done (see ``window_attention.py``):

* a stage runs on a channels-last ``(B, D*H*W, C)`` token matrix, never leaving it between blocks;
  pad + roll + window partition and their inverses are one cached gather each;
* window attention is fused: the relative-position bias and the shift mask are one additive (H, N, N)
  mask per mask group, scores are computed a few windows at a time in cache and recomputed in
  backward, so the (B*nW, H, N, N) attention matrices never exist in memory;
* stage outputs are returned as ``(B, C, D, H, W)`` views of channels-last memory (as MONAI's
  ``rearrange`` does), with no copies between stages;
* ``use_checkpoint`` (bool or one bool per stage) recomputes each block's attention and MLP parts in
  backward, as MONAI's does;
* ``compile=True`` wraps the per-token parts of each block (LayerNorm, Linear, GELU, residual adds) in
  ``torch.compile``; the attention itself stays the hand-written function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from monai.networks.blocks import UnetrBasicBlock
from monai.networks.layers import DropPath, trunc_normal_
from torch import nn

from anatssl.models.backbones.window_attention import (
    WindowPlan,
    build_plan,
    from_windows,
    to_windows,
    window_and_shift,
    window_attention,
)


def relative_position_index(window: tuple[int, int, int]) -> torch.Tensor:
    """(N, N) index into the ((2w0-1)(2w1-1)(2w2-1), H) bias table for N = w0*w1*w2 (MONAI/Swin order)."""
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    for i, w in enumerate(window):
        rel[:, :, i] += w - 1
    rel[:, :, 0] *= (2 * window[1] - 1) * (2 * window[2] - 1)
    rel[:, :, 1] *= 2 * window[2] - 1
    return rel.sum(-1)


class WindowAttention(nn.Module):
    """Parameters of one block's window attention (MONAI names); the compute is in ``window_attention``."""

    def __init__(
        self, dim: int, num_heads: int, window_size: tuple[int, int, int], qkv_bias: bool = True
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (dim // num_heads) ** -0.5
        n_rel = (2 * window_size[0] - 1) * (2 * window_size[1] - 1) * (2 * window_size[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(n_rel, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def bias(self, n: int) -> torch.Tensor:
        """(H, n, n) relative-position bias; MONAI slices the full-window index to ``[:n, :n]`` when the
        window shrinks to a small input, and so do we."""
        idx = self.relative_position_index[:n, :n].reshape(-1)  # type: ignore[index]
        return self.relative_position_bias_table[idx].view(n, n, -1).permute(2, 0, 1)

    def forward(self, h: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
        """(B*L, C) normalised tokens -> (B*L, C) attention output after the projection."""
        qkv = F.linear(to_windows(h, plan), self.qkv.weight, self.qkv.bias)
        o = window_attention(qkv, self.bias(plan.tokens), plan, self.num_heads, self.scale)
        return F.linear(from_windows(o, plan), self.proj.weight, self.proj.bias)


class _MlpFunction(torch.autograd.Function):
    """``linear2(gelu(linear1(x)))`` saving only x and the pre-activation: the GELU output (4C per
    token, a quarter of a block's saved activations) is recomputed in backward instead of stored."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
    ) -> torch.Tensor:
        h = F.linear(x, w1, b1)
        ctx.save_for_backward(x, h, w1, w2)
        return F.linear(F.gelu(h), w2, b2)

    @staticmethod
    def backward(ctx, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, h, w1, w2 = ctx.saved_tensors
        gy2 = gy.reshape(-1, gy.shape[-1])
        h2 = h.reshape(-1, h.shape[-1])
        gw2 = gy2.t() @ F.gelu(h2) if ctx.needs_input_grad[3] else None
        gb2 = gy2.sum(0) if ctx.needs_input_grad[4] else None
        gh = torch.ops.aten.gelu_backward(gy2 @ w2, h2)
        gw1 = gh.t() @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        gb1 = gh.sum(0) if ctx.needs_input_grad[2] else None
        gx = (gh @ w1).view(x.shape) if ctx.needs_input_grad[0] else None
        return gx, gw1, gb1, gw2, gb2


class Mlp(nn.Module):
    """MONAI's ``MLPBlock`` (exact GELU, no dropout): keys ``linear1``, ``linear2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            return self.linear2(F.gelu(self.linear1(x)))
        return _MlpFunction.apply(
            x, self.linear1.weight, self.linear1.bias, self.linear2.weight, self.linear2.bias
        )


class SwinTransformerBlock(nn.Module):
    """x + attn(norm1(x)); x + mlp(norm2(x)) on (B, L, C) tokens; odd blocks use shifted windows."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: tuple[int, int, int],
        shifted: bool,
        drop_path: float = 0.0,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.use_checkpoint = False
        self.compiled: Callable[..., torch.Tensor] | None = None

    def part1(self, x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
        b, n, c = x.shape
        return self.attn(self.norm1(x).view(b * n, c), plan).view(b, n, c)

    def part2(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.mlp(self.norm2(x)))

    def _part2_residual(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.part2(x)

    def forward(self, x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
        if self.use_checkpoint:
            x = x + self.drop_path(checkpoint.checkpoint(self.part1, x, plan, use_reentrant=False))
            return x + checkpoint.checkpoint(self.part2, x, use_reentrant=False)
        x = x + self.drop_path(self.part1(x, plan))
        if self.compiled is not None:
            return self.compiled(x)
        return x + self.part2(x)


class PatchMerging(nn.Module):
    """MONAI's ``PatchMerging`` (v0.9 order of the 8 sub-grids; the ``"merging"`` default):
    (B, D, H, W, C) -> (B, ceil(D/2), ceil(H/2), ceil(W/2), 2C)."""

    ORDER = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1))

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(8 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(8 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, d, h, w, _ = x.shape
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        x = torch.cat([x[:, i::2, j::2, k::2, :] for i, j, k in self.ORDER], -1)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One Swin stage: ``depth`` blocks (alternating plain / shifted windows) then patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: tuple[int, int, int],
        drop_path: Sequence[float],
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = tuple(w // 2 for w in window_size)
        self.blocks: list[SwinTransformerBlock] = nn.ModuleList(  # type: ignore[assignment]
            [
                SwinTransformerBlock(dim, num_heads, window_size, shifted=i % 2 == 1, drop_path=drop_path[i])
                for i in range(depth)
            ]
        )
        self.downsample = PatchMerging(dim)
        self._plans: dict[tuple[object, ...], WindowPlan] = {}

    def plan(self, batch: int, dims: tuple[int, int, int], shifted: bool, device: torch.device) -> WindowPlan:
        """Cached gather indices and mask groups for this input shape (MONAI's window-shrink rule)."""
        ws, ss = window_and_shift(dims, self.window_size, self.shift_size)
        if not shifted:
            ss = (0, 0, 0)
        key = (batch, dims, ws, ss, device)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= 32:  # varying crop sizes: keep the cache bounded
                self._plans.clear()
            plan = self._plans[key] = build_plan(batch, dims, ws, ss, device)
        return plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W, C) contiguous -> (B, D', H', W', 2C) contiguous (channels-last throughout)."""
        b, d, h, w, c = x.shape
        t = x.reshape(b, d * h * w, c)
        for blk in self.blocks:
            t = blk(t, self.plan(b, (d, h, w), blk.shifted, x.device))
        return self.downsample(t.view(b, d, h, w, c))


class PatchEmbed(nn.Module):
    """MONAI's ``PatchEmbed`` (3D, no norm): zero-pad to a multiple of the patch, then a strided conv."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 2) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        d, h, w = x.shape[2:]
        if d % p or h % p or w % p:
            x = F.pad(x, (0, (-w) % p, 0, (-h) % p, 0, (-d) % p))
        return self.proj(x)


class SwinViT(nn.Module):
    """Swin transformer encoder: (B, C_in, D, H, W) -> 5 maps at strides 2, 4, 8, 16, 32 with
    ``embed_dim * (1, 2, 4, 8, 16)`` channels, exactly MONAI's ``SwinTransformer.forward``.

    Args:
        in_chans: input channels.
        embed_dim: channels after patch embedding (SwinUNETR's ``feature_size``; 48 in Tang et al.).
        window_size: attention window (7, 7, 7 in Swin UNETR).
        depths: blocks per stage (2, 2, 2, 2 in Swin UNETR).
        num_heads: heads per stage (3, 6, 12, 24: head dim ``embed_dim / 3`` at feature size 48).
        drop_path_rate: stochastic depth, linearly increasing over all blocks (as MONAI).
        use_checkpoint: gradient checkpointing of every block (bool) or of the blocks of chosen stages
            (4 bools): less activation memory for ~30% more compute.
        use_v2: Swin UNETR-V2's residual conv block (``layers1c..layers4c``) before each stage.
        compile: ``torch.compile`` the per-token parts of each block (first call compiles; off by
            default because compilation takes minutes on a small CPU).
    """

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        window_size: tuple[int, int, int],
        depths: tuple[int, ...],
        num_heads: tuple[int, ...],
        drop_path_rate: float = 0.0,
        use_checkpoint: bool | Sequence[bool] = False,
        use_v2: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"SwinViT needs 4 stages, got depths={depths} num_heads={num_heads}")
        window = tuple(int(w) for w in window_size)
        if len(window) != 3:
            raise ValueError(f"window_size must have 3 entries, got {window_size}")
        self.embed_dim = embed_dim
        self.window_size = window
        self.num_layers = 4
        self.use_v2 = use_v2
        self.patch_embed = PatchEmbed(in_chans, embed_dim)
        dpr = [float(v) for v in torch.linspace(0, drop_path_rate, sum(depths))]
        for i in range(4):
            dim = embed_dim * 2**i
            layer = BasicLayer(
                dim, depths[i], num_heads[i], window, dpr[sum(depths[:i]) : sum(depths[: i + 1])]
            )
            self.add_module(f"layers{i + 1}", nn.ModuleList([layer]))
        if use_v2:
            for i in range(4):
                dim = embed_dim * 2**i
                block = UnetrBasicBlock(
                    3, dim, dim, kernel_size=3, stride=1, norm_name="instance", res_block=True
                )
                self.add_module(f"layers{i + 1}c", nn.ModuleList([block]))
        self.num_features = embed_dim * 2**3
        self.set_checkpointing(use_checkpoint)
        if compile:
            self.compile_blocks()

    def stages(self) -> list[BasicLayer]:
        return [getattr(self, f"layers{i + 1}")[0] for i in range(4)]

    def set_checkpointing(self, use_checkpoint: bool | Sequence[bool]) -> None:
        """Switch gradient checkpointing for all stages (bool) or per stage (4 bools)."""
        if isinstance(use_checkpoint, bool):
            flags = [use_checkpoint] * 4
        else:
            flags = [bool(f) for f in use_checkpoint]
        if len(flags) != 4:
            raise ValueError(f"use_checkpoint needs 1 or 4 flags, got {use_checkpoint}")
        for layer, flag in zip(self.stages(), flags):
            for blk in layer.blocks:
                blk.use_checkpoint = flag

    def compile_blocks(self, **kwargs: Any) -> None:
        """``torch.compile`` each block's LayerNorm + MLP + residual (the window attention stays eager)."""
        for layer in self.stages():
            for blk in layer.blocks:
                blk.compiled = torch.compile(blk._part2_residual, **kwargs)

    @staticmethod
    def proj_out(x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, D, H, W, C) -> (B, C, D, H, W) view, layer-normalised over C (no affine) if asked."""
        if normalize:
            x = F.layer_norm(x, [x.shape[-1]])
        return x.permute(0, 4, 1, 2, 3)

    def forward(self, x: torch.Tensor, normalize: bool = True) -> list[torch.Tensor]:
        """(B, C_in, D, H, W) -> [x0 (stride 2), x1, x2, x3, x4 (stride 32)], each (B, C_l, ...)."""
        h = self.patch_embed(x).permute(0, 2, 3, 4, 1).contiguous()  # channels-last from here on
        outs = [self.proj_out(h, normalize)]
        for i, layer in enumerate(self.stages()):
            if self.use_v2:
                conv = getattr(self, f"layers{i + 1}c")[0]
                # channel-first contiguous, as MONAI feeds it: the same conv algorithm, the same rounding
                h = conv(h.permute(0, 4, 1, 2, 3).contiguous()).permute(0, 2, 3, 4, 1).contiguous()
            h = layer(h)
            outs.append(self.proj_out(h, normalize))
        return outs


__all__ = ["SwinViT", "relative_position_index"]
