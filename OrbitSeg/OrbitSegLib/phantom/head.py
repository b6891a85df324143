"""The head around the orbits: skin and face, skull and facial bones, brain, temporalis, sinuses.

The face is two height fields over the coronal plane (x, z), interpolated (thin-plate spline) through
landmarks tied to each orbit's rim: the anterior bone surface and the soft-tissue thickness over it
(the skin is the bone surface minus that thickness, plus the nose and the eyelids draped over the
globes). Bone fills the head behind the bone surface and is then carved by later layers: the brain
above the skull base, the temporal fossae, the nasal cavity and the maxillary, ethmoid, sphenoid and
frontal sinuses (each lined by a thin cortex or mucosa). The bony orbits are painted afterwards
(:mod:`.orbit`), so a wall's thickness is the orbit's own (the lamina papyracea against the ethmoid
cells, the floor against the maxillary sinus).
"""
from __future__ import annotations

import numpy as np
from scipy.interpolate import RBFInterpolator

from .anatomy import Anatomy
from .orbit import Mirrored, Walls, side_sign
from .render import Layer
from .shapes import (Ellipsoid, Function, HeightField, Intersection, Offset, RoundedBox, Slab, Tube, Union, lazy_max,
                     rounded_intersection, smooth_max, smooth_min, tabulate)

F32 = np.float32
BIG = 1e4


def _smoothstep(t):
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


