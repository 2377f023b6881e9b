"""CASA / CAiA: conditional anatomical semantic alignment (Jiang et al., ICCV 2023, sec. 3.2).

One post-LayerNorm cross-attention transformer layer (the decoder layer of Vaswani et al. 2017
without its self-attention): queries are a view's (masked, hence corrupted) encoder tokens,
keys/values are decoder tokens; the output completes the corrupted tokens with matched context.

    q (B, Nq, D), kv (B, Nk, D) -> x = LN(q + Drop(MHA(q, kv, kv))) -> LN(x + Drop(FFN(x))) -> (B, Nq, D)

Defaults are Alice's: ``d_model = out_dim = 512`` (CASA runs on the head's prototype logits), 8
heads, FFN 2048 with ReLU, dropout 0.1. ``dropout=False`` in :meth:`forward` runs the layer
deterministically even in training mode: the *target* branch uses it so that the distillation target
is not randomly perturbed (as for DINO's dropout-free teacher).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CASA(nn.Module):
    def __init__(
        self, d_model: int = 512, num_heads: int = 8, ffn_dim: int = 2048, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"CASA d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"CASA dropout must be in [0, 1), got {dropout}")
        self.d_model, self.num_heads, self.p = d_model, num_heads, dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn1 = nn.Linear(d_model, ffn_dim)
        self.ffn2 = nn.Linear(ffn_dim, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.d_model // self.num_heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, kv: torch.Tensor, dropout: bool = True) -> torch.Tensor:
        """(B, Nq, D) queries, (B, Nk, D) keys/values -> (B, Nq, D)."""
        if query.shape[-1] != self.d_model or kv.shape[-1] != self.d_model:
            raise ValueError(
                f"CASA expects width {self.d_model}, got query {tuple(query.shape)}, kv {tuple(kv.shape)}"
            )
        p = self.p if (self.training and dropout) else 0.0
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(kv)), self._heads(self.v_proj(kv))
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        a = self.out_proj(a.transpose(1, 2).reshape(query.shape))
        x = self.norm1(query + F.dropout(a, p, self.training and dropout))
        f = self.ffn2(F.dropout(F.relu(self.ffn1(x)), p, self.training and dropout))
        return self.norm2(x + F.dropout(f, p, self.training and dropout))
