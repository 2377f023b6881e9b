"""Alice's projection head: iBOT's head with linear token projections (Jiang et al., ICCV 2023, sec. 3.3).

Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022 (``iBOTHead``), itself
DINO's head (Caron et al., ICCV 2021):

    cls (B, C_cls)             -> MLP -> L2 norm -> last_layer        -> (B, out_dim)
    enc tokens (B, N, C_enc)   -> Linear(C_enc, C_cls) -> MLP -> L2 -> last_layer_tokens -> (B, N, out_dim)
    dec tokens (B, M, C_dec)   -> Linear(C_dec, C_cls) -> MLP -> L2 -> last_layer_tokens -> (B, M, out_dim)

MLP = ``C_cls -> hidden -> hidden -> bottleneck`` with GELU (2048, 2048, 256 in DINO / iBOT / Alice).
The last layers are weight-normalised linear maps onto ``out_dim`` "prototypes" (512 in Alice) with
the weight-norm gain fixed at 1 (DINO's ``norm_last_layer=True``, which the DINO authors found stabilises
training). Tokens get their own last layer (iBOT's ``shared_head=False``) but share the MLP. The last
layers can be frozen for the first steps (``freeze_last=True``): the weight is then detached in the
forward pass, so the optimizer sees no gradient for it (DINO's ``cancel_gradients_last_layer``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from anatssl.models.backbones.base import Backbone, tokens


def _normed_last_layer(bottleneck_dim: int, out_dim: int) -> nn.Linear:
    layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
    gain = layer.parametrizations.weight.original0
    gain.data.fill_(1.0)
    gain.requires_grad_(False)
    return layer


class AliceHead(nn.Module):
    """Projects the cls vector and token grids of a backbone onto ``out_dim`` prototype logits.

    Args:
        cls_dim: width of the cls vector (the deepest encoder stage).
        enc_dim: width of the encoder tokens (the deepest stage as well, projected anyway as in Alice).
        dec_dim: width of the decoder tokens (first decoder stage).
        out_dim: number of prototypes (512, Alice's ``out_dim``; also CASA's ``d_model``).
        hidden_dim, bottleneck_dim: MLP widths (2048, 256 in DINO / iBOT / Alice).
    """

    def __init__(
        self,
        cls_dim: int,
        enc_dim: int,
        dec_dim: int,
        out_dim: int = 512,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
    ) -> None:
        super().__init__()
        for name, v in (
            ("cls_dim", cls_dim),
            ("enc_dim", enc_dim),
            ("dec_dim", dec_dim),
            ("out_dim", out_dim),
            ("hidden_dim", hidden_dim),
            ("bottleneck_dim", bottleneck_dim),
        ):
            if v < 1:
                raise ValueError(f"AliceHead {name} must be >= 1, got {v}")
        self.enc_proj = nn.Linear(enc_dim, cls_dim)
        self.dec_proj = nn.Linear(dec_dim, cls_dim)
        self.mlp = nn.Sequential(
            nn.Linear(cls_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        self.apply(self._init)
        self.last_layer = _normed_last_layer(bottleneck_dim, out_dim)
        self.last_layer_tokens = _normed_last_layer(bottleneck_dim, out_dim)
        self.out_dim = out_dim

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @staticmethod
    def _last(layer: nn.Linear, x: torch.Tensor, freeze: bool) -> torch.Tensor:
        w = layer.weight
        return F.linear(x, w.detach() if freeze else w)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1, p=2)

    def forward_cls(self, cls: torch.Tensor, freeze_last: bool = False) -> torch.Tensor:
        """(B, cls_dim) -> (B, out_dim) logits."""
        return self._last(self.last_layer, self._embed(cls), freeze_last)

    def forward_tokens(self, tokens: torch.Tensor, source: str, freeze_last: bool = False) -> torch.Tensor:
        """(B, N, C) encoder (``source="enc"``) or decoder (``"dec"``) tokens -> (B, N, out_dim) logits."""
        if source == "enc":
            h = self.enc_proj(tokens)
        elif source == "dec":
            h = self.dec_proj(tokens)
        else:
            raise ValueError(f"source must be 'enc' or 'dec', got {source!r}")
        return self._last(self.last_layer_tokens, self._embed(h), freeze_last)


class AliceNet(nn.Module):
    """Backbone + head: the student; its EMA copy is the teacher."""

    def __init__(self, backbone: Backbone, head: AliceHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self, x: torch.Tensor, freeze_last: bool = False, with_recon: bool = True
    ) -> dict[str, torch.Tensor]:
        """(B, C, S, S, S) -> cls (B, K), enc (B, N_enc, K), dec (B, N_dec, K) [, recon (B, C, S, S, S)]."""
        feats = self.backbone.encode(x)
        deep = feats[-1]
        dec = self.backbone.decode(x, feats)
        out = {
            "cls": self.head.forward_cls(deep.mean(dim=(2, 3, 4)), freeze_last),
            "enc": self.head.forward_tokens(tokens(deep), "enc", freeze_last),
            "dec": self.head.forward_tokens(tokens(dec[0]), "dec", freeze_last),
        }
        if with_recon:
            out["recon"] = self.backbone.reconstruct(dec[-1])
        return out
