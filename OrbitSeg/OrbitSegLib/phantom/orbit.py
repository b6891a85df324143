"""One orbit as a list of layers: bony walls, fat, globe, rectus muscles, optic nerve and confusers.

Everything is built in the orbit's side frame (u = lateral distance from the mid-sagittal plane,
y posterior, z superior; mm) and mirrored to the head frame by :class:`Mirrored`.

Layer order (painter's order, later wins) inside one orbit:
bony shell, optic canal and fissures, preseptal soft tissue, orbital fat, open palpebral fissure,
lacrimal gland, vessels, inferior oblique, superior oblique (+ trochlea + reflected tendon), levator,
the four recti (labelled), the optic nerve (labelled: dura + CSF + nerve), the globe (labelled: sclera,
vitreous, aqueous, iris, lens). Confusers come before the targets so that a target is never cut by a
confuser that touches it: the levator lies directly on the superior rectus, sharing its surface.
"""
from __future__ import annotations

import numpy as np

from .. import structures
from .anatomy import RECTI, Orbit
from .render import Layer
from .shapes import (Ellipsoid, Function, Intersection, Offset, Shape, Tube, Union, lazy_max,
                     rounded_intersection, smooth_curve)

F32 = np.float32

# Muscle directions around the globe (side frame) and their origins on the annulus of Zinn
# relative to the optic canal (u, z offsets, mm).
DIRECTIONS = {"superior_rectus": (0.0, 0.0, 1.0), "inferior_rectus": (0.0, 0.0, -1.0),
              "medial_rectus": (-1.0, 0.0, 0.0), "lateral_rectus": (1.0, 0.0, 0.0)}
ANNULUS = {"superior_rectus": (0.6, 3.0), "inferior_rectus": (0.8, -3.2),
           "medial_rectus": (-1.6, 0.2), "lateral_rectus": (4.0, -0.5)}
LIMBUS_RADIUS = 5.85  # mm, half the corneal diameter


class Mirrored(Shape):
    """A side-frame shape placed in the head frame: x = sign * u (sign -1 right, +1 left)."""

    def __init__(self, shape: Shape, sign: int):
        self.shape, self.sign = shape, sign
        lo, hi = shape.lo.copy(), shape.hi.copy()
        if sign < 0:
            lo[0], hi[0] = -shape.hi[0], -shape.lo[0]
        self._set_box(lo, hi)

    def __call__(self, x, y, z):
        return self.shape(-x if self.sign < 0 else x, y, z)


def side_sign(side: str) -> int:
    return -1 if side == "right" else 1


def _bump(t):
    """0 at the rim reference and at the apex, 1 a third of the way back (the orbit is widest there);
    returns (value, derivative)."""
    tc = np.clip(t, 0, 1)
    one = 1 - tc
    inside = (t > 0) & (t < 1)
    return F32(6.75) * tc * one * one, np.where(inside, F32(6.75) * one * (1 - 3 * tc), F32(0))