class Face:
    """Bone-surface, soft-tissue and skin height fields y = f(x, z) (tables at 1 mm)."""

    STEP = 1.0

    def __init__(self, anatomy: Anatomy):
        self.anatomy = anatomy
        head = anatomy.head
        bone_pts, soft_pts = [], []
        for side, o in anatomy.orbits.items():
            s = side_sign(side)
            for u, z, y in self._bone_landmarks(o, Walls(o), head):
                bone_pts.append((s * u, z, y))
            for u, z, t in self._soft_landmarks(o):
                soft_pts.append((s * u, z, t * head.soft_scale))
        nb, rh = head.nose["bone"], head.nose["rhinion"]
        j = head.face_jitter
        for z, y in ((50, -2 + j[6]), (34, -9 + j[7]), (21, -12.5 + 0.6 * j[8]), (10, -13.5 - 0.3 * nb),
                     (0, -14 - 0.7 * nb), (rh, -15 - nb), (-30, -9.0), (-50, -13.0)):
            bone_pts.append((0.0, z, y))
        for z, t in ((48, 5), (21, 6), (10, 6.5), (0, 3.5), (rh, 2.5), (-30, 2.5), (-50, 12)):
            soft_pts.append((0.0, z, t * head.soft_scale))
        for u, z, y in ((7, 4, -12 - 0.4 * nb), (8.5, -24, -7.5), (6, 30, -10 + j[9])):
            for s in (-1, 1):
                bone_pts.append((s * u, z, y))
        x_range, z_range = (-100.0, 100.0), (-80.0, 80.0)
        self.x0, self.z0 = x_range[0], z_range[0]
        self.bone = self._fit(bone_pts, x_range, z_range)
        self.soft = np.maximum(self._fit(soft_pts, x_range, z_range), 1.5)
        skin = self.bone - self.soft - self._nose(head, x_range, z_range)
        for side, o in anatomy.orbits.items():
            skin = skin + self._recess(o, side_sign(side), x_range, z_range)
            skin = smooth_min(skin, self._lid(o, side_sign(side), x_range, z_range), 4.0)
        self.skin = skin.astype(F32)
        self.bone_field = HeightField(self.bone, self.x0, self.z0, self.STEP, axes=(0, 2, 1))
        self.skin_field = HeightField(self.skin, self.x0, self.z0, self.STEP, axes=(0, 2, 1))
        self.soft_field = HeightField(self.soft, self.x0, self.z0, self.STEP, axes=(0, 2, 1))

    @staticmethod
    def _bone_landmarks(o, w: Walls, head):
        rim = lambda u, z: float(w.rim_y(F32(u), F32(z)))  # noqa: E731
        g, m, lat = o.globe_centre[0], o.medial_front, o.lateral_rim[0]
        rf, ff = o.roof_front, o.floor_front
        j = head.face_jitter
        return [
            (m - 1.5, 0.0, rim(m, 0) - 1.5), (m + 1, rf - 3, rim(m + 1, rf) - 1.5),
            (g, rf + 1.5, rim(g, rf) - 2.0), (g, rf + 12, rim(g, rf) - 3.5 + j[0]),
            (g + 13, rf - 2, rim(g + 13, rf - 2) - 0.5), (lat + 1.5, 0.0, rim(lat, 0) - 0.5),
            (lat - 2, ff + 5, rim(lat - 2, ff + 5) - 0.5), (g, ff - 1.5, rim(g, ff) - 1.5),
            (m + 3, ff + 3, rim(m + 3, ff + 3) - 1.5), (g, ff - 12, rim(g, ff) - 2 + j[1]),
            (g + 13, ff - 9, rim(g + 13, ff) - 3 + j[2]), (g + 22, 28, rim(g, rf) + 10 + j[3]),
            (lat + 9, 0.0, rim(lat, 0) + 10), (lat + 7, ff - 8, rim(lat, 0) + 4 + j[4]),
            (18, -32, -10 + j[5]), (22, -50, -12), (76, -45, 52), (78, 0, 55), (76, 45, 50), (60, 60, 28),
            (30, 58, 2.0 + j[10]), (45, -60, 20), (10, -60, -14),
        ]

    @staticmethod
    def _soft_landmarks(o):
        g, m, lat = o.globe_centre[0], o.medial_front, o.lateral_rim[0]
        rf, ff = o.roof_front, o.floor_front
        return [(m - 2, 0, 6.0), (g, rf + 10, 5.5), (g + 13, rf - 2, 5.0), (lat + 2, 0, 6.0), (g, ff - 2, 6.0),
                (g, ff - 12, 11.0), (g + 13, ff - 9, 9.0), (lat + 9, 0, 6.0), (lat + 7, ff - 8, 8.0),
                (18, -32, 12.0), (76, 0, 5.0), (76, -45, 8.0), (60, 60, 5.0), (30, 58, 5.0)]

    def _fit(self, points, x_range, z_range) -> np.ndarray:
        pts = np.asarray(points, dtype=float)
        rbf = RBFInterpolator(pts[:, :2], pts[:, 2], kernel="thin_plate_spline", smoothing=2.0, degree=1)
        table, _, _ = tabulate(lambda a, b: rbf(np.stack([a.ravel(), b.ravel()], 1)).reshape(a.shape),
                               x_range, z_range, self.STEP)
        return table.astype(np.float64)

    def _nose(self, head, x_range, z_range) -> np.ndarray:
        nose = head.nose
        x = np.arange(x_range[0], x_range[1] + 0.5, self.STEP)
        z = np.arange(z_range[0], z_range[1] + 0.5, self.STEP)
        xx, zz = np.meshgrid(x, z)
        top = 8.0
        t = np.clip((top - zz) / (top + 55.0), 0, 1)
        width = nose["width"] * (0.55 + 0.45 * t)
        return nose["height"] * t ** 1.3 * np.exp(-(xx / width) ** 2)

    def _recess(self, o, sign, x_range, z_range) -> np.ndarray:
        """Depth (mm) by which the face surface sinks inside the orbital opening, where the eyelids
        drape over the globe instead."""
        x = np.arange(x_range[0], x_range[1] + 0.5, self.STEP)
        z = np.arange(z_range[0], z_range[1] + 0.5, self.STEP)
        xx, zz = np.meshgrid(x, z)
        centre_u = (o.medial_front + o.lateral_rim[0]) / 2
        half_w = (o.lateral_rim[0] - o.medial_front) / 2 - 2.0
        half_h = (o.roof_front - o.floor_front) / 2 - 2.0
        r2 = ((sign * xx - centre_u) / half_w) ** 2 + ((zz - (o.roof_front + o.floor_front) / 2) / half_h) ** 2
        return 12.0 * np.clip(1 - r2, 0, 1) ** 1.5

    def _lid(self, o, sign, x_range, z_range) -> np.ndarray:
        x = np.arange(x_range[0], x_range[1] + 0.5, self.STEP)
        z = np.arange(z_range[0], z_range[1] + 0.5, self.STEP)
        xx, zz = np.meshgrid(x, z)
        gu, gy, gz = o.globe_centre
        lid = o.lids["thick"]
        a, b, c = (r + lid for r in o.globe_radii)
        q = 1 - ((sign * xx - gu) / a) ** 2 - ((zz - gz) / c) ** 2
        return np.where(q > 0, gy - b * np.sqrt(np.maximum(q, 0)), gy + 40.0)

    def skin_distance(self, x, y, z):
        """Distance to the face skin surface (negative behind it); the head's sides come from :class:`HeadShape`."""
        return self.skin_field.distance(x, y, z, above=True)


