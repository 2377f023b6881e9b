"""Shifted-window multi-head self-attention for 3D Swin stages, fused for CPU training.

Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows"
(arXiv:2103.14030), in the 3D form of Hatamizadeh et al. 2022 (Swin UNETR, arXiv:2201.01266) as
implemented by MONAI (``monai.networks.nets.swin_unetr``): same padding, cyclic shift, window order,
shift mask (-100 between tokens from different regions) and relative-position bias.

Two pieces, both exact re-arrangements of MONAI's arithmetic:

* :class:`WindowPlan` (built once per input shape and cached): one gather index that does MONAI's
  ``F.pad`` + ``torch.roll`` + ``window_partition`` in a single copy, its inverse (``window_reverse``
  + reverse roll + crop), and the *mask groups*. A 3D shift mask (nW, N, N) has at most 8 distinct
  patterns (a window is or is not the last one along each axis), so windows are ordered by pattern and
  each group gets one (H, N, N) additive mask ``bias + pattern`` instead of a (B*nW, H, N, N) tensor.
  Groups also separate windows by their padding positions; within a group the padding tokens are
  ordered last, so only the real query rows are computed (padding still serves as keys and values,
  as in MONAI; its query outputs were discarded by MONAI's crop anyway).
* :class:`WindowAttentionFunction`: ``softmax(scale * q k^T + mask) v`` computed a few windows at a
  time so that the (c, H, N, N) score block stays in cache, saving only ``qkv`` and the output, and
  recomputing the scores in backward (FlashAttention's recomputation idea, Dao et al. 2022,
  arXiv:2205.14135, at window granularity). Its backward also returns the gradient of the additive
  mask, which ``torch.nn.functional.scaled_dot_product_attention`` cannot do on CPU (a mask that
  requires grad sends it to the unfused math kernel). On CUDA we call SDPA per mask group instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Target size in bytes of one (c*H, N, N) score block. 8 MiB keeps the block and its softmax in the
#: L3 cache of a server CPU while keeping the number of small kernels (and thread barriers) per block
#: low: on the 2-core Zen CPU, 2..32 MiB blocks ran within ~15% of each other when the machine was
#: quiet, while with other processes competing for the cores 2 MiB blocks ran ~2x slower than 32 MiB
#: ones (every kernel is a thread barrier that waits for a descheduled thread).
CHUNK_BYTES = 8 * 2**20


@dataclass
class MaskGroup:
    """Windows ``[start, stop)`` (in the window-batch order of the plan) that share one shift mask."""

    start: int
    stop: int
    pattern: torch.Tensor | None
    """(N, N) float additive mask (0 / -100) or None where all tokens of a window share a region."""
    perm: torch.Tensor | None = None
    """(N,) order of the window's tokens in the rows (real tokens first, padding last), None = MONAI's;
    ``pattern`` is already in this order, the relative-position bias is permuted with it."""
    real: int = 0
    """Number of real (non-padding) tokens per window: only these query rows are computed (the
    padding rows' outputs are discarded by the reverse gather; they still serve as keys, as in MONAI)."""


@dataclass
class WindowPlan:
    """Index tensors for one (batch, spatial shape, window, shift) of a Swin stage.

    Rows of the *window layout* ``(B * nW * N, C)`` are ordered (mask group, batch, window, token),
    tokens within a window in MONAI's (d, h, w) order. ``gather`` maps each window row to its source
    row in the flattened ``(B * D * H * W, C)`` input (padding rows point at row 0 and are listed in
    ``pad_rows`` to be zeroed); ``scatter`` maps each input row to its window row.
    """

    num_windows: int
    """B * nW: the batch size of the window attention."""
    tokens: int
    """N: tokens per window."""
    gather: torch.Tensor
    scatter: torch.Tensor
    pad_rows: torch.Tensor
    groups: list[MaskGroup]


def window_and_shift(
    dims: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """MONAI's ``get_window_size``: an axis no longer than the window uses its full length, unshifted."""
    ws, ss = list(window), list(shift)
    for i, s in enumerate(dims):
        if s <= window[i]:
            ws[i] = s
            ss[i] = 0
    return tuple(ws), tuple(ss)


def _region_labels(padded: tuple[int, ...], ws: tuple[int, ...], ss: tuple[int, ...]) -> torch.Tensor:
    """MONAI's ``compute_mask`` image: (Dp, Hp, Wp) region id of each position of the shifted grid."""
    img = torch.zeros(padded, dtype=torch.int64)
    cnt = 0
    for d in slice(-ws[0]), slice(-ws[0], -ss[0]), slice(-ss[0], None):
        for h in slice(-ws[1]), slice(-ws[1], -ss[1]), slice(-ss[1], None):
            for w in slice(-ws[2]), slice(-ws[2], -ss[2]), slice(-ss[2], None):
                img[d, h, w] = cnt
                cnt += 1
    return img


def _partition(grid: torch.Tensor, ws: tuple[int, ...]) -> torch.Tensor:
    """(Dp, Hp, Wp) -> (nW, N) in MONAI's window order (window d, h, w; then token d, h, w)."""
    dp, hp, wp = grid.shape
    g = grid.view(dp // ws[0], ws[0], hp // ws[1], ws[1], wp // ws[2], ws[2])
    return g.permute(0, 2, 4, 1, 3, 5).reshape(-1, ws[0] * ws[1] * ws[2])


def build_plan(
    batch: int, dims: tuple[int, int, int], ws: tuple[int, ...], ss: tuple[int, ...], device: torch.device
) -> WindowPlan:
    """Plan for a block with (already shrunk) window ``ws`` and shift ``ss`` on ``dims`` = (D, H, W)."""
    padded = tuple(-(-s // w) * w for s, w in zip(dims, ws))
    # source coordinate of every position of the padded, cyclically shifted grid:
    # torch.roll(x, -s)[p] = x[(p + s) mod P]; positions >= the true size are padding
    axes = [(torch.arange(p) + s) % p for p, s in zip(padded, ss)]
    cd, ch, cw = torch.meshgrid(*axes, indexing="ij")
    valid = (cd < dims[0]) & (ch < dims[1]) & (cw < dims[2])
    flat = (cd * dims[1] + ch) * dims[2] + cw
    src = _partition(torch.where(valid, flat, -1), ws)  # (nW, N)
    nw, n = src.shape

    if any(s > 0 for s in ss):
        labels = _partition(_region_labels(padded, ws, ss), ws)  # (nW, N)
        same = (labels[:, :, None] == labels[:, None, :]).view(nw, -1)  # (nW, N*N)
    else:
        same = torch.ones(nw, n * n, dtype=torch.bool)
    # a group = one shift-mask pattern and one set of padding positions
    keys, group_of = torch.unique(torch.cat([same, src < 0], dim=1), dim=0, return_inverse=True)
    patterns, pads = keys[:, : n * n], keys[:, n * n :]

    length = dims[0] * dims[1] * dims[2]
    rows, groups, start = [], [], 0
    for g in range(patterns.shape[0]):
        members = torch.nonzero(group_of == g).flatten()
        if members.numel() == 0:
            continue
        is_pad = pads[g]
        perm = torch.argsort(is_pad.to(torch.int8), stable=True)  # real tokens first, in MONAI's order
        identity = bool((perm == torch.arange(n)).all())
        block = src[members][:, perm]  # (n_g, N)
        per_batch = [torch.where(block >= 0, block + b * length, -1) for b in range(batch)]
        rows.append(torch.stack(per_batch).flatten())
        stop = start + batch * members.numel()
        pat = patterns[g].view(n, n)[perm][:, perm]
        pattern = None if bool(pat.all()) else torch.zeros(n, n).masked_fill(~pat, -100.0).to(device)
        groups.append(
            MaskGroup(start, stop, pattern, None if identity else perm.to(device), int((~is_pad).sum()))
        )
        start = stop
    gather = torch.cat(rows)
    pad = gather < 0
    scatter = torch.empty(batch * length, dtype=torch.int64)
    scatter[gather[~pad]] = torch.nonzero(~pad).flatten()
    return WindowPlan(
        num_windows=batch * nw,
        tokens=n,
        gather=gather.clamp(min=0).to(device),
        scatter=scatter.to(device),
        pad_rows=torch.nonzero(pad).flatten().to(device),
        groups=groups,
    )


class _ToWindows(torch.autograd.Function):
    """(B*L, C) tokens -> (B*nW*N, C) window rows (pad rows zero); backward is the inverse gather."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
        ctx.plan = plan
        out = x.index_select(0, plan.gather)
        if plan.pad_rows.numel():
            out.index_fill_(0, plan.pad_rows, 0.0)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.contiguous().index_select(0, ctx.plan.scatter), None


class _FromWindows(torch.autograd.Function):
    """(B*nW*N, C) window rows -> (B*L, C) tokens (drops pad rows); backward is the forward gather."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
        ctx.plan = plan
        return x.index_select(0, plan.scatter)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        plan = ctx.plan
        out = grad.contiguous().index_select(0, plan.gather)
        if plan.pad_rows.numel():
            out.index_fill_(0, plan.pad_rows, 0.0)
        return out, None


def to_windows(x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
    """MONAI's pad + roll + window_partition as one gather: (B*L, C) -> (B*nW*N, C)."""
    return _ToWindows.apply(x, plan)


def from_windows(x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
    """MONAI's window_reverse + reverse roll + crop as one gather: (B*nW*N, C) -> (B*L, C)."""
    return _FromWindows.apply(x, plan)


def _chunk(num_heads: int, n: int, itemsize: int) -> int:
    return max(1, CHUNK_BYTES // (num_heads * n * n * itemsize))


def _split_heads(
    qkv: torch.Tensor, plan: WindowPlan, num_heads: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Bw*N, 3C) -> scale*q (Bw*H, N, d), k^T (Bw*H, d, N), v (Bw*H, N, d), all contiguous.

    q is scaled before the product, as MONAI does, so the scores are bit-for-bit the same products."""
    bw, n = plan.num_windows, plan.tokens
    d = qkv.shape[1] // (3 * num_heads)
    q, k, v = qkv.view(bw, n, 3, num_heads, d).permute(2, 0, 3, 1, 4).unbind(0)  # (Bw, H, N, d) views
    return (
        (q * scale).reshape(bw * num_heads, n, d),
        k.transpose(-2, -1).reshape(bw * num_heads, d, n),
        v.reshape(bw * num_heads, n, d),
    )


def group_mask(bias: torch.Tensor, grp: MaskGroup) -> torch.Tensor:
    """(H, N, N) relative-position bias -> the group's additive mask in its row order."""
    mask = bias if grp.perm is None else bias[:, grp.perm][:, :, grp.perm]
    return mask if grp.pattern is None else mask + grp.pattern.to(bias.dtype)


def _chunks(
    plan: WindowPlan, bias: torch.Tensor, num_heads: int, itemsize: int
) -> list[tuple[MaskGroup, list[tuple[int, int, torch.Tensor]]]]:
    """Per mask group: (row start, row stop, (rows, R, N) additive mask) over the (Bw*H) batch, where
    R = the group's real query tokens."""
    n = plan.tokens
    chunk = _chunk(num_heads, n, itemsize)
    out = []
    for grp in plan.groups:
        mask = group_mask(bias, grp)[:, : grp.real]
        rows = min(chunk, grp.stop - grp.start) * num_heads
        rep = mask.repeat(rows // num_heads, 1, 1)  # (rows, R, N): baddbmm's additive input
        spans = []
        for s in range(grp.start * num_heads, grp.stop * num_heads, rows):
            e = min(s + rows, grp.stop * num_heads)
            spans.append((s, e, rep[: e - s]))
        out.append((grp, spans))
    return out


class WindowAttentionFunction(torch.autograd.Function):
    """Windowed attention with a learnable additive bias, by chunks of windows, scores recomputed.

    ``qkv``: (B*nW*N, 3*C) rows in the plan's window order, C = H * d, laid out (3, H, d) per row as
    MONAI's ``qkv`` Linear produces them. ``bias``: (H, N, N) relative-position bias (requires grad).
    Returns (B*nW*N, C) laid out (H, d) per row, ready for the output projection.

    Per chunk, forward is ``baddbmm(mask, q, k^T)`` (mask add fused into the GEMM) + softmax + bmm;
    backward recomputes P the same way and uses ATen's fused softmax backward, so no (N, N) tensor
    outlives its chunk.
    """

    @staticmethod
    def forward(
        ctx, qkv: torch.Tensor, bias: torch.Tensor, plan: WindowPlan, num_heads: int, scale: float
    ) -> torch.Tensor:
        bw, n = plan.num_windows, plan.tokens
        q, kt, v = _split_heads(qkv, plan, num_heads, scale)
        out = torch.zeros_like(v)
        for grp, spans in _chunks(plan, bias, num_heads, qkv.element_size()):
            r = grp.real
            for s, e, mask in spans:
                p = torch.softmax(torch.baddbmm(mask, q[s:e, :r], kt[s:e]), dim=-1)  # (rows, R, N)
                if r == n:
                    torch.bmm(p, v[s:e], out=out[s:e])
                else:
                    out[s:e, :r] = torch.bmm(p, v[s:e])
        ctx.save_for_backward(q, kt, v, bias)
        ctx.plan, ctx.num_heads, ctx.scale = plan, num_heads, scale
        return out.view(bw, num_heads, n, -1).transpose(1, 2).reshape(bw * n, -1)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, kt, v, bias = ctx.saved_tensors
        plan, num_heads, scale = ctx.plan, ctx.num_heads, ctx.scale
        bw, n = plan.num_windows, plan.tokens
        d = v.shape[-1]
        go = grad_out.view(bw, n, num_heads, d).transpose(1, 2).reshape(bw * num_heads, n, d)
        grads = q.new_empty((3, bw * num_heads, n, d))  # one size tuple: any tensor subclass accepts it
        gq, gk, gv = grads.unbind(0)
        grad_bias = torch.zeros_like(bias) if ctx.needs_input_grad[1] else None
        for grp, spans in _chunks(plan, bias, num_heads, q.element_size()):
            r = grp.real
            gmask = bias.new_zeros((num_heads, n, n)) if grad_bias is not None else None
            for s, e, mask in spans:
                p = torch.softmax(torch.baddbmm(mask, q[s:e, :r], kt[s:e]), dim=-1)  # (rows, R, N)
                gor = go[s:e, :r]
                torch.bmm(p.transpose(1, 2), gor, out=gv[s:e])
                dp = torch.bmm(gor, v[s:e].transpose(1, 2))
                ds = torch._softmax_backward_data(dp, p, -1, p.dtype)  # P * (dP - rowsum(dP * P))
                if gmask is not None:
                    gmask[:, :r] += ds.view(-1, num_heads, r, n).sum(0)
                if r == n:
                    torch.bmm(ds, kt[s:e].transpose(1, 2), out=gq[s:e])
                else:
                    gq[s:e, r:] = 0.0  # padding queries: outputs discarded, no gradient
                    gq[s:e, :r] = torch.bmm(ds, kt[s:e].transpose(1, 2))
                gq[s:e].mul_(scale)
                torch.bmm(ds.transpose(1, 2), q[s:e, :r], out=gk[s:e])  # q is pre-scaled
            if grad_bias is not None and gmask is not None:
                if grp.perm is None:
                    grad_bias += gmask
                else:
                    inv = torch.argsort(grp.perm)
                    grad_bias += gmask[:, inv][:, :, inv]
        grad_qkv = grads.view(3, bw, num_heads, n, d).permute(1, 3, 0, 2, 4).reshape(bw * n, -1)
        return grad_qkv, grad_bias, None, None, None


def window_attention(
    qkv: torch.Tensor, bias: torch.Tensor, plan: WindowPlan, num_heads: int, scale: float
) -> torch.Tensor:
    """(B*nW*N, 3C) qkv rows, (H, N, N) bias -> (B*nW*N, C) attention output (see module docstring).

    CUDA: one ``scaled_dot_product_attention`` call per mask group (its efficient kernels take a
    mask that requires grad). CPU: :class:`WindowAttentionFunction`.
    """
    if qkv.is_cuda:
        bw, n = plan.num_windows, plan.tokens
        d = qkv.shape[1] // (3 * num_heads)
        q, k, v = qkv.view(bw, n, 3, num_heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        outs = []
        for grp in plan.groups:
            mask = group_mask(bias, grp)
            sl = slice(grp.start, grp.stop)
            m = mask.to(q.dtype).unsqueeze(0).expand(grp.stop - grp.start, -1, -1, -1)
            outs.append(F.scaled_dot_product_attention(q[sl], k[sl], v[sl], attn_mask=m, scale=scale))
        o = outs[0] if len(outs) == 1 else torch.cat(outs)
        return o.transpose(1, 2).reshape(bw * n, num_heads * d)
    # under autocast qkv comes out of the Linear in bf16/fp16 while the bias table stays fp32
    bias = bias.to(qkv.dtype)
    return WindowAttentionFunction.apply(qkv, bias, plan, num_heads, scale)
