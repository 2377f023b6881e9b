"""Where the organs of one synthetic subject are, in the canonical body frame.

The canonical frame is RAS in mm: ``x`` towards the patient's right, ``y`` anterior, ``z`` superior,
``x = y = 0`` on the body axis and ``z = 0`` near the L2/L3 disc. Positions and sizes are an average
adult's (vertebral levels: T1 at z ~ 364, L5 at z ~ -80; right diaphragm dome at T8/T9; kidneys from
T12 to L3; aortic bifurcation at L4; bladder behind the pubis) and each subject draws them with a few
mm to a few cm of jitter, sizes with +-10-20 %, so organs differ in size, position and shape between
subjects before the global scaling and elastic deformation (``subject.py``) are applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anatssl.data.synthetic.labels import VERTEBRAE
from anatssl.data.synthetic.shapes import Ellipsoid, Tube, axis_frame, rotation

# Canonical vertebral body centres (z, mm) for C3..L5 and body half sizes (x, y, z).
_VERT_Z = np.array(
    [
        454,
        437,
        420,
        402,
        384,
        364,
        343,
        321,
        298,
        275,
        251,
        227,
        202,
        176,
        149,
        121,
        91,
        59,
        25,
        -10,
        -45,
        -80,
    ],
    dtype=np.float64,
)
_VERT_RX = np.interp(_VERT_Z, [-80, 91, 251, 364, 454], [25, 21, 16, 14, 12])
_VERT_RY = np.interp(_VERT_Z, [-80, 91, 251, 364, 454], [18, 16, 14, 11, 8])
_VERT_HH = np.interp(_VERT_Z, [-80, 91, 251, 364, 454], [13, 11, 9, 7, 6])
# Sagittal curve of the vertebral body centres (lumbar lordosis, thoracic kyphosis): z -> y (mm).
_SPINE_Z = np.array([-220, -110, -80, -10, 60, 150, 230, 330, 420, 520], dtype=np.float64)
_SPINE_Y = np.array([-70, -45, -35, -32, -40, -52, -58, -52, -40, -32], dtype=np.float64)
# Inner body outline (outer surface of the body-wall muscle), half width / half depth (mm) along z.
_BODY_Z = np.array([-260, -200, -120, -40, 60, 160, 260, 360, 440, 520], dtype=np.float64)
_BODY_A = np.array([140, 145, 140, 132, 130, 134, 142, 144, 140, 128], dtype=np.float64)
_BODY_B = np.array([98, 98, 94, 92, 92, 96, 102, 100, 94, 84], dtype=np.float64)


@dataclass
class Spine:
    names: tuple[str, ...]
    zc: np.ndarray
    """(L,) vertebral body centres, cranial to caudal (canonical z, mm)."""
    rx: np.ndarray
    ry: np.ndarray
    hh: np.ndarray
    curve_z: np.ndarray
    curve_y: np.ndarray

    def y_at(self, z: np.ndarray | float) -> np.ndarray:
        """Body-centre y (mm) of the spine at height z."""
        return np.interp(z, self.curve_z, self.curve_y)

    def ry_at(self, z: np.ndarray | float) -> np.ndarray:
        return np.interp(z, self.zc[::-1], self.ry[::-1])

    def level_z(self, name: str) -> float:
        return float(self.zc[self.names.index(name)])


@dataclass
class Anatomy:
    """All shape parameters of one subject (canonical mm). Built by :func:`sample_anatomy`."""

    body_z: np.ndarray
    body_a: np.ndarray
    body_b: np.ndarray
    belly: float
    """Front half-depth = ``belly * body_b`` (abdominal protrusion)."""
    fat_mm: float
    """Mean subcutaneous fat thickness."""
    muscle_mm: float
    """Body-wall muscle thickness."""
    spine: Spine
    dome_right: np.ndarray
    dome_left: np.ndarray
    dome_radius: float
    lung_apex_z: float
    heart: Ellipsoid
    liver: tuple[Ellipsoid, Ellipsoid]
    spleen: Ellipsoid
    stomach: Ellipsoid
    kidney_right: Ellipsoid
    kidney_left: Ellipsoid
    hilum_right: Ellipsoid
    hilum_left: Ellipsoid
    pancreas: Tube
    bladder: Ellipsoid
    aorta: Tube
    iliac_arteries: tuple[Tube, Tube]
    ivc: Tube
    trachea: tuple[Tube, Tube, Tube]
    psoas: tuple[Tube, Tube]
    paraspinal: tuple[Tube, Tube]
    iliac_wings: tuple[Ellipsoid, Ellipsoid]
    sacrum: Ellipsoid
    pubis_centre: np.ndarray
    pubis_axes: np.ndarray
    rib_drop: float
    rib_radius: float

    def diaphragm_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height (mm) of the diaphragm above (x, y): two paraboloid domes, deeper posteriorly (the
        costophrenic recesses reach T11-T12)."""
        out = None
        for d in (self.dome_right, self.dome_left):
            dx, dy = x - float(d[0]), y - float(d[1])
            dy2 = np.where(dy < 0, 1.8, 1.0).astype(np.float32) * dy * dy
            h = float(d[2]) - (dx * dx + dy2) / (2.0 * self.dome_radius)
            out = h if out is None else np.maximum(out, h)
        assert out is not None
        return out

    def landmarks(self) -> dict[str, np.ndarray]:
        """Canonical (mm) positions of the named landmarks, each a few mm inside its structure."""
        sp = self.spine
        lm: dict[str, np.ndarray] = {}
        for name, z in zip(sp.names, sp.zc):
            if name.startswith(("T", "L")):
                lm[f"vertebra_{name}"] = np.array([0.0, float(sp.y_at(z)), float(z)])
        for side, k in (("right", self.kidney_right), ("left", self.kidney_left)):
            lm[f"kidney_{side}_upper_pole"] = k.point(np.array([0.0, 0.0, 0.8]))
            lm[f"kidney_{side}_lower_pole"] = k.point(np.array([0.0, 0.0, -0.8]))
        d = self.dome_right
        lm["liver_dome"] = np.array([d[0], d[1], float(self.diaphragm_z(d[0], d[1])) - 10.0])
        lm["spleen_tip"] = self.spleen.point(np.array([0.0, 0.0, 0.7]))
        lm["heart_apex"] = self.heart.point(np.array([0.0, 0.0, 0.8]))
        bif = self.aorta.points[-1]
        lm["aortic_bifurcation"] = bif + np.array([0.0, 0.0, 4.0])
        lm["carina"] = self.trachea[0].points[-1].copy()
        for side, s in (("right", 1.0), ("left", -1.0)):
            lm[f"lung_{side}_apex"] = np.array([s * 65.0, -10.0, self.lung_apex_z - 12.0])
        lm["pancreas_head"] = self.pancreas.points[0].copy()
        lm["bladder_centre"] = self.bladder.centre.copy()
        c, ax = self.pubis_centre, self.pubis_axes
        lm["pubic_symphysis"] = np.array([c[0], c[1] + ax[1], c[2]])
        return lm