class HeadShape:
    """Skin (face height field intersected with an elliptic head outline) and the bone envelope."""

    def __init__(self, anatomy: Anatomy, face: Face):
        self.face = face
        h = anatomy.head
        self.a, self.b = h.head_radii
        self.cy = h.head_centre_y
        self.corner = h.head_corner
        self.soft_side = 5.5 * h.soft_scale

    def outline(self, x, y, z, shrink: float = 0.0):
        """Axial head outline: a rounded rectangle (flat temples, round back), narrowing below the orbits."""
        a = F32(self.a - shrink) * (1 - F32(0.0025) * np.maximum(-z - 10, 0))
        b = F32(self.b - shrink)
        r = F32(self.corner - shrink)
        qx = np.abs(x) - (a - r)
        qy = np.abs(y - F32(self.cy)) - (b - r)
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
        return outside + np.minimum(np.maximum(qx, qy), 0) - r

    def skin(self, x, y, z):
        return smooth_max(self.face.skin_distance(x, y, z), self.outline(x, y, z), 8.0)

    def bone(self, x, y, z):
        front = self.face.bone_field.distance(x, y, z, above=True)
        return smooth_max(front, self.outline(x, y, z, self.soft_side), 8.0)

    def subcutaneous_fat(self, x, y, z):
        d = self.skin(x, y, z)
        soft = self.face.soft_field.lookup(x, z)
        depth = np.maximum(soft - F32(3.0), F32(0.8))
        return np.maximum(d + F32(1.8), -(d + F32(1.8) + depth))


