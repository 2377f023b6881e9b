"""Paint one subject's anatomy (labels and noise-free HU) onto a voxel grid.

The grid is given by the canonical body-frame coordinates of its voxels (``Canvas.x/y/z``, already
scaled, rotated and elastically deformed by ``subject.py``), so every structure here is a fixed
analytic shape and the deformation comes for free. Structures are painted in anatomical layering
order, later ones over earlier ones: body wall and cavity filling, muscles, lungs, abdominal organs,
heart, vessels and airway, bones, subcutaneous fat and skin. Each organ is evaluated only on the
sub-block of the grid that can contain it (``Canvas.block``), which keeps a 96^3 subject at a few
hundred milliseconds without a Python loop over voxels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from anatssl.data.synthetic.anatomy import Anatomy
from anatssl.data.synthetic.field import SmoothField
from anatssl.data.synthetic.labels import LABEL_IDS
from anatssl.data.synthetic.shapes import Ellipsoid, superellipse_distance

Block = tuple[slice, slice, slice]


@dataclass
class Canvas:
    """The voxel grid being painted.

    ``x, y, z``: (X, Y, Z) float32 canonical coordinates of each voxel centre, with
    ``canonical = lin @ (world - shift) + sum(f(world) for f in disp)``; ``affine``: voxel -> world
    (4, 4); ``dmax``: bound on the displacement's length over the grid (mm); ``tex``: named smooth
    noise fields (X, Y, Z), unit variance. ``label`` (uint8) and ``hu`` (float32) are painted in place.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    affine: np.ndarray
    lin: np.ndarray
    shift: np.ndarray
    disp: Sequence[SmoothField]
    dmax: float
    tex: dict[str, np.ndarray]
    label: np.ndarray = field(init=False)
    hu: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.label = np.zeros(self.x.shape, dtype=np.uint8)
        self.hu = np.full(self.x.shape, -1000.0, dtype=np.float32)

    def block(self, lo: np.ndarray, hi: np.ndarray) -> Block | None:
        """Voxel sub-block that contains every voxel whose canonical position is in the box [lo, hi]
        (mm), or None if the box is outside the grid."""
        lo = np.asarray(lo, dtype=np.float64) - self.dmax - 1.0
        hi = np.asarray(hi, dtype=np.float64) + self.dmax + 1.0
        corners = np.array(
            [[(lo, hi)[i][0], (lo, hi)[j][1], (lo, hi)[k][2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
        )
        world = self.shift + corners @ np.linalg.inv(self.lin).T
        vox = world @ np.linalg.inv(self.affine[:3, :3]).T + (
            -np.linalg.inv(self.affine[:3, :3]) @ self.affine[:3, 3]
        )
        shape = self.x.shape
        a = np.maximum(np.floor(vox.min(axis=0)).astype(int) - 1, 0)
        b = np.minimum(np.ceil(vox.max(axis=0)).astype(int) + 2, shape)
        if np.any(b <= a):
            return None
        return (slice(a[0], b[0]), slice(a[1], b[1]), slice(a[2], b[2]))

    def coords(self, sl: Block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.x[sl], self.y[sl], self.z[sl]

    def to_world(self, q: np.ndarray, iters: int = 25) -> np.ndarray:
        """(P, 3) canonical mm -> (P, 3) world mm, inverting the deformation by fixed-point iteration
        ``p <- shift + lin^-1 (q - disp(p))`` (a contraction: the displacement gradient is << 1)."""
        q = np.atleast_2d(np.asarray(q, dtype=np.float64))
        inv = np.linalg.inv(self.lin)
        p = self.shift + q @ inv.T
        for _ in range(iters):
            p = self.shift + (q - self.displacement(p)) @ inv.T
        return p

    def displacement(self, p: np.ndarray) -> np.ndarray:
        """(P, 3) world mm -> (P, 3) displacement (mm) at those points."""
        return sum((f.at_points(p) for f in self.disp), np.zeros((len(p), 3)))

    def to_canonical(self, p: np.ndarray) -> np.ndarray:
        """(P, 3) world mm -> (P, 3) canonical mm (the forward map the grid was painted with)."""
        p = np.atleast_2d(np.asarray(p, dtype=np.float64))
        return (p - self.shift) @ self.lin.T + self.displacement(p)

    def paint(self, sl: Block, mask: np.ndarray, label: int | None, hu: float | np.ndarray) -> None:
        """Set ``label`` (None: keep) and ``hu`` (scalar or block-shaped array) where ``mask``."""
        if label is not None:
            self.label[sl][mask] = label
        self.hu[sl][mask] = hu[mask] if isinstance(hu, np.ndarray) else hu


def _shape(
    c: Canvas, bbox: tuple[np.ndarray, np.ndarray], sdf: Callable[..., np.ndarray]
) -> tuple[Block, np.ndarray] | None:
    sl = c.block(*bbox)
    if sl is None:
        return None
    return sl, sdf(*c.coords(sl))


def paint_phantom(c: Canvas, a: Anatomy, H: dict[str, float]) -> None:
    """Paint all structures of ``a`` with tissue values ``H`` (see ``hu.py``) onto ``c``."""
    L = LABEL_IDS
    x, y, z = c.x, c.y, c.z
    tc, tf, tb = c.tex["coarse"], c.tex["fine"], c.tex["bowel"]

    # --- body wall: inner outline (muscle surface), subcutaneous fat outside it, skin outside that.
    A = np.interp(z, a.body_z, a.body_a).astype(np.float32)
    front = y > 0
    B = np.interp(z, a.body_z, a.body_b).astype(np.float32) * np.where(front, a.belly, 1.0).astype(np.float32)
    f_in = superellipse_distance(x, y, A, B, np.where(front, 2.2, 3.2).astype(np.float32))
    fat = np.maximum(a.fat_mm * (1.0 + 0.2 * tc), 3.0).astype(np.float32)
    tm = a.muscle_mm
    full = (slice(None),) * 3
    body = f_in < fat
    c.paint(full, body, None, H["muscle"])
    cavity = f_in < -tm
    c.paint(full, body & ~cavity, L["muscle"], H["muscle"] + 4.0 * tf)
    zd = a.diaphragm_z(x, y)
    chest = cavity & (z > zd)
    abdomen = cavity & (z <= zd)
    bowel = np.abs(tb) < 0.5
    gas = bowel & (c.tex["fine2"] > 1.3) & (tc > -0.3)
    visc = np.where(bowel, H["soft_tissue"] + 8.0 * tf, H["visceral_fat"] + 10.0 * tf)
    visc = np.where(gas, -900.0 + 60.0 * tf, visc)
    c.paint(full, abdomen, 0, visc)
    med = np.where(tb > 1.2, H["soft_tissue"], H["visceral_fat"] + 10.0 * tf)
    c.paint(full, chest, 0, med)
    # Above the lung apices: the root of the neck and the shoulder girdle, muscle with fat planes.
    neck = chest & (z > a.lung_apex_z - 30.0)
    c.paint(full, neck, 0, np.where(tb > 0.9, H["visceral_fat"], H["muscle"] + 4.0 * tf))
    c.paint(full, cavity & (np.abs(z - zd) < 4.0), 0, H["muscle"])  # the diaphragm

    # --- muscles of the back and the psoas.
    for t in (*a.paraspinal, *a.psoas):
        for seg in t.segments():
            r = _shape(c, seg.bbox(), seg.sdf)
            if r is not None:
                sl, f = r
                c.paint(sl, (f < 0) & (f_in[sl] < 0), L["muscle"], H["muscle"] + 4.0 * tf[sl])

    # --- lungs: inside the rib cage, above the diaphragm, below the apex domes, lateral to the mediastinum.
    lo = np.array([-220.0, -160.0, min(a.dome_left[2], a.dome_right[2]) - 160.0])
    hi = np.array([220.0, 160.0, a.lung_apex_z + 5.0])
    lung_sl = c.block(lo, hi)
    if lung_sl is not None:
        sl = lung_sl
        xs, ys, zs = c.coords(sl)
        inside = (f_in[sl] < -(tm + 12.0)) & (zs > zd[sl] + 4.0)
        for name, s in (("lung_right", 1.0), ("lung_left", -1.0)):
            apex = a.lung_apex_z - ((xs - s * 65.0) ** 2 + (ys + 10.0) ** 2) / 70.0  # domed apices
            m = inside & (zs < apex) & (s * (xs + 5.0) > 26.0)
            vessels = np.abs(tf[sl]) < 0.07
            val = H["lung"] - 35.0 * np.clip(ys, -120.0, 60.0) / 100.0 + 12.0 * tc[sl]
            c.paint(sl, m, L[name], np.where(vessels, H["blood"] - 10.0, val))

    # --- abdominal organs (below the diaphragm, inside the cavity).
    def organ(
        bbox: tuple[np.ndarray, np.ndarray], sdf: Callable[..., np.ndarray]
    ) -> tuple[Block, np.ndarray, np.ndarray] | None:
        r = _shape(c, bbox, sdf)
        if r is None:
            return None
        sl, f = r
        return sl, f, (f < 0) & cavity[sl] & (z[sl] < zd[sl] - 5.0)

    l1, l2 = a.liver
    lo, hi = np.minimum(l1.bbox()[0], l2.bbox()[0]), np.maximum(l1.bbox()[1], l2.bbox()[1])
    r3 = organ((lo, hi), lambda *p: np.minimum(l1.sdf(*p), l2.sdf(*p)))
    if r3 is not None:
        sl, f, m = r3
        vessels = np.abs(c.tex["fine2"][sl]) < 0.06
        c.paint(sl, m, L["liver"], np.where(vessels, H["blood"] - 15.0, H["liver"] + 4.0 * tc[sl]))

    r3 = organ(a.spleen.bbox(), a.spleen.sdf)
    if r3 is not None:
        sl, f, m = r3
        c.paint(sl, m, L["spleen"], H["spleen"] + 3.0 * tc[sl])

    st = a.stomach
    r3 = organ(st.bbox(), st.sdf)
    if r3 is not None:
        sl, f, m = r3
        ys = c.y[sl]
        content = np.where(ys > st.centre[1] + 0.3 * st.radii[1], -1000.0, H["stomach_content"])
        c.paint(sl, m, L["stomach"], np.where(f > -4.0, H["soft_tissue"] + 5.0, content))

    for name, k, hil in (
        ("kidney_right", a.kidney_right, a.hilum_right),
        ("kidney_left", a.kidney_left, a.hilum_left),
    ):
        r3 = organ(k.bbox(), k.sdf)
        if r3 is not None:
            sl, f, m = r3
            sinus = hil.sdf(*c.coords(sl)) < 0
            c.paint(sl, m & sinus, 0, H["visceral_fat"])
            val = np.where(f > -5.0, H["kidney_cortex"], H["kidney_medulla"])
            c.paint(sl, m & ~sinus, L[name], val + 3.0 * tf[sl])

    for seg in a.pancreas.segments():
        r3 = organ(seg.bbox(), seg.sdf)
        if r3 is not None:
            sl, f, m = r3
            lobules = np.where(tf[sl] > 1.2, H["visceral_fat"] * 0.3, H["pancreas"])
            c.paint(sl, m, L["pancreas"], lobules)

    r = _shape(c, a.bladder.bbox(), a.bladder.sdf)
    if r is not None:
        sl, f = r
        c.paint(sl, (f < 0) & cavity[sl], L["bladder"], np.where(f > -3.0, H["soft_tissue"], H["urine"]))

    # --- heart in its pericardial fat; vessels; airway.
    r = _shape(c, (a.heart.bbox()[0] - 6.0, a.heart.bbox()[1] + 6.0), a.heart.sdf)
    if r is not None:
        sl, f = r
        c.paint(sl, (f < 5.0) & (f >= 0) & cavity[sl], 0, H["visceral_fat"])
        c.paint(sl, f < 0, L["heart"], np.where(f > -9.0, H["myocardium"], H["blood"]))
    blood = H["blood"]
    for lab, t, val in (  # iliacs first: the aorta's lower end keeps its label at the bifurcation
        (0, a.iliac_arteries[0], blood),
        (0, a.iliac_arteries[1], blood),
        (L["aorta"], a.aorta, blood),
        (L["inferior_vena_cava"], a.ivc, 0.8 * blood + 0.2 * H["muscle"]),
    ):
        for seg in t.segments():
            r = _shape(c, seg.bbox(), seg.sdf)
            if r is not None:
                sl, f = r
                c.paint(sl, (f < 0) & (f_in[sl] < -tm), lab, val)
    # Airway: all walls first, then all lumens, so joints between segments stay open.
    airway = [seg for t in a.trachea for seg in t.segments()]
    for wall in (True, False):
        for seg in airway:
            r = _shape(c, seg.bbox(), seg.sdf)
            if r is not None:
                sl, f = r
                if wall:
                    c.paint(sl, f < 0, L["trachea"], H["soft_tissue"] + 15.0)
                else:
                    c.paint(sl, f < -2.0, L["trachea"], -1000.0)

    # --- bones.
    _paint_spine(c, a, H)
    _paint_ribs(c, a, H, f_in)
    _paint_pelvis(c, a, H)

    # --- subcutaneous fat and skin last (nothing lies outside the body-wall muscle).
    sub = body & (f_in >= 0)
    c.paint(full, sub, L["subcutaneous_fat"], H["fat"] + 8.0 * tf)
    c.paint(full, body & (f_in > fat - 2.0), 0, H["skin"])


def _bone(f: np.ndarray, H: dict[str, float], cortex_mm: float = 2.5) -> np.ndarray:
    """HU of bone from its signed distance: cortical shell ``cortex_mm`` thick over cancellous bone."""
    return np.where(f > -cortex_mm, H["cortical_bone"], H["cancellous_bone"]).astype(np.float32)


def _paint_spine(c: Canvas, a: Anatomy, H: dict[str, float]) -> None:
    """Vertebrae C3..L5: body (elliptic cylinder), neural arch around the canal, spinous and transverse
    processes, discs between the bodies. Vectorised over all levels: each voxel uses its nearest level."""
    sp = a.spine
    lo = np.array([-70.0, float(sp.curve_y.min()) - 80.0, sp.zc[-1] - 25.0])
    hi = np.array([70.0, float(sp.curve_y.max()) + 30.0, sp.zc[0] + 25.0])
    sl = c.block(lo, hi)
    if sl is None:
        return
    x, y, z = c.coords(sl)
    zc = sp.zc[::-1]  # ascending
    mid = 0.5 * (zc[1:] + zc[:-1])
    k = np.searchsorted(mid, z)
    rx, ry, hh = (v[::-1].astype(np.float32)[k] for v in (sp.rx, sp.ry, sp.hh))
    dz = z - zc.astype(np.float32)[k]
    yc = sp.y_at(z).astype(np.float32)
    dy = y - yc
    r = np.sqrt((x / rx) ** 2 + (dy / ry) ** 2)
    f_xy = np.sqrt(x * x + dy * dy) * (1.0 - 1.0 / np.maximum(r, 1e-6))
    f_body = np.maximum(f_xy, np.abs(dz) - hh)
    # Canal and arch behind the body.
    cy = dy + ry + 0.55 * rx  # canal centre at y = yc - ry - 0.55 rx
    crx, cry = 0.45 * rx, 0.4 * rx
    rc = np.sqrt((x / crx) ** 2 + (cy / cry) ** 2)
    ra = np.sqrt((x / (crx + 6.0)) ** 2 + (cy / (cry + 6.0)) ** 2)
    in_level = np.abs(dz) < 0.8 * hh
    arch = (ra < 1.0) & (rc >= 1.0) & (dy < -0.5 * ry) & in_level
    spinous = (np.abs(x) < 4.0) & (cy < -cry) & (cy > -cry - 1.3 * rx) & (np.abs(dz) < 0.6 * hh)
    transverse = (
        (np.abs(x) < 1.9 * rx) & (np.abs(x) > crx) & (np.abs(cy) < 5.0) & (np.abs(dz) < 0.4 * hh + 1.0)
    )
    bone = (f_body < 0) | arch | spinous | transverse
    disc = (f_xy < 0) & (np.abs(dz) >= hh)
    canal = (rc < 1.0) & (np.abs(dz) < 0.5 * (zc[1] - zc[0]) + 20.0)
    c.paint(sl, disc, 0, H["disc"])
    c.paint(sl, canal, 0, H["spinal_cord"])
    val = np.where(f_body < 0, _bone(f_body, H), 0.5 * (H["cortical_bone"] + H["cancellous_bone"]))
    c.paint(sl, bone, LABEL_IDS["vertebrae"], val)


def _paint_ribs(c: Canvas, a: Anatomy, H: dict[str, float], f_in: np.ndarray) -> None:
    """Ribs 1-12 as one periodic structure: rib k leaves vertebra T_k and runs around the chest wall
    just inside the body-wall muscle, dropping ``rib_drop`` mm towards the front; plus the sternum."""
    sp = a.spine
    zt = np.array([sp.level_z(f"T{i}") for i in range(1, 13)])  # T1..T12, descending
    step = float((zt[0] - zt[-1]) / 11.0)
    lo = np.array([-240.0, -170.0, zt[-1] - a.rib_drop - 30.0])
    hi = np.array([240.0, 170.0, zt[0] + 20.0])
    sl = c.block(lo, hi)
    if sl is None:
        return
    tm = a.muscle_mm
    dr_block = f_in[sl] + (tm + 6.0)
    shell = np.nonzero(np.abs(dr_block) < a.rib_radius)  # ribs can only be here: evaluate the rest there
    x, y, z = (v[shell] for v in c.coords(sl))
    dr = dr_block[shell]
    phi = np.arctan2(np.abs(x), -y) / np.float32(np.pi)  # 0 at the back, 1 at the front
    u = (z - float(zt[-1]) + a.rib_drop * phi**1.3 - 6.0) / step  # rib index from T12 (0) to T1 (11)
    k = np.rint(u)
    dz = (u - k) * step
    tube = (dr / a.rib_radius) ** 2 + (dz / (1.3 * a.rib_radius)) ** 2 < 1.0
    ki = np.clip(k, 0, 11).astype(int)
    phi_max = np.array([0.45, 0.6, 0.78, 0.8, 0.82, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.7], np.float32)[ki]
    ribs = tube & (k >= 0) & (k <= 11) & (phi > 0.1) & (phi < phi_max)
    f = np.sqrt(dr**2 + dz**2) - a.rib_radius
    idx = tuple(i[ribs] + s_.start for i, s_ in zip(shell, sl))
    c.label[idx] = LABEL_IDS["rib_cage"]
    c.hu[idx] = _bone(f[ribs], H, cortex_mm=2.0)
    # Sternum: T3..T9 level, front midline, in the inner part of the chest wall.
    x, y, z = c.coords(sl)
    fi = f_in[sl]
    ster = (np.abs(x) < 14.0) & (y > 0) & (fi > -(tm + 12.0)) & (fi < -tm + 2.0)
    ster &= (z < sp.level_z("T2")) & (z > sp.level_z("T9"))
    fs = np.maximum(np.abs(x) - 14.0, np.maximum(fi + tm - 2.0, -(fi + tm + 12.0)))
    c.paint(sl, ster, LABEL_IDS["rib_cage"], _bone(fs, H))


def _paint_pelvis(c: Canvas, a: Anatomy, H: dict[str, float]) -> None:
    """Iliac wings (lateral-posterior shells of two ellipsoids), sacrum, and the pubic ring."""
    lab = LABEL_IDS["pelvis"]
    for s, w in zip((1.0, -1.0), a.iliac_wings):
        sl = c.block(*w.bbox())
        if sl is None:
            continue
        x, y, z = c.coords(sl)
        f = w.sdf(x, y, z)
        shell = np.abs(f + 4.0) - 4.0
        wc, wr = [float(v) for v in w.centre], float(w.radii[2])
        m = (shell < 0) & (s * (x - wc[0]) > -15.0) & (y < wc[1] + 25.0)
        m &= (z < wc[2] + 0.85 * wr) & (z > wc[2] - 1.0 * wr)
        c.paint(sl, m, lab, _bone(shell, H, cortex_mm=2.0))
    r = _shape(c, a.sacrum.bbox(), a.sacrum.sdf)
    if r is not None:
        sl, f = r
        c.paint(sl, f < 0, lab, _bone(f, H))
    ctr, (ax, ay) = [float(v) for v in a.pubis_centre], [float(v) for v in a.pubis_axes]
    tube_r = 9.0
    lo = np.array([ctr[0] - ax - tube_r, ctr[1] - 5.0, ctr[2] - tube_r])  # front half of the ring
    hi = np.array([ctr[0] + ax + tube_r, ctr[1] + ay + tube_r, ctr[2] + tube_r])
    sl = c.block(lo, hi)
    if sl is not None:
        x, y, z = c.coords(sl)
        px, py = x - ctr[0], y - ctr[1]
        re = np.sqrt((px / ax) ** 2 + (py / ay) ** 2)
        rho = np.sqrt(px * px + py * py)
        dr = rho * (1.0 - 1.0 / np.maximum(re, 1e-6))
        f = np.sqrt(dr * dr + (z - ctr[2]) ** 2) - tube_r
        c.paint(sl, (f < 0) & (py > 0), lab, _bone(f, H))


def paint_lesions(
    c: Canvas, a: Anatomy, H: dict[str, float], rng: np.random.Generator, count: int
) -> list[dict[str, object]]:
    """Up to ``count`` spherical lesions inside the liver (8-20 mm radius) or a kidney (7-14 mm), each
    drawn among the organs visible in the grid: hypodense solid (liver or renal medulla - 25..45 HU) or
    cyst-like (0-15 HU), so lesions are darker than the tissue around them in both contrast phases.
    Lesion voxels keep their organ label. Returns one record per painted lesion."""
    hosts: list[tuple[str, Ellipsoid, float]] = [
        ("liver", a.liver[0], 0.55),
        ("kidney_right", a.kidney_right, 0.35),
        ("kidney_left", a.kidney_left, 0.35),
    ]
    visible = [h for h in hosts if np.any(c.label == LABEL_IDS[h[0]])]
    out: list[dict[str, object]] = []
    for _ in range(40):
        if len(out) >= count or not visible:
            break
        name, ell, reach = visible[int(rng.integers(len(visible)))]
        d = rng.normal(size=3)
        q = ell.point(reach * rng.uniform(0.0, 1.0) ** (1 / 3) * d / np.linalg.norm(d))
        radius = float(rng.uniform(8.0, 20.0) if name == "liver" else rng.uniform(7.0, 14.0))
        cyst = bool(rng.random() < 0.5)
        base = H["liver"] if name == "liver" else H["kidney_medulla"]
        hu = float(rng.uniform(0.0, 15.0)) if cyst else base - float(rng.uniform(25.0, 45.0))
        sl = c.block(q - radius, q + radius)
        if sl is None:
            continue
        x, y, z = c.coords(sl)
        q0, q1, q2 = (float(v) for v in q)
        m = ((x - q0) ** 2 + (y - q1) ** 2 + (z - q2) ** 2 < radius**2) & (c.label[sl] == LABEL_IDS[name])
        if not m.any():
            continue
        c.paint(sl, m, None, hu + 6.0 * c.tex["fine"][sl])
        out.append(
            {
                "organ": name,
                "centre_mm": [round(float(v), 2) for v in c.to_world(q)[0]],
                "radius_mm": round(radius, 2),
                "hu": round(hu, 1),
                "kind": "cyst" if cyst else "solid",
                "voxels": int(m.sum()),
            }
        )
    return out