def _ellipsoid(
    rng: np.random.Generator,
    centre: tuple[float, float, float],
    radii: tuple[float, float, float],
    axis: tuple[float, float, float] | None = None,
    pos_sd: float = 6.0,
    size_sd: float = 0.08,
    angle_sd: float = 0.1,
    ref: tuple[float, float, float] | None = None,
) -> Ellipsoid:
    """Jittered ellipsoid: centre + N(0, pos_sd) mm, radii * (1 + N(0, size_sd)) (clipped to +-25 %),
    long (third) axis ``axis`` tilted by N(0, angle_sd) rad about x, y, z."""
    c = np.asarray(centre, dtype=np.float64) + rng.normal(0.0, pos_sd, 3)
    r = np.asarray(radii, dtype=np.float64) * np.clip(1.0 + rng.normal(0.0, size_sd, 3), 0.75, 1.25)
    base = axis_frame(
        np.asarray(axis if axis is not None else (0.0, 0.0, 1.0)),
        ref=None if ref is None else np.asarray(ref),
    )
    return Ellipsoid(c, r, rotation(*rng.normal(0.0, angle_sd, 3)) @ base)


def _jitter(rng: np.random.Generator, pts: list[tuple[float, float, float]], sd: float) -> np.ndarray:
    return np.asarray(pts, dtype=np.float64) + rng.normal(0.0, sd, (len(pts), 3))


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one subject's anatomy (canonical frame, before global scaling and elastic deformation)."""
    # Spine: level spacing varies +-6 % between subjects, +-2 mm per level.
    stretch = rng.uniform(0.94, 1.06)
    zc = _VERT_Z * stretch + rng.normal(0.0, 1.5, _VERT_Z.shape)
    curve_y = _SPINE_Y + rng.normal(0.0, 3.0, _SPINE_Y.shape)
    size = rng.uniform(0.9, 1.1)
    spine = Spine(
        VERTEBRAE, zc, _VERT_RX * size, _VERT_RY * size, _VERT_HH * stretch, _SPINE_Z * stretch, curve_y
    )

    def spine_front(z: float, gap: float) -> float:
        return float(spine.y_at(z) + spine.ry_at(z) + gap)

    belly = rng.uniform(0.9, 1.2)
    dome_r = np.array([55.0, 0.0, 190.0]) + rng.normal(0.0, [8.0, 8.0, 10.0])
    dome_l = np.array([-60.0, 0.0, 178.0]) + rng.normal(0.0, [8.0, 8.0, 10.0])

    heart = _ellipsoid(rng, (-15, 30, 242), (44, 38, 62), axis=(-0.5, 0.4, -0.75), pos_sd=6.0)
    liver = (
        _ellipsoid(rng, (60, 5, 138), (85, 90, 96), pos_sd=6.0),
        _ellipsoid(rng, (-20, 45, 152), (55, 32, 40), pos_sd=6.0),
    )
    spleen = _ellipsoid(rng, (-95, -38, 128), (20, 36, 58), axis=(0.0, 0.6, -0.8), ref=(1, 0, 0))
    stomach = _ellipsoid(rng, (-50, 40, 135), (36, 32, 62), axis=(0.45, 0.3, -0.85))
    kr = _ellipsoid(rng, (68, -35, 55), (26, 22, 55), axis=(-0.2, -0.2, 1.0), ref=(1, 0, 0), pos_sd=7.0)
    kl = _ellipsoid(rng, (-68, -35, 68), (26, 22, 55), axis=(0.2, -0.2, 1.0), ref=(1, 0, 0), pos_sd=7.0)

    def hilum(k: Ellipsoid, medial: float) -> Ellipsoid:
        c = k.centre + np.array([medial * 0.95 * k.radii[0], 6.0, -5.0])
        return Ellipsoid(c, np.array([13.0, 11.0, 0.42 * k.radii[2]]), k.rot)

    pancreas = Tube(
        _jitter(rng, [(28, 24, 68), (5, 34, 82), (-35, 26, 95), (-70, 2, 108)], 4.0),
        np.array([15.0, 11.0, 10.0, 8.0]) * rng.uniform(0.85, 1.15),
    )
    fill = rng.uniform(0.6, 1.2)
    bladder = _ellipsoid(rng, (0, 30, -222 + 36 * fill), (45 * fill, 38 * fill, 36 * fill), pos_sd=4.0)

    # Aorta: ascending from the heart, arch to the left of the trachea, descending in front of the spine.
    z_bif = float(spine.level_z("L4") + rng.normal(0.0, 6.0))
    desc = [(-26.0, spine_front(z, -4.0), z) for z in (300.0, 220.0, 140.0)]
    desc += [(-16.0, spine_front(z, 12.0), z) for z in (60.0, 0.0)]
    aorta = Tube(
        np.array(
            [
                *_jitter(rng, [(-2, 30, 268), (-6, 34, 318), (-20, 18, 350), (-28, -12, 346)], 2.0),
                *desc,
                (-12.0, spine_front(z_bif, 12.0), z_bif),
            ]
        ),
        np.array([14, 14, 13, 12.5, 12, 11.5, 11, 10, 10, 9.5]) * rng.uniform(0.85, 1.15),
    )
    bif = aorta.points[-1]
    iliac = tuple(
        Tube(np.array([bif, [s * 55.0, spine_front(-150.0, 30.0), -160.0]]), np.array([6.5, 6.0]))
        for s in (1.0, -1.0)
    )
    ivc = Tube(
        _jitter(
            rng,
            [
                (18, spine_front(-40, 12), -40),
                (22, spine_front(60, 14), 60),
                (28, -5, 150),
                (15, 15, 205),
            ],
            3.0,
        ),
        np.full(4, 11.0) * rng.uniform(0.85, 1.15),
    )
    z_car = float(spine.level_z("T4") + rng.normal(0.0, 6.0))
    y_tr = spine_front(z_car, 18.0)
    carina = np.array([4.0, y_tr, z_car])
    trachea = (
        Tube(np.array([[4.0, spine_front(520.0, 18.0), 520.0], carina]), np.array([9.0, 9.0])),
        Tube(np.array([carina, carina + [36.0, -5.0, -28.0]]), np.array([7.0, 6.0])),
        Tube(np.array([carina, carina + [-40.0, -5.0, -32.0]]), np.array([6.5, 5.5])),
    )
    psoas = tuple(
        Tube(
            np.array(
                [
                    (s * 28, spine_front(95, -16), 95),
                    (s * 38, spine_front(20, -14), 20),
                    (s * 50, spine_front(-60, -6), -60),
                    (s * 62, spine_front(-140, 20), -140),
                    (s * 72, 20, -200),
                ]
            ),
            np.array([7.0, 15.0, 21.0, 21.0, 17.0]) * rng.uniform(0.8, 1.2),
        )
        for s in (1.0, -1.0)
    )
    para_z = [-140.0, -60.0, 20.0, 100.0, 200.0, 300.0, 400.0, 520.0]
    paraspinal = tuple(
        Tube(
            np.array([(s * 30, float(spine.y_at(z)) - 50, z) for z in para_z]),
            np.array([16, 22, 23, 21, 17, 15, 14, 13], dtype=np.float64) * rng.uniform(0.85, 1.15),
        )
        for s in (1.0, -1.0)
    )
    wings = tuple(
        _ellipsoid(rng, (s * 45, 0, -118), (85, 70, 62), pos_sd=3.0, size_sd=0.05, angle_sd=0.05)
        for s in (1.0, -1.0)
    )
    sacrum = _ellipsoid(
        rng, (0, spine_front(-150, -30), -150), (40, 16, 55), axis=(0, 0.45, 1.0), pos_sd=3.0, angle_sd=0.05
    )
    return Anatomy(
        body_z=_BODY_Z * stretch,
        body_a=_BODY_A * rng.uniform(0.92, 1.05),
        body_b=_BODY_B.copy(),
        belly=float(belly),
        fat_mm=float(rng.uniform(6.0, 30.0)),
        muscle_mm=float(rng.uniform(8.0, 14.0)),
        spine=spine,
        dome_right=dome_r,
        dome_left=dome_l,
        dome_radius=float(rng.uniform(95.0, 125.0)),
        lung_apex_z=float(400.0 * stretch + rng.normal(0.0, 8.0)),
        heart=heart,
        liver=liver,
        spleen=spleen,
        stomach=stomach,
        kidney_right=kr,
        kidney_left=kl,
        hilum_right=hilum(kr, -1.0),
        hilum_left=hilum(kl, 1.0),
        pancreas=pancreas,
        bladder=bladder,
        aorta=aorta,
        iliac_arteries=iliac,  # type: ignore[arg-type]
        ivc=ivc,
        trachea=trachea,
        psoas=psoas,  # type: ignore[arg-type]
        paraspinal=paraspinal,  # type: ignore[arg-type]
        iliac_wings=wings,  # type: ignore[arg-type]
        sacrum=sacrum,
        pubis_centre=np.array([0.0, 25.0, -205.0]) + rng.normal(0.0, 3.0, 3),
        pubis_axes=np.array([78.0, 50.0]) * rng.uniform(0.92, 1.08),
        rib_drop=float(rng.uniform(90.0, 120.0)),
        rib_radius=float(rng.uniform(4.0, 5.5)),
    )