class SkullBase:
    """Height of the cranial floor z = f(x, y): anterior fossa on the orbital roofs (cribriform plate
    lower by the Keros depth), the sphenoid ridge, the middle fossae and the sella."""

    STEP = 1.0

    def __init__(self, anatomy: Anatomy):
        h = anatomy.head
        x = np.arange(-100.0, 100.5, self.STEP)
        y = np.arange(-60.0, 150.5, self.STEP)
        xx, yy = np.meshgrid(x, y)
        u = np.abs(xx).astype(F32)
        yy32 = yy.astype(F32)
        za = np.zeros_like(xx)
        zm = np.zeros_like(xx)
        y_ridge = np.zeros_like(xx)
        for side, o in anatomy.orbits.items():
            w = Walls(o)
            mask = (xx < 0) if side == "right" else (xx >= 0)
            um = w.u_med(yy32)
            roof_top = w.z_roof(np.maximum(u, um), yy32) + F32(o.wall["roof"] - 0.3)
            fovea = w.z_roof(um, yy32) + F32(o.wall["roof"] - 1.2)
            # The cribriform plate (lower by the Keros depth) spans the ethmoid only; the planum
            # sphenoidale behind it is level with the fovea.
            span = _smoothstep((h.ethmoid["back"] - 2 - yy) / 4.0) * _smoothstep((yy - h.ethmoid["front"]) / 4.0)
            cribriform = fovea - F32(h.keros) * span.astype(F32)
            medial = fovea + (cribriform - fovea) * _smoothstep((4.5 - u) / 2.5)
            anterior = np.where(u >= um, roof_top, medial)
            # Sphenoid ridge: just behind the lateral orbital wall, behind the apex medially.
            cu, yc, _ = o.canal
            lu, ly = o.lateral_rim
            y_wall = ly + (u - lu) / (cu + 5.5 - lu) * (yc - 1.5 - ly)
            ridge = np.where(u > cu + 5.5, np.maximum(y_wall + o.wall["lateral"] + 3.5, yc + 4.0 - 0.15 * (u - cu)),
                             yc + 4.0)
            za[mask] = anterior[mask]
            y_ridge[mask] = ridge[mask]
            # Sella behind the planum, then the dorsum and clivus dropping to the posterior fossa.
            medial_z = np.maximum(h.sella_z - 1.6 * np.maximum(yy - (h.sphenoid["back"] - 2.0), 0), -45.0)
            zm[mask] = (medial_z + (h.middle_fossa_z - medial_z) * _smoothstep((u - 11.0) / 11.0))[mask]
        t = _smoothstep((yy - y_ridge) / 4.0)
        table = za * (1 - t) + zm * t
        self.field = HeightField(table.astype(F32), x[0], y[0], self.STEP, axes=(0, 1, 2))

    def above(self, x, y, z):
        """Signed distance, negative above the cranial floor."""
        return self.field.distance(x, y, z, above=True)

    def height(self, x, y):
        return self.field.lookup(x, y)


def _nasal_half_width(z, half):
    zs = np.array([-60, -45, -30, -20, -12, -4, 5, 20], dtype=F32)
    hw = np.array([half - 2, half, half, half - 1.5, 6.0, 3.6, 2.0, 1.6], dtype=F32)
    return np.interp(z, zs, hw).astype(F32)


