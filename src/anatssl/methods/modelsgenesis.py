"""``modelsgenesis``: restore the original sub-volume from a corrupted one (Zhou et al., "Models Genesis:
Generic Autodidactic Models for 3D Medical Image Analysis", MICCAI 2019; extended in Medical Image
Analysis 67, 2021; public code MrGiovanni/ModelsGenesis).

Views (:class:`~anatssl.views.modelsgenesis.ModelsGenesisViews`): a random crop, flipped with the target,
then corrupted in the public code's order with its probabilities: local pixel shuffling (0.5), a
non-linear intensity transform through a random monotone Bezier curve (0.9), and in-painting (0.9 x 0.2)
or out-painting (0.9 x 0.8). One step: the whole encoder-decoder of the shared backbone (``encode``,
``decode``, ``reconstruct``: the backbone's reconstruction contract, as ``simmim.head=backbone``) maps
the corrupted crop to a restoration, squashed by a sigmoid (the public U-Net's output layer; targets are
intensities in [0, 1]), and the loss is the MSE to the original crop over all voxels. Encoder and decoder
are both pretrained, as the paper's U-Net is.

Logged terms: ``mse`` and the share of the batch that got each corruption (``p_local``,
``p_nonlinear``, ``p_inpaint``, ``p_outpaint``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from anatssl.config.schema import PretrainConfig
from anatssl.errors import ConfigError
from anatssl.losses.reconstruction import restoration_mse
from anatssl.methods.base import SSLMethod, register_method
from anatssl.models.backbones import build_backbone
from anatssl.views.intensity import mri_intensity
from anatssl.views.modelsgenesis import ModelsGenesisViews


@dataclass
class ModelsGenesisConfig:
    """The ``modelsgenesis:`` section of a preset. Rates are the public code's (``pytorch/config.py``)."""

    crop_size: tuple[int, int, int] = (64, 64, 32)
    """The public code's sub-volume (64 x 64 x 32); a multiple of the backbone's input multiple."""
    flip_rate: float = 0.4
    """Flip input and target together along a random axis while U < flip_rate (3 at most)."""
    local_rate: float = 0.5
    """Probability of local pixel shuffling."""
    shuffle_blocks: int = 10_000
    """Blocks shuffled per sub-volume (public code: 10,000)."""
    nonlinear_rate: float = 0.9
    """Probability of the Bezier intensity transform."""
    nonlinear_invert_rate: float = 0.5
    """Share of the intensity transforms whose curve is inverted ((0, 1) -> (1, 0); public code: 0.5)."""
    paint_rate: float = 0.9
    """Probability of in- or out-painting."""
    inpaint_rate: float = 0.2
    """Given painting, the probability of in-painting (public code: 1 - outpaint_rate = 0.2)."""
    output_sigmoid: bool = True
    """Squash the restoration into (0, 1) (the public U-Net's sigmoid output layer)."""

    def __post_init__(self) -> None:
        rates = {
            "flip_rate": self.flip_rate,
            "local_rate": self.local_rate,
            "nonlinear_rate": self.nonlinear_rate,
            "nonlinear_invert_rate": self.nonlinear_invert_rate,
            "paint_rate": self.paint_rate,
            "inpaint_rate": self.inpaint_rate,
        }
        for key, value in rates.items():
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"modelsgenesis.{key} = {value!r}; must be a probability in [0, 1]")
        if self.shuffle_blocks < 0:
            raise ConfigError(f"modelsgenesis.shuffle_blocks = {self.shuffle_blocks!r}; must be >= 0")
        if len(self.crop_size) != 3 or min(self.crop_size) < 10:
            raise ConfigError(
                f"modelsgenesis.crop_size = {tuple(self.crop_size)}; need 3 sizes of at least 10 voxels "
                "(the painting boxes keep 3 voxels from each border)"
            )


@register_method("modelsgenesis")
class ModelsGenesis(SSLMethod):
    config_cls = ModelsGenesisConfig

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__(cfg)
        hp: ModelsGenesisConfig = cfg.params
        self.hp = hp
        self.backbone = build_backbone(cfg.model)
        self.backbone.check_input(tuple(hp.crop_size), "modelsgenesis.crop_size")
        self._views = ModelsGenesisViews(
            tuple(hp.crop_size),  # type: ignore[arg-type]
            hp.flip_rate,
            hp.local_rate,
            hp.shuffle_blocks,
            hp.nonlinear_rate,
            hp.nonlinear_invert_rate,
            hp.paint_rate,
            hp.inpaint_rate,
            mri_intensity(cfg.data),
        )
        self.min_volume_shape = tuple(hp.crop_size)

    @property
    def views(self) -> ModelsGenesisViews:
        return self._views

    def encoder(self) -> nn.Module:
        return self.backbone

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, X, Y, Z) corrupted crop -> (B, C, X, Y, Z) restoration (in (0, 1) with the sigmoid)."""
        out = self.backbone.reconstruct(self.backbone.decode(x, self.backbone.encode(x))[-1])
        return torch.sigmoid(out) if self.hp.output_sigmoid else out

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        mse = restoration_mse(self.restore(batch["x"]), batch["target"])
        applied = batch["applied"].float().mean(dim=0)
        return {
            "loss": mse,
            "mse": mse.detach(),
            "p_local": applied[0],
            "p_nonlinear": applied[1],
            "p_inpaint": applied[2],
            "p_outpaint": applied[3],
        }
