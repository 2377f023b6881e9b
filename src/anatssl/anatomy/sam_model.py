"""SAM's embedding network: a small 3D ResNet-style CNN with an FPN and two unit-norm heads.

Yan et al., "SAM: Self-supervised Learning of Pixel-wise Anatomical Embeddings in Radiological
Images", IEEE TMI 2022. The public code uses a 3D ResNet-18 + FPN (mmdetection); ours is the same
layout at a configurable width/depth so that the tiny preset trains on a CPU:

    x (B, C, X, Y, Z)
    -> stem (3x3x3 conv, stride 1)
    -> stage s = 0..S-1: 2x2x2 conv stride 2 (downsampling) + ``blocks[s]`` residual blocks,
       width ``width * 2**s``, stride ``2**(s+1)``
    -> FPN: 1x1 laterals to ``fpn_dim``, top-down sum with trilinear upsampling
    -> fine head on the stride-2 FPN level  -> (B, D, X/2, Y/2, Z/2), L2-normalised
    -> coarse head on the deepest stage    -> (B, D, X/2**S, ...), L2-normalised

**Grid convention.** Downsampling is by non-overlapping 2x2x2 blocks and upsampling is trilinear with
``align_corners=False``, so index ``g`` of a grid of stride ``s`` is centred on input voxel
``s * g + (s - 1) / 2`` (the centre of its block). :func:`grid_affine` turns that into the 4x4 affine
of the grid; every coordinate conversion goes through it. Inputs must be divisible by
:attr:`SAMNet.input_multiple` (``2**S``); :func:`pad_to_multiple` pads at the far end only, so padding
never moves the grid.

BatchNorm rather than instance norm: the network is trained on crops and run on whole volumes;
instance statistics would differ between the two, running BN statistics do not.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class _ResBlock(nn.Module):
    """Basic residual block (two 3x3x3 convs), ResNet-18 style."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(ch, ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(ch)
        self.conv2 = nn.Conv3d(ch, ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(x + self.bn2(self.conv2(h)), inplace=True)


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 2, stride=2, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)
    )


class SAMNet(nn.Module):
    """(B, C, X, Y, Z) -> ``{"fine": (B, D, X/2, ...), "coarse": (B, D, X/2**S, ...)}``, unit-norm along D.

    Args:
        in_channels: input channels (1 for CT/MRI).
        width: channels of the first stage; stage s has ``width * 2**s``.
        blocks: residual blocks per stage; its length S sets the depth and the coarse stride ``2**S``
            (public SAM: ResNet-18, 4 stages -> coarse stride 16 in-plane).
        embed_dim: D, 128 as in SAM.
        fpn_dim: FPN channels (default ``2 * width``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 16,
        blocks: tuple[int, ...] = (1, 1, 1),
        embed_dim: int = 128,
        fpn_dim: int | None = None,
    ) -> None:
        super().__init__()
        if width < 1 or embed_dim < 1 or in_channels < 1:
            raise ValueError(
                f"width, embed_dim and in_channels must be >= 1, got {width}, {embed_dim}, {in_channels}"
            )
        if len(blocks) < 2 or any(b < 0 for b in blocks):
            raise ValueError(f"blocks must list >= 2 stages of >= 0 residual blocks, got {blocks}")
        fpn_dim = fpn_dim or 2 * width
        chans = [width * 2**s for s in range(len(blocks))]
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.ModuleList()
        prev = width
        for ch, nb in zip(chans, blocks):
            self.stages.append(nn.Sequential(_down(prev, ch), *[_ResBlock(ch) for _ in range(nb)]))
            prev = ch
        self.laterals = nn.ModuleList([nn.Conv3d(ch, fpn_dim, 1) for ch in chans])
        self.fine_head = nn.Sequential(
            nn.Conv3d(fpn_dim, fpn_dim, 3, padding=1), nn.ReLU(inplace=True), nn.Conv3d(fpn_dim, embed_dim, 1)
        )
        self.coarse_head = nn.Sequential(
            nn.Conv3d(chans[-1], chans[-1], 1), nn.ReLU(inplace=True), nn.Conv3d(chans[-1], embed_dim, 1)
        )
        self.embed_dim = embed_dim
        self.fine_stride = 2
        self.coarse_stride = 2 ** len(blocks)
        self.input_multiple = self.coarse_stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        bad = [s for s in x.shape[2:] if s % self.input_multiple]
        if bad:
            raise ValueError(
                f"SAMNet input spatial size {tuple(x.shape[2:])} must be divisible by "
                f"{self.input_multiple}; pad with pad_to_multiple()"
            )
        h = self.stem(x)
        feats = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        p = self.laterals[-1](feats[-1])
        for lat, f in zip(reversed(self.laterals[:-1]), reversed(feats[:-1])):
            p = lat(f) + F.interpolate(p, size=f.shape[2:], mode="trilinear", align_corners=False)
        fine = F.normalize(self.fine_head(p), dim=1)
        coarse = F.normalize(self.coarse_head(feats[-1]), dim=1)
        return {"fine": fine, "coarse": coarse}


def grid_affine(volume_affine: np.ndarray, stride: int) -> np.ndarray:
    """(4, 4) voxel -> world affine of a volume -> (4, 4) affine of its stride-``stride`` grid.

    Grid index g is centred on voxel ``stride * g + (stride - 1) / 2`` (see the module docstring).
    """
    a = np.asarray(volume_affine, dtype=np.float64)
    g2v = np.eye(4)
    g2v[:3, :3] *= stride
    g2v[:3, 3] = (stride - 1) / 2.0
    return a @ g2v


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(B, C, X, Y, Z) -> zero-padded at the far end of each axis to a multiple of ``multiple``.

    Returns the padded tensor and the original spatial shape. Zero is air / background after the
    modality presets' normalisation.
    """
    shape = tuple(int(s) for s in x.shape[2:])
    pad = [(-s) % multiple for s in shape]
    if any(pad):
        x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
    return x, shape  # type: ignore[return-value]