class HeadBuilder:
    """Layers of the head outside the orbits."""

    def __init__(self, anatomy: Anatomy):
        self.anatomy = anatomy
        self.face = Face(anatomy)
        self.shape = HeadShape(anatomy, self.face)
        self.base = SkullBase(anatomy)
        h = anatomy.head
        self.skull = Ellipsoid(h.skull_centre, h.skull_radii)
        self.walls = {side: Walls(o) for side, o in anatomy.orbits.items()}

    def brain(self, x, y, z):
        thick = F32(self.anatomy.head.skull_thick)
        return lazy_max(x, y, z, [self.skull, self.base.above, lambda x, y, z: self.shape.bone(x, y, z) + thick])

    def side_skin(self, side: str) -> Function:
        s = side_sign(side)
        return Function(lambda u, y, z: self.shape.skin(s * u, y, z), [-BIG] * 3, [BIG] * 3)

    def layers(self) -> list[Layer]:
        a = self.anatomy
        h = a.head
        big_lo, big_hi = [-100.0, -70.0, -80.0], [100.0, 150.0, 80.0]
        f = lambda fn, lo=big_lo, hi=big_hi: Function(fn, lo, hi)  # noqa: E731
        out: list[Layer] = [Layer("air", None, "air")]
        add = lambda name, shape, material: out.append(Layer(name, shape, material))  # noqa: E731

        skin = f(self.shape.skin)
        add("skin", skin, "skin")
        add("soft_tissue", Offset(skin, -1.6), "soft_tissue")
        add("subcutaneous_fat", f(self.shape.subcutaneous_fat), "subcutaneous_fat")
        bone = f(self.shape.bone)
        add("bone_cortex", bone, "cortical_bone")
        add("bone_diploe", Offset(bone, -h.cortex), "cancellous_bone")
        brain = f(self.brain, [-70, -30, -30], [70, 150, 80])
        add("inner_table", Offset(brain, 1.2), "cortical_bone")
        add("csf", brain, "csf")
        add("brain", Offset(brain, -1.8), "brain")

        # Deep face below the skull base behind the maxillae (pterygoid region), nasopharynx.
        mx = h.maxillary
        sph = h.sphenoid
        deep = RoundedBox([0, 75 + mx["back"] / 2, -62 + (sph["bottom"] - 4 + 62) / 2],
                          [26, 75 - mx["back"] / 2 - 3, (sph["bottom"] - 4 + 62) / 2], 4.0)
        add("deep_soft_tissue", Intersection(deep, f(self.shape.bone)), "muscle")
        add("nasopharynx", RoundedBox([0, 58, -38], [14, 12, 16], 6.0), "air")

        for side in ("right", "left"):
            out.extend(self._temporal(side))
        out.extend(self._nasal())
        for side in ("right", "left"):
            out.extend(self._maxillary(side))
        for side in ("right", "left"):
            out.extend(self._ethmoid(side))
        out.extend(self._sphenoid())
        out.extend(self._frontal_sinus())
        return out

    # --- temporal fossa and zygomatic arch -----------------------------------------------------------
    def _temporal(self, side: str) -> list[Layer]:
        h = self.anatomy.head
        o = self.anatomy.orbits[side]
        w = self.walls[side]
        s = side_sign(side)
        front = F32(o.lateral_rim[1] + h.temporalis_front)
        sq = F32(h.squama_thick)

        high, low = F32(o.lateral_rim[0] - 22.0), F32(24.0)
        floor = F32(o.floor_front)

        def planes(x, y, z):
            u = s * x
            below = _smoothstep((floor - z) / F32(8.0))
            medial = high + (low - high) * below
            # Below the orbit the zygoma's body reaches further back before the infratemporal fossa.
            start = front + F32(0.4) * np.maximum(floor - z, 0)
            d = np.maximum(np.maximum(w.u_lat(y) - F32(0.5) - u, (start - y) * F32(0.93)), medial - u)
            return d

        def temporalis(x, y, z):
            return lazy_max(x, y, z, [planes, self.shape.bone, lambda x, y, z: sq - self.brain(x, y, z)])
        lo = [-100.0 if s < 0 else 15.0, float(front) - 1, -80.0]
        hi = [-15.0 if s < 0 else 100.0, 150.0, 80.0]
        arch = h.zygomatic_arch
        lu, ly = o.lateral_rim
        pts = np.array([[lu + 1.0, ly + 7.0, arch["z"]], [lu + 7.0, ly + 22.0, arch["z"] - 0.5],
                        [lu + 9.0, 50.0, arch["z"] - 1.0]])
        tube = Tube(pts, [arch["thick"]] * 3, [arch["height"]] * 3, [[1, 0, 0]] * 3)
        core = Tube(pts, [arch["thick"] - 2.0] * 3, [arch["height"] - 2.5] * 3, [[1, 0, 0]] * 3)
        return [Layer(f"{side}_temporalis", Function(temporalis, lo, hi), "muscle"),
                Layer(f"{side}_zygomatic_arch", Mirrored(tube, s), "cortical_bone"),
                Layer(f"{side}_zygomatic_arch_core", Mirrored(core, s), "cancellous_bone")]

    # --- nasal cavity -----------------------------------------------------------------------------------
    def _nasal(self) -> list[Layer]:
        h = self.anatomy.head
        nasal, eth, sph = h.nasal, h.ethmoid, h.sphenoid
        half = nasal["half_width"]
        base = self.base
        skin = self.shape.skin
        choana = F32(nasal["choana"])
        eth_front = F32(eth["front"])

        def box(x, y, z):
            hw = _nasal_half_width(z, half)
            front_hw = np.interp(z, [-25.0, -8.0, 4.0, 14.0], [half - 1, 7.5, 4.0, 1.5]).astype(F32)
            hw = np.maximum(hw, front_hw * _smoothstep((eth_front + 2 - y) / 8.0))
            d = np.maximum(np.abs(x) - hw, y - choana)
            return np.maximum(d, F32(-62.0) - z)

        def roof(x, y, z):
            top = base.height(x, y) - F32(1.2)
            top = np.where(y < eth_front, top - F32(0.6) * (eth_front - y), top)
            top = np.where(y > F32(eth["back"]), np.minimum(top, F32(sph["bottom"] - 2.0)), top)
            return (z - top) * F32(0.7)

        def cavity(x, y, z):
            return lazy_max(x, y, z, [box, roof, lambda x, y, z: skin(x, y, z) + F32(2.5)])
        lo, hi = [-half - 2, -60.0, -62.0], [half + 2, float(choana) + 1, 20.0]
        cav = Function(cavity, lo, hi)
        dev = F32(nasal["septum_dev"])

        def septum_line(x, y, z, thick):
            bow = dev * np.exp(-((y - F32(15.0)) / F32(18.0)) ** 2) * np.exp(-((z + F32(15.0)) / F32(15.0)) ** 2)
            return np.abs(x - bow) - F32(thick / 2)
        grown = Offset(cav, 0.6)
        septum_mucosa = Intersection(Function(lambda x, y, z: septum_line(x, y, z, 3.6), lo, hi), grown)
        septum = Intersection(Function(lambda x, y, z: septum_line(x, y, z, 1.4), lo, hi), grown)
        rhinion = F32(h.nose["rhinion"])
        nose_half = F32(h.nose["width"] * 0.9)

        def cartilage(x, y, z):
            d = skin(x, y, z)
            d = np.maximum(d + F32(1.3), -(d + F32(2.6)))
            return np.maximum(np.maximum(d, z - rhinion), np.abs(x) - nose_half)
        nose_cart = Function(cartilage, [-16, -60, -62], [16, 0, 10])
        bone_front = self.face.bone_field
        bone_half = F32(9.0 + h.nose["bone"] / 3)

        def nasal_bone(x, y, z):
            d = bone_front.distance(x, y, z, above=True)
            d = np.maximum(d, -(d + F32(2.2)))
            d = np.maximum(d, np.maximum(z - F32(22.0), rhinion - z))
            return np.maximum(d, np.abs(x) - bone_half)
        nasal_bones = Function(nasal_bone, [-14, -60, -25], [14, 10, 25])
        out = [Layer("nasal_mucosa", cav, "mucosa"), Layer("nasal_air", Offset(cav, -1.6), "air"),
               Layer("nasal_septum_mucosa", septum_mucosa, "mucosa"), Layer("nasal_septum", septum, "cartilage"),
               Layer("nasal_cartilage", nose_cart, "cartilage"), Layer("nasal_bones", nasal_bones, "cortical_bone")]
        for side in ("right", "left"):
            s = side_sign(side)
            for name, z0, thick, tall, y0, y1 in (("middle_turbinate", -13.0, 3.5, 11.0, eth["front"] + 6, choana - 10),
                                                  ("inferior_turbinate", -32.0, 7.0, 10.0, eth["front"] + 2, choana - 6)):
                u = float(_nasal_half_width(np.array([z0], F32), half)[0]) - thick / 2 + 0.3
                pts = np.array([[u, y0, z0], [u, (y0 + y1) / 2, z0 - 1.0], [u, y1, z0 - 2.0]])
                tube = Tube(pts, [thick * 0.6, thick, thick * 0.7], [tall * 0.6, tall, tall * 0.7], [[1, 0, 0]] * 3)
                core = Tube(pts, [0.8] * 3, [tall * 0.4, tall * 0.6, tall * 0.4], [[1, 0, 0]] * 3)
                out.append(Layer(f"{side}_{name}", Mirrored(tube, s), "mucosa"))
                out.append(Layer(f"{side}_{name}_bone", Mirrored(core, s), "thin_bone"))
        return out

    # --- maxillary sinus --------------------------------------------------------------------------------
    def _maxillary(self, side: str) -> list[Layer]:
        h = self.anatomy.head
        mx = h.maxillary
        w = self.walls[side]
        s = side_sign(side)
        half = h.nasal["half_width"]
        bone = self.shape.bone
        front = F32(mx["front"])

        def sinus(u, y, z):
            x = s * u
            d = [(_nasal_half_width(z, half) + F32(1.5)) - u, u - F32(mx["lateral"]),
                 bone(x, y, z) + front, y - F32(mx["back"]),
                 (z - (w.z_floor(np.minimum(u, w.u_lat(y) - 2), y) + F32(0.4))) * F32(0.8),
                 F32(mx["bottom"]) - z]
            return rounded_intersection(d, F32(5.0))

        def sinus_box(u, y, z):
            d = np.maximum(np.maximum(F32(12.0) - u, u - F32(mx["lateral"])), y - F32(mx["back"]))
            return np.maximum(d, F32(mx["bottom"]) - z)
        shape = Function(lambda u, y, z: lazy_max(u, y, z, [sinus_box, sinus]),
                         [10.0, -40.0, mx["bottom"] - 1], [mx["lateral"] + 1, mx["back"] + 1, 5.0])
        mucosa = mx["mucosa_r" if side == "right" else "mucosa_l"]
        out = [Layer(f"{side}_maxillary_wall", Mirrored(Offset(shape, 0.8), s), "thin_bone"),
               Layer(f"{side}_maxillary_mucosa", Mirrored(shape, s), "mucosa"),
               Layer(f"{side}_maxillary_air", Mirrored(Offset(shape, -max(mucosa, 0.3)), s), "air")]
        if mx["fluid_r" if side == "right" else "fluid_l"] > 0.5:
            level = F32(mx["fluid_level"])
            fluid = Function(lambda u, y, z: np.maximum(shape(u, y, z) + F32(max(mucosa, 0.3)), z - level),
                             shape.lo, shape.hi)
            out.append(Layer(f"{side}_maxillary_fluid", Mirrored(fluid, s), "sinus_fluid"))
        return out

    # --- ethmoid labyrinth ----------------------------------------------------------------------------
    def _ethmoid(self, side: str) -> list[Layer]:
        h = self.anatomy.head
        eth = h.ethmoid
        w = self.walls[side]
        s = side_sign(side)
        half = h.nasal["half_width"]
        base = self.base

        def region(u, y, z):
            x = s * u
            d = [(_nasal_half_width(z, half) + F32(0.9)) - u, u - (w.u_med(y) + F32(1.0)),
                 F32(eth["front"]) - y, y - F32(eth["back"]),
                 F32(eth["bottom"]) - z, (z - (base.height(x, y) - F32(1.3))) * F32(0.8)]
            return rounded_intersection(d, F32(1.5))

        def region_box(u, y, z):
            return np.maximum(np.maximum(F32(eth["front"]) - y, y - F32(eth["back"])), F32(eth["bottom"]) - z)
        o = self.anatomy.orbits[side]
        lo = [1.0, eth["front"] - 1, eth["bottom"] - 1]
        hi = [o.medial_front + 6, eth["back"] + 1, 30.0]
        reg = Function(lambda u, y, z: lazy_max(u, y, z, [region_box, region]), lo, hi)
        rng = np.random.default_rng(h.septa_seed + (0 if side == "right" else 1))
        volume = float(np.prod(np.asarray([hi[0], hi[1], o.roof_front]) - np.asarray(lo)))
        n_cells = int(np.clip(volume / rng.uniform(60.0, 160.0), 12, 80))
        seeds = rng.uniform(lo, [hi[0], hi[1], o.roof_front], (n_cells, 3)).astype(F32)
        half_t = F32(rng.uniform(0.12, 0.25))

        def cell_walls(u, y, z):
            """Voronoi cell walls: half the gap between the nearest and second-nearest seed distance."""
            d1 = np.full(u.shape, np.inf, F32)
            d2 = np.full(u.shape, np.inf, F32)
            for sx, sy, sz in seeds:
                d = np.sqrt((u - sx) ** 2 + (y - sy) ** 2 + (z - sz) ** 2)
                d2 = np.minimum(d2, np.maximum(d1, d))
                d1 = np.minimum(d1, d)
            return (d2 - d1) * F32(0.5) - half_t
        septa = Intersection(Offset(reg, 0.3), Function(cell_walls, lo, hi))
        out = [Layer(f"{side}_ethmoid_mucosa", Mirrored(reg, s), "mucosa"),
               Layer(f"{side}_ethmoid_air", Mirrored(Offset(reg, -max(eth["mucosa"], 0.15)), s), "air"),
               Layer(f"{side}_ethmoid_septa", Mirrored(septa, s), "thin_bone")]
        # Lacrimal sac in its fossa at the medial rim, and the nasolacrimal duct down to the inferior meatus.
        m = o.medial_front
        rim = float(w.rim_y(F32(m), F32(0.0)))
        duct = np.array([[m - 0.3, rim + 4.0, 7.0], [m - 0.8, rim + 4.5, -4.0], [m - 2.0, rim + 6.0, -16.0],
                         [_nasal_half_width(np.array([-30.0], F32), half)[0] - 0.5, rim + 7.0, -30.0]])
        sac = Tube(duct, [5.0, 4.5, 3.2, 3.0], [6.5, 5.0, 3.2, 3.0], [[1, 0, 0]] * 4)
        out.append(Layer(f"{side}_nasolacrimal_duct", Mirrored(sac, s), "mucosa"))
        return out

    # --- sphenoid and frontal sinuses ------------------------------------------------------------------
    def _sphenoid(self) -> list[Layer]:
        h = self.anatomy.head
        sp = h.sphenoid
        canal_u = min(o.canal[0] for o in self.anatomy.orbits.values())
        half = min(sp["half"], canal_u - 3.8)
        base = self.base
        top_box = 30.0

        def sinus(x, y, z):
            d = [np.abs(x) - F32(half), F32(sp["front"]) - y, y - F32(sp["back"]), F32(sp["bottom"]) - z,
                 (z - (base.height(x, y) - F32(1.6))) * F32(0.8)]
            return rounded_intersection(d, F32(4.0))
        shape = Function(sinus, [-half - 1, sp["front"] - 1, sp["bottom"] - 1], [half + 1, sp["back"] + 1, top_box])
        septum = Intersection(Slab([1.0, 0.0, 0.15], sp["septum_x"], 1.0), Offset(shape, 0.5))
        return [Layer("sphenoid_wall", Offset(shape, 0.8), "thin_bone"), Layer("sphenoid_air", shape, "air"),
                Layer("sphenoid_septum", septum, "thin_bone")]

    def _frontal_sinus(self) -> list[Layer]:
        h = self.anatomy.head
        fs = h.frontal_sinus
        if fs["present"] < 0.5:
            return []
        lobes = []
        for sign, size in ((-1, fs["size_r"]), (1, fs["size_l"])):
            x = sign * (4.0 + 6.0 * size)
            zc = fs["height"]
            yb = float(self.face.bone_field.lookup(np.array([x], F32), np.array([zc], F32))[0])
            r = [3.0 + 7.0 * size, 1.5 + 3.5 * size, 3.0 + 8.0 * size]
            lobes.append(Ellipsoid([x, yb + 2.2 + r[1], zc], r))
        union = Union(*lobes)
        bone = self.shape.bone
        shape = Function(lambda x, y, z: lazy_max(x, y, z, [union, lambda x, y, z: bone(x, y, z) + F32(2.0),
                                                             lambda x, y, z: F32(2.5) - self.brain(x, y, z)]),
                         union.lo, union.hi)
        septum = Intersection(Slab([1.0, 0.0, 0.0], fs["septum_x"], 1.2), Offset(shape, 0.5))
        return [Layer("frontal_sinus_wall", Offset(shape, 0.8), "cortical_bone"), Layer("frontal_sinus_air", shape, "air"),
                Layer("frontal_sinus_septum", septum, "cortical_bone")]

