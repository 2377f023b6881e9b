"""S2DC's projection heads (Pan et al., ICCV 2025): an MLP per token (patch head) and per crop (global).

Both are ``in -> hidden -> hidden -> out`` with BatchNorm + ReLU after the first two linear layers
(768 -> 2048 -> 2048 -> 512 in the paper for a Swin-B-like encoder with 768 deepest channels).

``bn_axis`` chooses what BatchNorm normalises for token inputs (M, N, C):

* ``channels`` (default): each of the C features over all M x N tokens, the usual meaning.
* ``tokens``: the public code applies ``BatchNorm1d`` to the (M, N, C) tensor, which PyTorch reads as
  (batch, channels=N, length=C): each *token position* is normalised over the batch and the feature
  dimension. Kept for the ``official`` preset only; it ties the head to a fixed token count N.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class S2DCProjectionHead(nn.Module):
    """(M, C_in) or (M, N, C_in) -> same leading dims with ``out_dim`` features (optionally unit norm)."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 512,
        normalize: bool = True,
        bn_axis: str = "channels",
        num_tokens: int | None = None,
    ) -> None:
        super().__init__()
        if bn_axis not in ("channels", "tokens"):
            raise ValueError(f"bn_axis = {bn_axis!r}; valid values: 'channels', 'tokens'")
        if bn_axis == "tokens" and not num_tokens:
            raise ValueError("bn_axis='tokens' needs num_tokens (the fixed token count per crop)")
        self.bn_axis = bn_axis
        self.normalize = normalize
        bn_dim = hidden_dim if bn_axis == "channels" else int(num_tokens or 0)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(bn_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.bn2 = nn.BatchNorm1d(bn_dim)
        self.fc3 = nn.Linear(hidden_dim, out_dim)

    def _bn(self, bn: nn.BatchNorm1d, h: torch.Tensor) -> torch.Tensor:
        if self.bn_axis == "tokens":
            if h.ndim != 3:
                raise ValueError("bn_axis='tokens' expects (M, N, C) token inputs")
            return bn(h)  # (M, N, C): BatchNorm1d reads N as the channel axis (public code behaviour)
        lead = h.shape[:-1]
        return bn(h.reshape(-1, h.shape[-1])).reshape(*lead, h.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self._bn(self.bn1, self.fc1(x)))
        h = F.relu(self._bn(self.bn2, self.fc2(h)))
        out = self.fc3(h)
        return F.normalize(out, dim=-1) if self.normalize else out