class Walls:
    """The four walls of a bony orbit as smooth surfaces (side frame), and the rim plane.

    Medial and lateral walls are u = f(y), roof and floor z = f(u, y); each runs from the entrance
    (``wall_ref_y``, the lateral rim for the lateral wall) to the optic canal with a bulge a third of
    the way back.
    """

    def __init__(self, o: Orbit):
        self.o = o
        self.y0 = o.wall_ref_y
        self.cu, self.yc, self.cz = o.canal
        self.lu, self.ly = o.lateral_rim
        self.g = o.globe_centre[0]

    def profiles(self, y):
        """Wall positions at y and their y-derivatives: dict of float32 arrays."""
        o = self.o
        span = F32(self.yc - self.y0)
        t = (y - F32(self.y0)) / span
        b, db = _bump(t)
        m_slope = F32(self.cu - 0.8 - o.medial_front)
        um = F32(o.medial_front) + m_slope * t - F32(o.medial_bulge) * b
        dum = (m_slope - F32(o.medial_bulge) * db) / span
        lspan = F32(self.yc - 1.5 - self.ly)
        tl = (y - F32(self.ly)) / lspan
        bl, dbl = _bump(tl)
        l_slope = F32(self.cu + 5.5 - self.lu)
        # In front of the lateral rim the opening stays as wide as the rim.
        ul = F32(self.lu) + l_slope * np.maximum(tl, 0) + F32(o.lateral_bulge) * bl
        dul = (l_slope * (tl > 0) + F32(o.lateral_bulge) * dbl) / lspan
        ua, dua = F32(0.5) * (um + ul), F32(0.5) * (dum + dul)
        # Roof and floor converge slowly at first and faster near the apex (t^1.5).
        tc = np.clip(t, 0, 1)
        root = np.sqrt(tc)
        q = np.where(t > 1, 1 + F32(1.5) * (t - 1), tc * root)
        dq = F32(1.5) * np.where(t > 1, F32(1), root)
        r_slope = F32(self.cz + 3.0 - o.roof_front)
        roof = F32(o.roof_front) + r_slope * q + F32(o.roof_dome) * b
        droof = (r_slope * dq + F32(o.roof_dome) * db) / span
        f_slope = F32(self.cz - 3.5 - o.floor_front)
        floor = F32(o.floor_front) + f_slope * q - F32(o.floor_dip) * b
        dfloor = (f_slope * dq - F32(o.floor_dip) * db) / span
        return {"t": t, "um": um, "dum": dum, "ul": ul, "dul": dul, "ua": ua, "dua": dua,
                "roof": roof, "droof": droof, "floor": floor, "dfloor": dfloor}

    def u_med(self, y):
        return self.profiles(y)["um"]

    def u_lat(self, y):
        return self.profiles(y)["ul"]

    def z_roof(self, u, y, p=None):
        p = p or self.profiles(y)
        return p["roof"] - F32(self.o.roof_lateral_slope) * (u - p["ua"])

    def z_floor(self, u, y, p=None):
        p = p or self.profiles(y)
        return p["floor"] + F32(self.o.floor_medial_slope) * (p["ua"] - u)

    def rim_y(self, u, z):
        r = self.o.rim
        return F32(r[0]) + F32(r[1]) * (u - F32(self.g)) + F32(r[2]) * z

    def behind_rim(self, u, y, z):
        """Signed distance to the rim plane, negative behind it (inside the bony orbit)."""
        r = self.o.rim
        return (self.rim_y(u, z) - y) / F32(np.sqrt(1 + r[1] ** 2 + r[2] ** 2))

    def cavity(self, u, y, z, grow: dict | None = None, cap: float = 0.3):
        """Signed distance to the orbital cavity; ``grow`` pushes each wall outwards (mm) for the bone."""
        grow = grow or {}
        p = self.profiles(y)
        sr, sf = F32(self.o.roof_lateral_slope), F32(self.o.floor_medial_slope)
        dzr = p["droof"] + sr * p["dua"]
        dzf = p["dfloor"] + sf * p["dua"]
        d = [
            (p["um"] - u) / np.sqrt(1 + p["dum"] ** 2) - F32(grow.get("medial", 0)),
            (u - p["ul"]) / np.sqrt(1 + p["dul"] ** 2) - F32(grow.get("lateral", 0)),
            (z - self.z_roof(u, y, p)) / np.sqrt(1 + dzr * dzr + sr * sr) - F32(grow.get("roof", 0)),
            (self.z_floor(u, y, p) - z) / np.sqrt(1 + dzf * dzf + sf * sf) - F32(grow.get("floor", 0)),
        ]
        extra = F32(np.mean(list(grow.values())) if grow else 0.0)
        t = np.clip(p["t"], 0, 1)
        radius = np.maximum(F32(self.o.corner_radius) * (1 - F32(0.8) * t * t), F32(2.5))
        body = rounded_intersection(d, radius + extra)
        return np.maximum(body, y - F32(self.yc + cap) - extra)

    def box(self, margin: float = 6.0):
        o = self.o
        lo = [o.medial_front - 3 - margin, -40.0, o.floor_front - 6 - margin]
        hi = [self.lu + 12 + margin, self.yc + 4 + margin, o.roof_front + 6 + margin]
        return lo, hi


class Globe:
    """Ellipsoidal globe: surface points along directions, outward normals."""

    def __init__(self, o: Orbit):
        self.c = np.asarray(o.globe_centre, dtype=float)
        self.r = np.asarray(o.globe_radii, dtype=float)
        self.mean_r = float(np.cbrt(np.prod(self.r)))

    def surface(self, direction) -> tuple[np.ndarray, np.ndarray]:
        d = np.asarray(direction, dtype=float)
        d = d / np.linalg.norm(d)
        p = self.c + d / np.sqrt(((d / self.r) ** 2).sum())
        n = (p - self.c) / self.r ** 2
        return p, n / np.linalg.norm(n)

    def on_globe(self, direction, lift: float) -> np.ndarray:
        p, n = self.surface(direction)
        return p + n * lift


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _arc(a, b, theta) -> np.ndarray:
    """Direction at angle ``theta`` (rad) from unit vector a towards unit vector b (orthogonal)."""
    return np.cos(theta) * a + np.sin(theta) * b


