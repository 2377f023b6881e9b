"""MRI intensity augmentation in normalised terms: gamma, bias field, contrast (``data.modality=mri``).

An MRI has no absolute intensity scale: ``data.modality=mri`` maps each scan's ``mri_percentiles`` to
[0, 1] (:mod:`anatssl.data.presets`), and what differs between two scanners, coils or sequences for the
same anatomy is (i) the relative brightness of tissues (a monotone but non-linear curve: gamma),
(ii) a smooth multiplicative *bias field* from the receive coils' inhomogeneity (Sled et al. 1998;
Van Leemput et al. 1999), and (iii) the overall gain (contrast). :class:`MRIIntensity` draws one of each
per call, in that physical order, from the view's ``rng``::

    x -> contrast * exp(field(r)) * gamma_curve(x)

Every method's views apply it when ``data.modality=mri`` (:func:`mri_intensity` returns it) and not at
all for CT, so the CT views stay bit-identical (no random number is drawn for CT). Nothing here knows
about HU: air/background is 0 and stays 0 (every step is multiplicative or fixes the minimum), and the
brightest tissue sits near 1.

MONAI's transforms are reused on these (C, X, Y, Z) numpy arrays: ``AdjustContrast`` for gamma and
``RandBiasField`` for the field (its Legendre-polynomial field, ``x * exp(field)``, NiftyNet's). MONAI's
random transforms draw from their own ``RandomState``; this class seeds it from the view's numpy
``Generator`` before each call, so every random number still follows from the per-sample ``rng`` (a
resumed run sees the same views).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from anatssl.config.schema import DataConfig


@dataclass(frozen=True)
class MRIIntensity:
    """Picklable ``(x (C, X, Y, Z) float32 in ~[0, 1], rng) -> same shape`` MRI intensity augmentation.

    Args:
        gamma: range of the gamma exponent, drawn log-uniformly (so 0.7 and 1/0.7 are as likely), one
            per channel (sequences differ independently). ``x -> ((x - m) / r) ** g * r + m`` with the
            crop's min ``m`` and range ``r`` (MONAI ``AdjustContrast``): monotone, keeps the range.
            (0.7, 1.4) moves mid-grey 0.5 to 0.38-0.62, about the spread of the grey/white matter
            contrast of T1 scans across scanners and field strengths. (1, 1) = off.
        bias_field: largest absolute coefficient of the bias field's Legendre polynomials (MONAI
            ``RandBiasField``, ``coeff_range = (-bias_field, bias_field)``, degree ``bias_degree``);
            the field is ``exp(sum_k c_k P_k(x) P_k(y) P_k(z))`` over the crop's extent, the same for
            every channel (one coil). With degree 3 (20 coefficients), 0.05 gives factors from about
            0.82 to 1.22 across a crop (medians over draws; 5-95 % of draws: lowest 0.72-0.90,
            highest 1.11-1.41), the inhomogeneity of an uncorrected 1.5-3 T head scan. 0 = off.
        bias_degree: polynomial degree of the field (3: smooth over the crop, MONAI's default).
        contrast: range of the overall gain, drawn uniformly, one per call. (1, 1) = off.
    """

    gamma: tuple[float, float] = (0.7, 1.4)
    bias_field: float = 0.05
    bias_degree: int = 3
    contrast: tuple[float, float] = (0.9, 1.1)

    def __post_init__(self) -> None:
        lo, hi = self.gamma
        if not 0 < lo <= hi:
            raise ValueError(f"gamma range must satisfy 0 < low <= high, got {tuple(self.gamma)}")
        if not (math.isfinite(self.bias_field) and self.bias_field >= 0):
            raise ValueError(f"bias_field must be a coefficient >= 0 (0 = off), got {self.bias_field}")
        if self.bias_degree < 1:
            raise ValueError(f"bias_degree must be >= 1, got {self.bias_degree}")
        clo, chi = self.contrast
        if not 0 < clo <= chi:
            raise ValueError(f"contrast range must satisfy 0 < low <= high, got {tuple(self.contrast)}")

    def draw_gamma(self, rng: np.random.Generator, channels: int) -> np.ndarray:
        """(C,) gamma exponents, log-uniform in ``self.gamma``."""
        lo, hi = self.gamma
        return np.exp(rng.uniform(math.log(lo), math.log(hi), size=channels))

    def bias(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """(X, Y, Z) positive multiplicative field ``exp(legendre polynomial)`` (MONAI ``RandBiasField``);
        all ones when ``bias_field`` is 0. Draws one number from ``rng`` either way."""
        from monai.transforms import RandBiasField

        seed = int(rng.integers(0, 2**32))
        if self.bias_field == 0:
            return np.ones(shape, dtype=np.float32)
        t = RandBiasField(degree=self.bias_degree, coeff_range=(-self.bias_field, self.bias_field), prob=1.0)
        t.set_random_state(seed=seed)
        return np.asarray(t(np.ones((1, *shape), dtype=np.float32)))[0]

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gamma per channel, then the bias field, then the gain. The same count of numbers is drawn
        from ``rng`` whatever the settings, so switching a part off leaves the rest of a view (its
        geometry, later random choices) as it was."""
        from monai.transforms import AdjustContrast

        x = np.asarray(x, dtype=np.float32)
        gammas = self.draw_gamma(rng, x.shape[0])
        out = np.empty_like(x)
        for c, g in enumerate(gammas):
            out[c] = x[c] if g == 1 else np.asarray(AdjustContrast(float(g))(x[c]))
        out = out * self.bias(x.shape[1:], rng)
        out = out * np.float32(rng.uniform(*self.contrast))
        return out.astype(np.float32, copy=False)

    def apply_each(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(K, C, X, Y, Z) -> same shape, an independent draw for each of the K crops."""
        return np.stack([self(b, rng) for b in batch]) if len(batch) else batch


def mri_intensity(data: DataConfig) -> MRIIntensity | None:
    """The views' MRI intensity augmentation for this ``data`` section: ``None`` for CT (views unchanged).

    Raises:
        ValueError: through :class:`MRIIntensity` for impossible ``data.mri_*`` ranges.
    """
    if data.modality != "mri":
        return None
    return MRIIntensity(
        gamma=tuple(data.mri_gamma),  # type: ignore[arg-type]
        bias_field=float(data.mri_bias_field),
        contrast=tuple(data.mri_contrast),  # type: ignore[arg-type]
    )