def grid_shape(shape: tuple[int, ...], stride: int) -> tuple[int, int, int]:
    """Spatial shape of the stride-``stride`` grid covering a volume of ``shape`` (ceil division)."""
    return tuple(-(-int(s) // stride) for s in shape)  # type: ignore[return-value]


# -- inference ------------------------------------------------------------------------------------
def _tile_starts(size: int, window: int, step: int) -> list[int]:
    """Window starts along one axis: multiples of ``step``, the last one flush with the end."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window, step))
    return [*starts, size - window]


@torch.no_grad()
def embed_tensor(
    net: SAMNet, x: torch.Tensor, window: int | None = 128, overlap: float = 0.25
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, C, X, Y, Z) volume -> fine (D, ceil(X/2), ...) and coarse (D, ceil(X/2**S), ...) unit-norm maps.

    Volumes larger than ``window`` voxels along an axis are embedded in overlapping windows whose
    starts are multiples of the coarse stride (so every window sees the same grid as the whole
    volume); overlapping outputs are averaged and re-normalised. ``window=None``: whole volume at once.
    """
    net.eval()
    m = net.input_multiple
    xp, shape = pad_to_multiple(x, m)
    size = xp.shape[2:]
    fs, cs = net.fine_stride, net.coarse_stride
    if window is None or all(s <= window for s in size):
        out = net(xp)
        fine, coarse = out["fine"][0], out["coarse"][0]
    else:
        win = max(m, window // m * m)
        step = max(m, int(win * (1 - overlap)) // m * m)
        wins = [min(win, s) for s in size]
        d = net.embed_dim
        fine = xp.new_zeros((d, *[s // fs for s in size]))
        coarse = xp.new_zeros((d, *[s // cs for s in size]))
        for i in _tile_starts(size[0], wins[0], step):
            for j in _tile_starts(size[1], wins[1], step):
                for k in _tile_starts(size[2], wins[2], step):
                    out = net(xp[:, :, i : i + wins[0], j : j + wins[1], k : k + wins[2]])
                    for key, acc, s in (("fine", fine, fs), ("coarse", coarse, cs)):
                        o = out[key][0]
                        acc[
                            :,
                            i // s : i // s + o.shape[1],
                            j // s : j // s + o.shape[2],
                            k // s : k // s + o.shape[3],
                        ] += o
        fine, coarse = F.normalize(fine, dim=0), F.normalize(coarse, dim=0)
    fx, fy, fz = grid_shape(shape, fs)
    cx, cy, cz = grid_shape(shape, cs)
    return fine[:, :fx, :fy, :fz], coarse[:, :cx, :cy, :cz]


def weights_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 (first 16 hex digits) over the names, shapes and bytes of a state dict."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]