def _profile(s, s_belly, s_junction, origin, belly, tendon, insertion=None):
    """Spindle profile along normalised arc length s: origin -> belly maximum -> tendon (constant or to insertion)."""
    s = np.asarray(s, dtype=float)
    insertion = tendon if insertion is None else insertion
    rise = origin + (belly - origin) * np.sin(np.pi / 2 * np.clip(s / s_belly, 0, 1)) ** 2
    fall_t = np.clip((s - s_belly) / max(s_junction - s_belly, 1e-3), 0, 1)
    fall = tendon + (belly - tendon) * np.cos(np.pi / 2 * fall_t) ** 2
    tail_t = np.clip((s - s_junction) / max(1 - s_junction, 1e-3), 0, 1)
    tail = tendon + (insertion - tendon) * tail_t
    return np.where(s <= s_belly, rise, np.where(s <= s_junction, fall, tail))


def _arclength(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Normalised cumulative arc length (0..1) of a polyline and its total length (mm)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    return s / s[-1], float(s[-1])


class OrbitBuilder:
    """Builds the layers of one orbit and reports derived geometry (lengths, key points)."""

    def __init__(self, o: Orbit, skin: Shape):
        self.o = o
        self.walls = Walls(o)
        self.globe = Globe(o)
        self.skin = skin  # side-frame skin distance (negative inside the head)
        self.sign = side_sign(o.side)
        self.info: dict = {}
        self.axis_a = _unit(self.globe.c - np.asarray(o.canal))
        self.paths: dict[str, dict] = {}

    # --- helpers -----------------------------------------------------------------------------------
    def _f(self, fn, lo, hi) -> Function:
        return Function(fn, lo, hi)

    def cavity_shape(self, grow=None, cap=0.3) -> Function:
        lo, hi = self.walls.box()
        return self._f(lambda u, y, z: self.walls.cavity(u, y, z, grow, cap), lo, hi)

    def axis_point(self, y: float) -> np.ndarray:
        """Point on the line optic canal -> globe centre at anterior-posterior position y."""
        c = np.asarray(self.o.canal, dtype=float)
        g = self.globe.c
        t = (y - c[1]) / (g[1] - c[1])
        return c + t * (g - c)

    def _thin_dirs(self, points: np.ndarray, fallback) -> np.ndarray:
        """Thin axis of a muscle at each node: radial from the orbit axis (towards its wall)."""
        c = np.asarray(self.o.canal, dtype=float)
        a = self.axis_a
        rel = points - c
        radial = rel - np.outer(rel @ a, a)
        length = np.linalg.norm(radial, axis=1, keepdims=True)
        w = np.clip(length / 4.0, 0, 1)
        dirs = radial / np.maximum(length, 1e-6) * w + np.asarray(fallback, dtype=float) * (1 - w)
        return dirs / np.linalg.norm(dirs, axis=1, keepdims=True)

    # --- recti ---------------------------------------------------------------------------------------
    def rectus_path(self, key: str) -> dict:
        o, w, gl = self.o, self.walls, self.globe
        m = o.muscles[key]
        phi = np.asarray(DIRECTIONS[key], dtype=float)
        ant = np.array([0.0, -1.0, 0.0])
        th_b = m.belly_thick * m.enlargement
        wd_b = m.belly_wide * (1 + 0.45 * (m.enlargement - 1))
        lev = o.levator["thick"]
        cu, yc, cz = o.canal
        du, dz = ANNULUS[key]
        origin = np.array([cu + du, yc - 0.4, cz + dz])
        y_eq = gl.c[1] + 4.0
        belly = []
        for frac, th in ((0.3, 0.75 * th_b), (0.62, th_b)):
            y = yc - frac * (yc - y_eq)
            axis = self.axis_point(y)
            yy = F32(y)
            if key == "superior_rectus":
                u = axis[0]
                z = float(w.z_roof(F32(u), yy)) - m.wall_gap - lev - th / 2
            elif key == "inferior_rectus":
                u = axis[0] - 1.0
                z = float(w.z_floor(F32(u), yy)) + m.wall_gap + th / 2
            elif key == "medial_rectus":
                u = float(w.u_med(yy)) + m.wall_gap + th / 2
                z = axis[2]
            else:
                u = float(w.u_lat(yy)) - m.wall_gap - th / 2
                z = axis[2]
            belly.append(np.array([u, y, z]))
        r_eff = gl.mean_r
        theta_ins = (np.arcsin(LIMBUS_RADIUS / r_eff) * r_eff + m.insertion_dist) / r_eff
        rel = belly[1] - gl.c
        b_ant, b_phi = rel @ ant, rel @ phi
        beta = np.arctan2(b_phi, b_ant)
        dist = np.hypot(b_ant, b_phi)
        lift = m.tendon_thick / 2
        theta_tan = beta - np.arccos(min((r_eff + th_b / 2) / dist, 1.0))
        theta_tan = max(theta_tan, theta_ins + 0.05)
        thetas = np.linspace(theta_tan, theta_ins, max(2, int(np.degrees(theta_tan - theta_ins) / 7) + 2))
        arc = [gl.on_globe(_arc(ant, phi, t), lift) for t in thetas]
        control = np.vstack([origin, belly[0], belly[1]] + arc)
        points = smooth_curve(control, 48)
        s, length = _arclength(points)
        s_j = 1 - m.tendon_len / length
        thick = _profile(s, m.belly_pos, s_j, m.origin_thick, th_b, m.tendon_thick)
        wide = _profile(s, m.belly_pos, s_j, m.origin_wide, wd_b, m.insertion_wide * 0.9, m.insertion_wide)
        # Nodes that lie on the globe sit on its surface at half their own thickness.
        for i, p in enumerate(points):
            rel = p - gl.c
            if rel @ ant > -2.0 and np.linalg.norm(rel / gl.r) < 1.0 + (thick[i] / 2 + 1.5) / r_eff:
                surface, normal = gl.surface(rel)
                points[i] = surface + normal * (thick[i] / 2)
        dirs = self._thin_dirs(points, phi)
        path = {"points": points, "thick": thick, "wide": wide, "dirs": dirs, "length": length,
                "s_junction": s_j, "theta_tan": theta_tan}
        self.paths[key] = path
        return path

    def rectus(self, key: str) -> Shape:
        p = self.paths.get(key) or self.rectus_path(key)
        tube = Tube(p["points"], p["thick"], p["wide"], p["dirs"])
        self.info.setdefault("muscle_length_mm", {})[key] = round(p["length"], 2)
        return Intersection(tube, Offset(self.cavity_shape(), -0.2))

    # --- optic nerve ---------------------------------------------------------------------------------
    def nerve_path(self) -> dict:
        o, gl = self.o, self.globe
        nv = o.nerve
        nasal, down = np.radians(nv["exit_nasal_deg"]), np.radians(nv["exit_down_deg"])
        direction = np.array([-np.sin(nasal) * np.cos(down), np.cos(nasal) * np.cos(down), -np.sin(down)])
        exit_point, normal = gl.surface(direction)
        start = exit_point - normal * 0.6
        end = np.asarray(o.canal, dtype=float)
        chord = end - exit_point
        straight = float(np.linalg.norm(chord))
        t_hat = chord / straight
        horiz = _unit(np.cross(t_hat, [0.0, 0.0, 1.0]))
        vert = _unit(np.cross(horiz, t_hat))
        s = np.linspace(0, 1, 48)
        leave = 4.0 * normal  # leave the globe along its normal before curving to the canal

        def curve(amp):
            base = exit_point[None, :] + s[:, None] * chord[None, :]
            bend = (np.sin(2 * np.pi * (s + nv["phase"] * s * (1 - s)))[:, None] * horiz * nv["s_amp"]
                    + np.sin(np.pi * s)[:, None] * (-vert) * nv["sag"])
            lead = (s * (1 - s) ** 3)[:, None] * leave * 4
            return base + amp * bend + lead

        # The nerve's length is set in the normal globe position; proptosis uses up its slack.
        rest = exit_point + np.array([0.0, o.proptosis, 0.0])
        target = max(float(np.linalg.norm(end - rest)) * nv["slack"], straight * 1.01)
        lo, hi = 0.0, 12.0
        for _ in range(40):
            mid = (lo + hi) / 2
            if _arclength(curve(mid))[1] < target:
                lo = mid
            else:
                hi = mid
        points = curve((lo + hi) / 2)
        points[0] = start
        sn, length = _arclength(points)
        outer = np.interp(sn, [0, 0.15, 0.35, 0.7, 1.0], [nv["d_bulb"], nv["d_bulb"] * 0.93, nv["d_mid"],
                                                            nv["d_mid"] * 0.95, nv["d_apex"]])
        csf = np.interp(sn, [0, 0.25, 1.0], [nv["csf"], nv["csf"] * 0.7, 0.15])
        path = {"points": points, "outer": outer, "csf": csf, "length": length, "straight": straight,
                "exit": exit_point}
        self.info["optic_nerve_length_mm"] = round(length, 2)
        self.info["optic_nerve_chord_mm"] = round(straight, 2)
        self.paths["optic_nerve"] = path
        return path

    # --- layers --------------------------------------------------------------------------------------
    def layers(self) -> list[Layer]:
        o, w, gl = self.o, self.walls, self.globe
        side = o.side
        lab = lambda key: structures.label_value(side, key)  # noqa: E731
        out: list[tuple[str, Shape, str, int]] = []
        cavity = self.cavity_shape()
        box_lo, box_hi = w.box()

        # Bony orbit: walls of their own thickness, only behind the rim plane.
        grow = o.wall
        skin = self.skin
        shell = self._f(lambda u, y, z: lazy_max(u, y, z, [lambda u, y, z: w.behind_rim(u, y, z),
                                                           lambda u, y, z: w.cavity(u, y, z, grow, cap=0.3 + 2.5),
                                                           lambda u, y, z: skin(u, y, z) + F32(3.0)]),
                        box_lo, box_hi)
        out.append(("orbit_wall", shell, "thin_bone", 0))

        # Optic canal, superior and inferior orbital fissures (soft-tissue channels through the apex).
        c = np.asarray(o.canal, dtype=float)
        cdir = _unit(o.canal_dir)
        canal_pts = np.array([c - cdir * 1.0, c + cdir * 14.0])
        rc = 2 * o.canal_radius
        out.append(("optic_canal", Tube(canal_pts, [rc, rc], [rc, rc]), "dura", 0))
        sof = np.array([[c[0] + 4.0, c[1] - 5.0, c[2] - 0.5], [c[0] + 8.0, c[1] + 2.0, c[2] - 2.0],
                        [c[0] + 11.0, c[1] + 9.0, c[2] - 4.0]])
        out.append(("superior_orbital_fissure", Tube(sof, [2.2, 2.6, 3.0], [6.0, 7.5, 8.0], [[1, 0, 0]] * 3),
                    "orbital_fat", 0))
        y_iof = c[1] - 15.0
        u_iof = float(w.u_lat(F32(y_iof))) - 2.0
        iof = np.array([[u_iof, y_iof, float(w.z_floor(F32(u_iof), F32(y_iof))) + 0.5],
                        [c[0] + 7.0, c[1] - 2.0, c[2] - 6.0], [c[0] + 10.0, c[1] + 6.0, c[2] - 10.0]])
        out.append(("inferior_orbital_fissure", Tube(iof, [2.0, 2.0, 2.5], [5.0, 6.0, 6.0], [[0, 0, 1]] * 3),
                    "orbital_fat", 0))

        # Soft tissue in front of the rim inside the orbital opening (lids, orbicularis), then orbital fat.
        front = self._f(lambda u, y, z: lazy_max(u, y, z, [lambda u, y, z: -w.behind_rim(u, y, z),
                                                           lambda u, y, z: w.cavity(u, y, z, None), skin]),
                        box_lo, box_hi)
        out.append(("preseptal_tissue", front, "soft_tissue", 0))
        septum = Ellipsoid(gl.c, gl.r + o.lids["septum_gap"])
        lid = F32(o.lids["thick"] + 0.4)

        def fat_fn(u, y, z):
            return lazy_max(u, y, z, [lambda u, y, z: np.minimum(w.behind_rim(u, y, z), septum(u, y, z)),
                                      lambda u, y, z: w.cavity(u, y, z, None),
                                      lambda u, y, z: skin(u, y, z) + lid])
        out.append(("orbital_fat", self._f(fat_fn, box_lo, box_hi), "orbital_fat", 0))

        if o.lids["open"] > 0.5:
            half_h = o.lids["fissure"] / 2
            zf = gl.c[2] - 0.8
            almond = Ellipsoid([gl.c[0] + 0.8, gl.c[1], zf], [o.lids["width"], 40.0, half_h])
            globe_sdf = Ellipsoid(gl.c, gl.r)
            reach = F32(o.lids["thick"] + 1.5)
            cy = F32(gl.c[1] - 4.0)

            def fissure_fn(u, y, z):
                d = np.maximum(almond(u, y, z), y - cy)
                return np.maximum(d, globe_sdf(u, y, z) - reach)
            lo = [gl.c[0] - o.lids["width"], gl.c[1] - 20, zf - half_h]
            hi = [gl.c[0] + o.lids["width"] + 2, gl.c[1] - 3, zf + half_h]
            out.append(("palpebral_fissure", self._f(fissure_fn, lo, hi), "air", 0))

        inner = Offset(cavity, -0.2)
        out.append(("lacrimal_gland", Intersection(self._gland(), inner), "lacrimal_gland", 0))
        for name, tube in self._vessels():
            out.append((name, Intersection(tube, inner), "vessel", 0))
        out.append(("inferior_oblique", Intersection(self._inferior_oblique(), inner), "confuser_muscle", 0))
        so_belly, trochlea, so_tendon = self._superior_oblique()
        out.append(("superior_oblique", Intersection(so_belly, inner), "confuser_muscle", 0))
        out.append(("superior_oblique_tendon", Intersection(so_tendon, inner), "confuser_muscle", 0))
        out.append(("trochlea", trochlea, "trochlea", 0))
        for key in RECTI:
            self.rectus_path(key)
        out.append(("levator", Intersection(self._levator(), inner), "confuser_muscle", 0))
        for key in RECTI:
            out.append((key, self.rectus(key), "rectus", lab(key)))

        # Optic nerve: the label covers nerve + CSF + dural sheath up to the orbital opening of the canal.
        npath = self.nerve_path()
        canal_nerve = np.array([c - cdir * 0.6, c + cdir * 14.0])
        dc = o.nerve["d_apex"] - 0.6
        out.append(("canal_nerve", Tube(canal_nerve, [dc, dc], [dc, dc]), "nerve", 0))
        cap = self._f(lambda u, y, z: y - F32(c[1]), [-1e3] * 3, [1e3] * 3)
        pts, outer, csf = npath["points"], npath["outer"], npath["csf"]
        dura = o.nerve["dura"]
        out.append(("optic_nerve_sheath", Intersection(Tube(pts, outer, outer), cap), "dura", lab("optic_nerve")))
        inner_d = outer - 2 * dura
        out.append(("optic_nerve_csf", Intersection(Tube(pts, inner_d, inner_d), cap), "csf", lab("optic_nerve")))
        core = np.maximum(inner_d - 2 * csf, 2.6)
        out.append(("optic_nerve", Intersection(Tube(pts, core, core), cap), "nerve", lab("optic_nerve")))

        # Globe: sclera/cornea, vitreous, aqueous, iris, lens (all labelled globe).
        g_lab = lab("globe")
        globe = Ellipsoid(gl.c, gl.r)
        out.append(("globe", globe, "sclera", g_lab))
        out.append(("vitreous", Offset(globe, -o.sclera), "vitreous", g_lab))
        front_y = gl.c[1] - gl.r[1]
        iris_y = front_y + o.lens_depth
        chamber = self._f(lambda u, y, z: np.maximum(globe(u, y, z) + F32(0.55), y - F32(iris_y)),
                          gl.c - gl.r, gl.c + gl.r)
        out.append(("anterior_chamber", chamber, "aqueous", g_lab))
        iris_disc = Ellipsoid([gl.c[0], iris_y, gl.c[2]], [6.0, 0.25, 6.0])
        pupil = Ellipsoid([gl.c[0], iris_y, gl.c[2]], [o.pupil, 2.0, o.pupil])
        iris = self._f(lambda u, y, z: np.maximum(np.maximum(iris_disc(u, y, z), -pupil(u, y, z)), globe(u, y, z)
                                                  + F32(0.5)), iris_disc.lo, iris_disc.hi)
        out.append(("iris", iris, "soft_tissue", g_lab))
        lr, la = o.lens_radii
        lens = Ellipsoid([gl.c[0], iris_y + 0.2 + la, gl.c[2]], [lr, la, lr])
        out.append(("lens", lens, "lens", g_lab))

        self.info["globe_centre_side_frame"] = [round(v, 3) for v in gl.c]
        return [Layer(f"{side}_{name}", Mirrored(shape, self.sign), material, label)
                for name, shape, material, label in out]

    # --- confusers -----------------------------------------------------------------------------------
    def _gland(self) -> Shape:
        o, gl = self.o, self.globe
        g = o.gland
        radial = _unit([0.62, -0.12, 0.78])
        centre = gl.on_globe(radial, 2.0 + g["thick"] / 2) + np.array([0.0, g["shift"], 0.0])
        along = _unit(np.cross(radial, [0.0, 1.0, 0.0]))
        ap = _unit(np.cross(along, radial))
        rot = np.stack([along, ap, radial], axis=1)
        return Ellipsoid(centre, [g["length"] / 2, g["width"] / 2, g["thick"] / 2], rot)

    def _levator(self) -> Shape:
        """The levator: a layer of its own thickness moulded on the superior rectus's upper surface (no
        fat between them), then the aponeurosis over the globe into the upper lid."""
        o, gl = self.o, self.globe
        sr = self.paths["superior_rectus"]
        lv = o.levator
        pts, th, dirs = sr["points"], sr["thick"], sr["dirs"]
        n_body = int(0.72 * len(pts))
        s_body = np.linspace(0, 1, n_body)
        lev_th = np.interp(s_body, [0, 0.2, 1], [1.0, lv["thick"], lv["thick"]])
        lev_wide = np.interp(s_body, [0, 0.2, 1], [3.5, lv["wide"], lv["wide"] + 1.0])
        # A band whose lower edge reaches the rectus's centre line, cut to the rectus grown by the levator
        # thickness: what remains above the rectus (painted first, the rectus wins) hugs its surface.
        centre = pts[:n_body] + dirs[:n_body] * (th[:n_body, None] / 2 + lv["gap"])
        band = Tube(centre, th[:n_body] + 2 * lev_th, lev_wide, dirs[:n_body])
        body = Intersection(band, Offset(Tube(pts, th, sr["wide"], dirs), float(lv["thick"] + lv["gap"])))
        top = gl.c[2] + gl.r[2]
        start = pts[n_body - 1] + dirs[n_body - 1] * (th[n_body - 1] / 2 + lv["thick"] / 2 + lv["gap"])
        tail = np.array([
            start,
            [gl.c[0], gl.c[1] - 1.0, top + 2.6],
            [gl.c[0], gl.c[1] - 7.5, gl.c[2] + gl.r[2] * 0.8 + 2.2],
            [gl.c[0], gl.c[1] - gl.r[1] + 0.2, gl.c[2] + 5.5],
        ])
        points = smooth_curve(tail, 24)
        s, _ = _arclength(points)
        thick = np.interp(s, [0, 0.3, 1], [lv["thick"], 0.9, 0.6])
        wide = np.interp(s, [0, 0.4, 1], [lv["wide"] + 1.0, lv["apo_wide"], lv["apo_wide"]])
        front = Tube(points, thick, wide, self._thin_dirs(points, [0, 0, 1]))
        return Union(body, front)

    def _superior_oblique(self):
        o, w, gl = self.o, self.walls, self.globe
        so = o.superior_oblique
        cu, yc, cz = o.canal
        origin = np.array([cu - 1.2, yc - 1.0, cz + 4.0])
        y_t = float(w.rim_y(F32(o.medial_front + 3.0), F32(o.roof_front))) + 4.0
        u_tr = float(w.u_med(F32(y_t))) + 3.2
        z_tr = float(w.z_roof(F32(u_tr), F32(y_t))) - 3.4
        trochlea_pt = np.array([u_tr, y_t, z_tr])
        mids = []
        for frac in (0.35, 0.7):
            y = yc + frac * (y_t - yc)
            u = float(w.u_med(F32(y))) + 1.0 + so["thick"] / 2
            z = float(w.z_roof(F32(u), F32(y))) - 1.0 - so["thick"] / 2
            mids.append([u, y, z])
        pts = smooth_curve(np.vstack([origin, mids, trochlea_pt]), 32)
        s, _ = _arclength(pts)
        th = np.interp(s, [0, 0.12, 0.5, 0.72, 1], [1.4, so["thick"], so["thick"], so["tendon"], so["tendon"]])
        belly = Tube(pts, th, th * 1.25, self._thin_dirs(pts, [-0.7, 0, 0.7]))
        troch = Ellipsoid(trochlea_pt, [2.4, 2.0, 2.4])
        insertion = gl.on_globe([0.45, 0.35, 0.82], 0.5)
        over = gl.on_globe([-0.15, -0.25, 1.0], 0.7)
        tpts = smooth_curve(np.vstack([trochlea_pt, over, insertion]), 24)
        ts, _ = _arclength(tpts)
        tendon = Tube(tpts, np.interp(ts, [0, 1], [so["tendon"], 0.7]), np.interp(ts, [0, 0.6, 1], [2.0, 5.0, 9.0]),
                      self._thin_dirs(tpts, [0, 0, 1]))
        return belly, troch, tendon

    def _inferior_oblique(self) -> Shape:
        o, w, gl = self.o, self.walls, self.globe
        io = o.inferior_oblique
        u0 = o.medial_front + 3.5
        y0 = float(w.rim_y(F32(u0), F32(o.floor_front))) + 3.0
        z0 = float(w.z_floor(F32(u0), F32(y0))) + 1.8
        bottom = gl.c[2] - gl.r[2]
        pts = smooth_curve(np.array([
            [u0, y0, z0],
            [gl.c[0] - 3.0, gl.c[1] - 3.0, bottom - 2.2 - io["thick"] / 2],
            [gl.c[0] + 6.0, gl.c[1] + 2.0, bottom + 2.0 - io["thick"] / 2],
            gl.on_globe([0.72, 0.5, -0.45], 0.8),
        ]), 32)
        s, _ = _arclength(pts)
        th = np.interp(s, [0, 0.15, 0.6, 1], [1.5, io["thick"], io["thick"], 0.9])
        wd = np.interp(s, [0, 0.15, 0.6, 1], [3.0, io["wide"], io["wide"], 8.5])
        return Tube(pts, th, wd, self._thin_dirs(pts, [0, 0, -1]))

    def _vessels(self) -> list[tuple[str, Tube]]:
        o, w, gl = self.o, self.walls, self.globe
        v = o.vessels
        cu, yc, cz = o.canal
        npath = self.paths.get("optic_nerve") or self.nerve_path()
        on_mid = npath["points"][len(npath["points"]) // 2]
        y_t = float(w.rim_y(F32(o.medial_front + 5.0), F32(o.roof_front))) + 5.0
        u_a = float(w.u_med(F32(y_t))) + 5.5
        sov = smooth_curve(np.array([
            [u_a, y_t, float(w.z_roof(F32(u_a), F32(y_t))) - 4.5],
            [gl.c[0] - 3.0, gl.c[1] + 8.0, gl.c[2] + gl.r[2] - 1.0],
            [on_mid[0] + 1.0, on_mid[1], on_mid[2] + 2.6 + v["sov"] / 2 + 0.6],
            [cu + 5.0, yc - 3.0, cz + 2.5],
        ]), 32)
        out = [("superior_ophthalmic_vein", Tube(sov, np.full(32, v["sov"]), np.full(32, v["sov"])))]
        art = smooth_curve(np.array([
            [cu + 1.5, yc - 1.0, cz - 1.8],
            [on_mid[0] + 3.2, yc - 7.0, on_mid[2]],
            [on_mid[0], on_mid[1] - 2.0, on_mid[2] + 3.6],
            [float(w.u_med(F32(gl.c[1] + 8.0))) + 3.0, gl.c[1] + 8.0, gl.c[2] + 3.0],
            [float(w.u_med(F32(gl.c[1] - 4.0))) + 3.5, gl.c[1] - 4.0, gl.c[2] + 6.0],
        ]), 40)
        out.append(("ophthalmic_artery", Tube(art, np.full(40, v["artery"]), np.full(40, v["artery"]))))
        rng = np.random.default_rng(int(v["seed"]))
        for i in range(int(v["small"])):
            y = rng.uniform(gl.c[1] + 6, yc - 6)
            axis = self.axis_point(y)
            ang = rng.uniform(0, 2 * np.pi)
            rad = rng.uniform(5.0, 11.0)
            start = axis + np.array([np.cos(ang) * rad, 0, np.sin(ang) * rad])
            step = _unit([rng.normal(0, 0.5), rng.choice([-1, 1]), rng.normal(0, 0.5)]) * rng.uniform(3, 6)
            pts = [start]
            for _ in range(3):
                step = _unit(step + rng.normal(0, 0.35, 3)) * np.linalg.norm(step)
                pts.append(pts[-1] + step)
            d = rng.uniform(0.5, 1.2)
            out.append((f"vessel_{i}", Tube(smooth_curve(np.array(pts), 16), np.full(16, d), np.full(16, d))))
        return out
