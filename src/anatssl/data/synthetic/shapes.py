"""Analytic shape primitives of the phantom, as (approximate) signed distance functions in mm.

Every ``sdf(x, y, z)`` takes arrays of canonical body-frame coordinates (mm, any common shape) and
returns the signed distance (negative inside) with the same shape; ``bbox()`` bounds the shape so the
phantom evaluates each organ only on the sub-block of the grid that can contain it. Distances are
approximate away from the surface but exact in sign, which is all the painting needs; where a layer
thickness matters (kidney cortex, bone cortex) the approximation is good within a few mm of the surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """(3, 3) rotation ``Rz @ Ry @ Rx`` for angles in radians."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def axis_frame(axis: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """(3, 3) rotation whose third column is ``axis`` (normalised) and first column lies in the plane of
    ``axis`` and ``ref`` (default: x, or y when ``axis`` is nearly parallel to x)."""
    w = np.asarray(axis, dtype=np.float64)
    w = w / np.linalg.norm(w)
    r = np.array([1.0, 0.0, 0.0]) if ref is None else np.asarray(ref, dtype=np.float64)
    if abs(float(np.dot(r, w))) > 0.95:
        r = np.array([0.0, 1.0, 0.0])
    u = r - np.dot(r, w) * w
    u /= np.linalg.norm(u)
    v = np.cross(w, u)
    return np.stack([u, v, w], axis=1)


@dataclass
class Ellipsoid:
    """Rotated ellipsoid: ``centre`` (3,) mm, ``radii`` (3,) mm along the columns of ``rot`` (3, 3)."""

    centre: np.ndarray
    radii: np.ndarray
    rot: np.ndarray

    def local(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
        """Canonical -> ellipsoid-frame coordinates (mm, not normalised)."""
        cx, cy, cz = (float(v) for v in self.centre)
        dx, dy, dz = x - cx, y - cy, z - cz
        R = self.rot.astype(np.float32)
        return tuple(R[0, i] * dx + R[1, i] * dy + R[2, i] * dz for i in range(3))

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Quilez's ellipsoid bound ``k0 (k0 - 1) / k1`` with ``k0 = |q/r|``, ``k1 = |q/r^2|``."""
        u, v, w = self.local(x, y, z)
        r = self.radii.astype(np.float32)
        a, b, c = u / r[0], v / r[1], w / r[2]
        k0 = np.sqrt(a * a + b * b + c * c)
        k1 = np.sqrt((a / r[0]) ** 2 + (b / r[1]) ** 2 + (c / r[2]) ** 2)
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)

    def norm(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Normalised radius ``|q / r|`` (1 on the surface)."""
        u, v, w = self.local(x, y, z)
        r = self.radii.astype(np.float32)
        return np.sqrt((u / r[0]) ** 2 + (v / r[1]) ** 2 + (w / r[2]) ** 2)

    def point(self, uvw: np.ndarray) -> np.ndarray:
        """Ellipsoid-frame point in radius units (e.g. (0, 0, 0.85): near the +w pole) -> canonical mm."""
        return self.centre + self.rot @ (np.asarray(uvw, dtype=np.float64) * self.radii)

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        half = np.sqrt(((self.rot * self.radii[None, :]) ** 2).sum(axis=1))
        return self.centre - half, self.centre + half


@dataclass
class Tube:
    """A tube along a polyline: ``points`` (N, 3) mm with ``radii`` (N,) mm, linearly interpolated
    radius along each segment (a chain of round cones, approximated by capsules of varying radius)."""

    points: np.ndarray
    radii: np.ndarray

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        out = np.full(np.shape(x), np.inf, dtype=np.float32)
        for i in range(len(self.points) - 1):
            a, b = self.points[i].astype(np.float32), self.points[i + 1].astype(np.float32)
            ab = b - a
            L2 = float(np.dot(ab, ab))
            px, py, pz = x - a[0], y - a[1], z - a[2]
            t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / L2, 0.0, 1.0)
            dx, dy, dz = px - t * ab[0], py - t * ab[1], pz - t * ab[2]
            r = float(self.radii[i]) + t * float(self.radii[i + 1] - self.radii[i])
            np.minimum(out, np.sqrt(dx * dx + dy * dy + dz * dz) - r, out=out)
        return out

    def segments(self) -> list[Tube]:
        """The polyline's segments as two-point tubes (each paints on its own small grid block)."""
        return [Tube(self.points[i : i + 2], self.radii[i : i + 2]) for i in range(len(self.points) - 1)]

    def point(self, s: float) -> np.ndarray:
        """Point at arc-length fraction ``s`` in [0, 1] along the centreline (canonical mm)."""
        seg = np.linalg.norm(np.diff(self.points, axis=0), axis=1)
        cum = np.concatenate([[0.0], np.cumsum(seg)])
        d = s * cum[-1]
        i = int(np.clip(np.searchsorted(cum, d) - 1, 0, len(seg) - 1))
        t = (d - cum[i]) / max(seg[i], 1e-9)
        return self.points[i] + t * (self.points[i + 1] - self.points[i])

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        r = float(np.max(self.radii))
        return self.points.min(axis=0) - r, self.points.max(axis=0) + r


def superellipse_distance(
    x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, n: np.ndarray | float
) -> np.ndarray:
    """Radial signed distance (mm) to the superellipse ``|x/a|^n + |y/b|^n = 1`` (the body outline):
    ``rho (1 - 1/r)`` with ``rho = |(x, y)|`` and ``r`` the superellipse radius, exact along rays from
    the centre, which is what the skin/fat/muscle layers need."""
    r = (np.abs(x / a) ** n + np.abs(y / b) ** n) ** (1.0 / n)
    rho = np.sqrt(x * x + y * y)
    return rho * (1.0 - 1.0 / np.maximum(r, 1e-6))
