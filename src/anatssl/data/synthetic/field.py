"""Smooth random fields on a voxel grid: cubic B-spline upsampling of a coarse random lattice.

A field is ``sum_ijk Bx_i(x) By_j(y) Bz_k(z) C_ijk`` with cubic B-spline weights on a coarse control
lattice ``C`` (the free-form deformation model of Rueckert et al., IEEE TMI 1999). Because the weights are
separable, a ``(X, Y, Z)`` field costs three small matrix products instead of a spline filter over the
whole volume (about 5 ms at 96^3), and the same weights evaluate it at arbitrary points, which the
landmark mapping needs to invert the deformation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def bspline3(t: np.ndarray) -> np.ndarray:
    """Cubic B-spline kernel (support |t| < 2, integral 1)."""
    a = np.abs(t)
    out = np.where(a < 1.0, (4.0 - 6.0 * a**2 + 3.0 * a**3) / 6.0, 0.0)
    return np.where((a >= 1.0) & (a < 2.0), (2.0 - a) ** 3 / 6.0, out)


def bspline_weights(pos_mm: np.ndarray, start_mm: float, step_mm: float, n_ctrl: int) -> np.ndarray:
    """(P,) positions in mm -> (P, n_ctrl) float32 cubic B-spline weights of control points at
    ``start_mm + j * step_mm``."""
    u = (np.asarray(pos_mm, dtype=np.float64) - start_mm) / step_mm
    return bspline3(u[:, None] - np.arange(n_ctrl)[None, :]).astype(np.float32)


@dataclass
class SmoothField:
    """A smooth random scalar or vector field over a world-mm box.

    ``coeffs``: (K, nx, ny, nz) control values (K components), control point j of axis a at
    ``start[a] + j * step[a]`` mm. The lattice extends one step beyond the box on every side so the
    field has no edge fall-off inside the box.
    """

    coeffs: np.ndarray
    start: np.ndarray
    step: np.ndarray

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        lo_mm: np.ndarray,
        hi_mm: np.ndarray,
        wavelength_mm: float,
        components: int = 1,
    ) -> SmoothField:
        """Control points every ``wavelength_mm / 2`` with N(0, 1) values, rescaled so the field has
        unit standard deviation (B-spline smoothing shrinks it by ~0.45 in 3D)."""
        lo = np.asarray(lo_mm, dtype=np.float64)
        hi = np.asarray(hi_mm, dtype=np.float64)
        step = np.full(3, wavelength_mm / 2.0)
        n = np.maximum(np.ceil((hi - lo) / step).astype(int) + 3, 4)
        start = lo - step
        coeffs = rng.standard_normal((components, *n)).astype(np.float32)
        # Var of sum_j B(t-j) c_j over t: sum_j B(t-j)^2 ~ 0.479 per axis on average.
        coeffs /= np.float32(0.479**1.5)
        return cls(coeffs, start, step)

    def on_grid(self, axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """Evaluate on the tensor grid ``axes_mm`` (three 1D world-mm axes) -> (K, X, Y, Z) float32."""
        k, nx, ny, nz = self.coeffs.shape
        wx, wy, wz = (
            bspline_weights(axes_mm[a], self.start[a], self.step[a], self.coeffs.shape[1 + a])
            for a in range(3)
        )
        X, Y, Z = len(axes_mm[0]), len(axes_mm[1]), len(axes_mm[2])
        out = np.empty((k, X, Y, Z), dtype=np.float32)
        for c in range(k):
            t = (wx @ self.coeffs[c].reshape(nx, ny * nz)).reshape(X, ny, nz)  # (X, ny, nz)
            t = (t.transpose(0, 2, 1).reshape(X * nz, ny) @ wy.T).reshape(X, nz, Y)  # (X, nz, Y)
            t = t.transpose(0, 2, 1).reshape(X * Y, nz) @ wz.T  # (X*Y, Z)
            out[c] = t.reshape(X, Y, Z)
        return out

    def at_points(self, pts_mm: np.ndarray) -> np.ndarray:
        """(P, 3) world-mm points -> (P, K) field values (float64)."""
        pts = np.atleast_2d(np.asarray(pts_mm, dtype=np.float64))
        u = (pts - self.start) / self.step  # (P, 3) lattice coordinates
        idx, w = [], []
        for a in range(3):  # each point only sees the 4 control points around it per axis
            i = np.floor(u[:, a]).astype(int)[:, None] - 1 + np.arange(4)[None, :]  # (P, 4)
            inside = (i >= 0) & (i < self.coeffs.shape[1 + a])
            w.append(bspline3(u[:, a, None] - i) * inside)
            idx.append(np.clip(i, 0, self.coeffs.shape[1 + a] - 1))
        c = self.coeffs[:, idx[0][:, :, None, None], idx[1][:, None, :, None], idx[2][:, None, None, :]]
        return np.einsum("cpijk,pi,pj,pk->pc", c.astype(np.float64), w[0], w[1], w[2])
