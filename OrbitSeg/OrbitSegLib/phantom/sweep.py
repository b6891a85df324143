"""The second anatomy model ("sweep"): the orbit's contents built another way than :mod:`.orbit`.

The head and the bony landmarks (rims, canal, sinuses, skull) come from :func:`.anatomy.draw_anatomy`,
so both models share one head; everything inside the orbit is drawn and built here with other
modelling choices, so that a model trained on one cannot learn the other's habits:

- **Bony orbit**: a rounded cone (superellipse cross-section, exponent 2.3-4) from the optic canal to
  the entrance, 40-50 mm deep (the classic model: four wall surfaces, 39-44 mm).
- **Globe**: axial length 21-27 mm (normal around 23.6 +- 0.9 mm), the transverse and vertical
  diameters following it at a third of the rate, plus a corneal cap (radius 7.4-8.2 mm); its position
  from a drawn Hertel exophthalmometry value (12-21 mm normal) instead of from the orbit.
- **Recti**: each a superellipse cross-section swept along a centre line from its origin on the annulus
  of Zinn, along the cone wall, tangentially onto the globe and to its insertion (5.3-7.7 mm behind the
  limbus, as in the classic model); the cross-sectional *area* follows a published-style profile (small
  at the annulus, maximal 50-62% of the way, falling to a thin tendon of 3.5-9 mm at the insertion) with
  peak areas calibrated to the reference volumes (SR 0.5, IR 0.6, MR 0.7, LR 0.65 cm3).
- **TAO**: a whole-orbit *pattern* of involved muscles (IR alone, IR+MR, IR+MR+SR, all four, MR alone,
  SR-levator complex, fat-predominant), each involved belly's area enlarged 1.6-2.3x (tendon and
  origin spared), fat expanded up to 1.4x, and the proptosis computed from the added volume over the
  orbital entrance.
- **Optic nerve**: a cubic curve with two opposite bends (an S) whose length is 5-15% over the chord,
  nerve 3-4 mm across inside a 5-6.5 mm sheath (bulbous behind the globe).
- **Confusers**: the levator as a band 0-0.4 mm above the superior rectus, the superior oblique along
  the superomedial cone wall to the trochlea with its reflected tendon, the inferior oblique, the
  lacrimal gland and the superior ophthalmic vein.

All lengths in mm in the side frame of :mod:`.anatomy` (u lateral from the midline, y posterior, z up).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .. import structures
from .anatomy import RECTI, Anatomy, Orbit, draw_anatomy
from .orbit import LIMBUS_RADIUS, Globe, Mirrored, Walls, _arc, _arclength, _unit, side_sign
from .render import Layer
from .shapes import Ellipsoid, Function, Intersection, Offset, Shape, SuperTube, lazy_max, smooth_curve, \
    superellipse_distance

F32 = np.float32

# key: (peak cross-sectional area mm2 mean, belly thickness mean mm, sd), calibrated so the labelled
# volumes match the reference (SR 0.5, IR 0.6, MR 0.7, LR 0.65 cm3); insertion behind the limbus (mm).
RECTUS_AREA = {"superior_rectus": (19.0, 4.1, 0.7), "inferior_rectus": (22.0, 4.2, 0.7),
               "medial_rectus": (25.0, 4.2, 0.6), "lateral_rectus": (23.0, 3.4, 0.6)}
INSERTION = {"superior_rectus": (7.0, 7.7), "inferior_rectus": (6.6, 6.9), "medial_rectus": (5.3, 5.7),
             "lateral_rectus": (6.7, 7.1)}
TENDON = {"superior_rectus": (5.0, 6.5), "inferior_rectus": (4.5, 6.0), "medial_rectus": (3.5, 4.5),
          "lateral_rectus": (7.0, 9.0)}
FAT_CM3, ENTRANCE_CM2 = 9.0, 10.0  # normal orbital fat volume, area of the orbital entrance

# Cross-section directions (side frame) and the origin on the annulus of Zinn around the canal (u, z).
DIRECTION = {"superior_rectus": (0.0, 1.0), "inferior_rectus": (0.0, -1.0), "medial_rectus": (-1.0, 0.0),
             "lateral_rectus": (1.0, 0.0)}
ANNULUS = {"superior_rectus": (0.5, 3.2), "inferior_rectus": (0.6, -3.4), "medial_rectus": (-2.0, 0.0),
           "lateral_rectus": (3.6, -0.4)}
# TAO involvement patterns (muscles enlarged) and their frequencies; IR and MR most often.
TAO_PATTERNS = [(("inferior_rectus",), 0.2), (("inferior_rectus", "medial_rectus"), 0.25),
                (("inferior_rectus", "medial_rectus", "superior_rectus"), 0.15), (RECTI, 0.15),
                (("medial_rectus",), 0.08), (("superior_rectus",), 0.07), ((), 0.10)]


@dataclass
class SweepRectus:
    """One rectus of the sweep model: peak area (mm2, before TAO), belly thickness (mm), where the peak
    lies (fraction of the path), the profile's spread before and after it, tendon length, thickness and
    insertion width, insertion behind the limbus, gap to the cone wall, superellipse exponent and the
    TAO area factor of the belly (1 = normal)."""

    peak_area: float
    belly_thick: float
    peak_at: float
    rise: float
    fall: float
    tendon_len: float
    tendon_thick: float
    insertion_wide: float
    insertion_dist: float
    wall_gap: float
    exponent: float
    enlargement: float


@dataclass
class SweepOrbit(Orbit):
    """An orbit of the sweep model: the classic orbit's landmarks (shared with the head) plus the
    cone, globe, nerve and confuser parameters of this model (``muscles`` holds :class:`SweepRectus`)."""

    cone: dict[str, float]
    cornea: dict[str, float]
    axial_length: float
    hertel: float
    tao_pattern: list[str]
    nerve_curve: dict[str, float]


def _u(rng, low, high) -> float:
    return float(rng.uniform(low, high))


def _pattern(rng: np.random.Generator) -> tuple[str, ...]:
    weights = np.array([w for _, w in TAO_PATTERNS])
    return TAO_PATTERNS[int(rng.choice(len(TAO_PATTERNS), p=weights / weights.sum()))][0]


def draw_sweep_anatomy(rng: np.random.Generator, tao: bool) -> Anatomy:
    """Draw one head of the sweep model (the head and bony landmarks from :func:`draw_anatomy`)."""
    base = draw_anatomy(rng, tao)
    base.model = "sweep"
    drawn_severity = _u(rng, 0.25, 1.0)
    base.severity = drawn_severity if tao else 0.0
    axial = float(np.clip(rng.normal(23.6, 0.9), 21.0, 27.0))
    depth = _u(rng, 40.0, 50.0)
    hertel = float(np.clip(rng.normal(16.5, 1.8), 12.0, 21.0))
    # The TAO draws are always made, so a case with and without TAO is the same head.
    drawn_pattern = _pattern(rng)
    pattern = drawn_pattern if tao else ()
    fat_tao = _u(rng, 1.2, 1.4) if not drawn_pattern else _u(rng, 1.05, 1.4)  # empty: fat-predominant
    worse = "right" if rng.uniform() < 0.5 else "left"
    shared_area = {k: float(rng.normal(1.0, 0.1)) for k in RECTI}
    for side, o in list(base.orbits.items()):
        j = lambda s=1.0: float(rng.normal(0, s))  # noqa: E731 - small asymmetry jitter
        side_sev = drawn_severity if side == worse else drawn_severity * _u(rng, 0.5, 1.0)
        muscles = {}
        for key in RECTI:
            area, thick, sd = RECTUS_AREA[key]
            involved = float(np.clip(1.6 + 0.7 * side_sev * _u(rng, 0.5, 1.0), 1.6, 2.3))
            swollen = _u(rng, 1.0, 1.12)
            enlarge = 1.0 if not tao else involved if key in pattern else swollen
            muscles[key] = SweepRectus(
                peak_area=area * float(np.clip(shared_area[key] + j(0.03), 0.75, 1.25)),
                belly_thick=float(np.clip(rng.normal(thick, sd * 0.8), thick - 1.6 * sd, thick + 1.6 * sd)),
                peak_at=_u(rng, 0.5, 0.62), rise=_u(rng, 0.3, 0.42), fall=_u(rng, 0.17, 0.25),
                tendon_len=_u(rng, *TENDON[key]), tendon_thick=_u(rng, 0.5, 0.9),
                insertion_wide=_u(rng, 9.0, 11.0), insertion_dist=_u(rng, *INSERTION[key]),
                wall_gap=_u(rng, 0.3, 1.8), exponent=_u(rng, 2.4, 3.6), enlargement=enlarge)
        al = axial + j(0.15)
        width = 24.6 + 0.33 * (al - 23.6) + j(0.25)
        height = width - _u(rng, 0.0, 0.5)
        radii = [width / 2, al / 2, height / 2]
        # Proptosis: the added muscle and fat volume pushed out through the entrance (about 10 cm2).
        added_muscle = sum(0.55 * m.peak_area * (m.enlargement - 1) * 30.0 for m in muscles.values()) / 1000.0
        fat = float(np.clip(1.0 + (fat_tao - 1.0) * (side_sev / drawn_severity if tao else 0.0) + j(0.01),
                            0.97, 1.4))
        proptosis = (added_muscle + (fat - 1.0) * FAT_CM3) / ENTRANCE_CM2 * 10.0 if tao else 0.0
        fields_ = {f.name: getattr(o, f.name) for f in fields(Orbit)}
        # The corneal apex lies ``hertel`` (+ proptosis) in front of the lateral rim.
        apex_y = o.lateral_rim[1] - hertel - proptosis
        fields_.update(globe_centre=[o.globe_centre[0], apex_y + al / 2, o.globe_centre[2]], globe_radii=radii,
                       proptosis=proptosis, fat_factor=fat, depth=depth, muscles=muscles)
        cone = {"exponent": _u(rng, 2.3, 3.5), "profile": _u(rng, 0.9, 1.25), "bulge": _u(rng, 0.05, 0.15),
                "apex_radius": _u(rng, 4.0, 5.5)}
        sweep = SweepOrbit(**fields_, cone=cone, cornea={"radius": _u(rng, 7.4, 8.2), "rise": _u(rng, 1.8, 2.6)},
                           axial_length=al, hertel=hertel + proptosis, tao_pattern=list(pattern),
                           nerve_curve={"bend": _u(rng, 0.4, 1.0), "second": _u(rng, -1.0, -0.3),
                                        "sag": _u(rng, -0.5, 1.0), "slack": _u(rng, 1.05, 1.15),
                                        "nerve": _u(rng, 3.0, 4.0), "sheath": _u(rng, 5.0, 6.0),
                                        "bulb": _u(rng, 0.3, 0.8), "dura": _u(rng, 0.3, 0.5)})
        _place_canal(sweep, depth)
        base.orbits[side] = sweep
    return base


def _place_canal(o: SweepOrbit, depth: float) -> None:
    """Move the optic canal back along the line entrance centre -> canal so the orbit is ``depth`` deep."""
    centre = _entrance_centre(o)
    canal = np.asarray(o.canal, dtype=float)
    o.canal = [float(v) for v in centre + _unit(canal - centre) * depth]


def _entrance_centre(o: Orbit) -> np.ndarray:
    w = Walls(o)
    cu = (o.medial_front + o.lateral_rim[0]) / 2
    cz = (o.roof_front + o.floor_front) / 2
    return np.array([cu, float(w.rim_y(F32(cu), F32(cz))), cz])


class Cone:
    """The bony orbit as a rounded cone: apex at the optic canal, axis to the entrance centre, a
    superellipse cross-section (half-width ``a``, half-height ``b``) growing as (axial fraction)^p with a
    slight bulge, constant in front of the entrance."""

    def __init__(self, o: SweepOrbit):
        self.o = o
        self.apex = np.asarray(o.canal, dtype=float)
        entrance = _entrance_centre(o)
        self.length = float(np.linalg.norm(entrance - self.apex))
        self.axis = (entrance - self.apex) / self.length
        eu = np.array([1.0, 0.0, 0.0]) - self.axis[0] * self.axis
        self.eu = eu / np.linalg.norm(eu)
        ez = np.cross(self.axis, self.eu)
        self.ez = ez if ez[2] > 0 else -ez
        self.a = (o.lateral_rim[0] - o.medial_front) / 2
        self.b = (o.roof_front - o.floor_front) / 2
        c = o.cone
        self.n, self.p, self.bulge, self.r0 = c["exponent"], c["profile"], c["bulge"], c["apex_radius"]

    def half_sizes(self, tau):
        """Half-width and half-height (mm) at axial fraction ``tau`` (0 apex, 1 entrance)."""
        t = np.clip(tau, 0, 1)
        grow = t ** F32(self.p) * (1 + F32(4 * self.bulge) * t * (1 - t))
        return (np.maximum(F32(self.a) * grow, F32(self.r0)), np.maximum(F32(self.b) * grow, F32(self.r0)))

    def local(self, u, y, z):
        """(axial mm from the apex, horizontal mm, vertical mm) of side-frame points."""
        ru, ry, rz = u - F32(self.apex[0]), y - F32(self.apex[1]), z - F32(self.apex[2])
        comp = lambda e: ru * F32(e[0]) + ry * F32(e[1]) + rz * F32(e[2])  # noqa: E731
        return comp(self.axis), comp(self.eu), comp(self.ez)

    def point(self, tau: float, x: float, z: float) -> np.ndarray:
        """Side-frame point at axial fraction ``tau`` and cross-section offsets (x, z) mm."""
        return self.apex + self.axis * tau * self.length + self.eu * x + self.ez * z

    def radius(self, tau: float, direction) -> float:
        """Distance from the axis to the wall at ``tau`` along a cross-section direction (x, z)."""
        a, b = (float(v) for v in self.half_sizes(np.float32(tau)))
        dx, dz = direction
        return float(1.0 / ((abs(dx) / a) ** self.n + (abs(dz) / b) ** self.n) ** (1 / self.n))

    def distance(self, u, y, z, grow: float | dict = 0.0):
        """Signed distance (mm, approximate) to the cone cavity grown by ``grow`` (mm, or per wall)."""
        t, x, zz = self.local(u, y, z)
        a, b = self.half_sizes(t / F32(self.length))
        d = superellipse_distance(x, zz, a, b, self.n) * F32(0.92)
        if isinstance(grow, dict):
            x2, z2 = np.maximum(x, 0) ** 2, np.maximum(-x, 0) ** 2
            z2u, z2d = np.maximum(zz, 0) ** 2, np.maximum(-zz, 0) ** 2
            total = x2 + z2 + z2u + z2d + F32(1e-6)
            d -= (x2 * F32(grow["lateral"]) + z2 * F32(grow["medial"]) + z2u * F32(grow["roof"])
                  + z2d * F32(grow["floor"])) / total
            cap = float(np.mean(list(grow.values())))
        else:
            d -= F32(grow)
            cap = float(grow)
        return np.maximum(d, -t - F32(0.3 + cap))


class SweepOrbitBuilder:
    """Builds the layers of one sweep-model orbit (same interface as :class:`.orbit.OrbitBuilder`)."""

    def __init__(self, o: SweepOrbit, skin: Shape):
        self.o = o
        self.walls = Walls(o)
        self.cone = Cone(o)
        self.globe = Globe(o)
        self.skin = skin
        self.sign = side_sign(o.side)
        self.info: dict = {"model": "sweep", "axial_length_mm": round(o.axial_length, 2),
                           "orbit_depth_mm": round(self.cone.length, 2), "tao_pattern": o.tao_pattern}
        self.paths: dict[str, dict] = {}

    def _f(self, fn, lo, hi) -> Function:
        return Function(fn, lo, hi)

    def box(self):
        lo, hi = self.walls.box(margin=8.0)
        hi[1] = max(hi[1], float(self.cone.apex[1]) + 6.0)
        return lo, hi

    # --- recti ----------------------------------------------------------------------------------------
    def rectus_path(self, key: str) -> dict:
        o, cone, gl = self.o, self.cone, self.globe
        m = o.muscles[key]
        dx, dz = DIRECTION[key]
        phi = np.array([dx, 0.0, dz])
        ant = np.array([0.0, -1.0, 0.0])
        area_b = m.peak_area * m.enlargement
        th_b = m.belly_thick * m.enlargement ** 0.6
        # Origin on the annulus, then belly nodes hugging the cone wall in the muscle's direction.
        au, az = ANNULUS[key]
        nodes = [np.asarray(o.canal, dtype=float) + np.array([au, -0.6, az])]
        tau_globe = 1.0 - (float(np.linalg.norm(_entrance_centre(o) - gl.c)) + gl.r[1] * 0.6) / cone.length
        for frac in (0.3, 0.55, 0.8):
            tau = frac * max(tau_globe, 0.4)
            r = cone.radius(tau, (dx, dz)) - m.wall_gap - th_b / 2 * (0.6 + 0.4 * frac)
            if key == "superior_rectus":
                r -= o.levator["thick"]
            nodes.append(cone.point(tau, dx * r, dz * r))
        r_eff = gl.mean_r
        theta_ins = (np.arcsin(LIMBUS_RADIUS / r_eff) * r_eff + m.insertion_dist) / r_eff
        rel = nodes[-1] - gl.c
        b_ant, b_phi = rel @ ant, rel @ phi
        beta = np.arctan2(b_phi, b_ant)
        dist = np.hypot(b_ant, b_phi)
        theta_tan = max(beta - np.arccos(min((r_eff + th_b / 2) / dist, 1.0)), theta_ins + 0.05)
        thetas = np.linspace(theta_tan, theta_ins, max(2, int(np.degrees(theta_tan - theta_ins) / 7) + 2))
        arc = [gl.on_globe(_arc(ant, phi, t), m.tendon_thick / 2) for t in thetas]
        points = smooth_curve(np.vstack(nodes + arc), 56)
        s, length = _arclength(points)
        s_tendon = 1.0 - m.tendon_len / length
        # Area profile: a skewed bell around the peak, the annulus at 15% of it, the tendon thin.
        spread = np.where(s < m.peak_at, m.rise, m.fall)
        bell = np.exp(-0.5 * ((s - m.peak_at) / spread) ** 2)
        normal_area = m.peak_area * (0.15 + 0.85 * bell)
        tao_area = normal_area * (1 + (m.enlargement - 1) * bell)
        tendon_area = m.tendon_thick * m.insertion_wide * np.pi / 4
        ramp = np.clip((s - s_tendon) / 0.06 + 1.0, 0, 1)  # muscle-tendon junction over 6% of the path
        area = tao_area * (1 - ramp) + tendon_area * ramp
        belly_ratio = th_b / (4 * area_b / (np.pi * th_b))  # thickness / width at the belly
        ratio = np.interp(s, [0, m.peak_at, 1], [0.6, belly_ratio, m.tendon_thick / m.insertion_wide])
        ratio = np.where(ramp > 0, ratio * (1 - ramp) + (m.tendon_thick / m.insertion_wide) * ramp, ratio)
        # Superellipse area = 4ab Gamma(1+1/n)^2 / Gamma(1+2/n); thickness = 2a, width = 2b.
        from math import gamma
        n = m.exponent
        k = 4 * gamma(1 + 1 / n) ** 2 / gamma(1 + 2 / n)
        half_b = np.sqrt(area / (k * ratio))
        thick, wide = 2 * half_b * ratio, 2 * half_b
        for i, p in enumerate(points):  # nodes on the globe sit on its surface
            rel = p - gl.c
            if rel @ ant > -2.0 and np.linalg.norm(rel / gl.r) < 1.0 + (thick[i] / 2 + 1.5) / r_eff:
                surface, normal = gl.surface(rel)
                points[i] = surface + normal * (thick[i] / 2)
        dirs = self._thin_dirs(points, phi)
        path = {"points": points, "thick": thick, "wide": wide, "dirs": dirs, "length": length}
        self.paths[key] = path
        self.info.setdefault("muscle_length_mm", {})[key] = round(length, 2)
        return path

    def _thin_dirs(self, points: np.ndarray, fallback) -> np.ndarray:
        """Thin axis of a muscle at each node: radial from the cone axis, normal to the globe in front."""
        c, a = self.cone.apex, self.cone.axis
        rel = points - c
        radial = rel - np.outer(rel @ a, a)
        length = np.linalg.norm(radial, axis=1, keepdims=True)
        w = np.clip(length / 4.0, 0, 1)
        dirs = radial / np.maximum(length, 1e-6) * w + np.asarray(fallback, dtype=float) * (1 - w)
        return dirs / np.linalg.norm(dirs, axis=1, keepdims=True)

    def rectus(self, key: str, inner: Shape) -> Shape:
        p = self.paths.get(key) or self.rectus_path(key)
        tube = SuperTube(p["points"], p["thick"], p["wide"], p["dirs"], self.o.muscles[key].exponent)
        return Intersection(tube, inner)

    # --- optic nerve ----------------------------------------------------------------------------------
    def nerve_path(self) -> dict:
        o, gl = self.o, self.globe
        nc = o.nerve_curve
        exit_point, normal = gl.surface([-0.25, 1.0, -0.03])  # about 14 degrees nasal to the posterior pole
        end = np.asarray(o.canal, dtype=float)
        chord = end - exit_point
        straight = float(np.linalg.norm(chord))
        t_hat = chord / straight
        horiz = _unit(np.cross(t_hat, [0.0, 0.0, 1.0]))
        vert = _unit(np.cross(horiz, t_hat))
        s = np.linspace(0, 1, 48)[:, None]

        def curve(scale):
            # Cubic Bezier with control points pushed to opposite sides (an S) and sagging downwards.
            p1 = exit_point + normal * straight / 3 + scale * (horiz * nc["bend"] - vert * nc["sag"])
            p2 = end - t_hat * straight / 3 + scale * (horiz * nc["second"] - vert * nc["sag"] * 0.5)
            return ((1 - s) ** 3 * exit_point + 3 * (1 - s) ** 2 * s * p1 + 3 * (1 - s) * s ** 2 * p2
                    + s ** 3 * end)

        target = straight * nc["slack"]
        lo, hi = 0.0, 30.0
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _arclength(curve(mid))[1] < target else (lo, mid)
        points = curve((lo + hi) / 2)
        points[0] = exit_point - normal * 0.6
        sn, length = _arclength(points)
        sheath = np.interp(sn, [0, 0.12, 0.3, 1.0], [nc["sheath"] + nc["bulb"], nc["sheath"] + nc["bulb"] * 0.5,
                                                     nc["sheath"], nc["sheath"] * 0.82])
        nerve = np.interp(sn, [0, 1], [nc["nerve"], nc["nerve"] * 0.9])
        path = {"points": points, "sheath": sheath, "nerve": nerve, "length": length}
        self.info["optic_nerve_length_mm"] = round(length, 2)
        self.info["optic_nerve_chord_mm"] = round(straight, 2)
        self.paths["optic_nerve"] = path
        return path

    # --- confusers ------------------------------------------------------------------------------------
    def _levator(self) -> Shape:
        """A band 0-0.4 mm above the superior rectus's posterior three quarters, then the aponeurosis over
        the globe into the upper lid."""
        o, gl = self.o, self.globe
        sr = self.paths["superior_rectus"]
        lv = o.levator
        n_body = int(0.75 * len(sr["points"]))
        pts, th, dirs = sr["points"][:n_body], sr["thick"][:n_body], sr["dirs"][:n_body]
        gap = abs(lv["gap"]) * 2.5
        centre = pts + dirs * (th[:, None] / 2 + gap + lv["thick"] / 2)
        s = np.linspace(0, 1, n_body)
        body_th = np.interp(s, [0, 0.2, 1], [1.0, lv["thick"], lv["thick"]])
        body_wd = np.interp(s, [0, 0.2, 1], [3.0, lv["wide"], lv["wide"] + 2.0])
        top = gl.c[2] + gl.r[2]
        tail = smooth_curve(np.array([centre[-1], [gl.c[0], gl.c[1] - 2.0, top + 2.4],
                                      [gl.c[0], gl.c[1] - gl.r[1] + 1.0, gl.c[2] + 6.0]]), 20)
        ts, _ = _arclength(tail)
        tail_th = np.interp(ts, [0, 0.4, 1], [lv["thick"], 0.8, 0.6])
        tail_wd = np.interp(ts, [0, 0.5, 1], [lv["wide"] + 2.0, lv["apo_wide"], lv["apo_wide"]])
        points = np.vstack([centre, tail[1:]])
        up = np.tile([0.0, 0.0, 1.0], (len(tail) - 1, 1))
        return SuperTube(points, np.concatenate([body_th, tail_th[1:]]), np.concatenate([body_wd, tail_wd[1:]]),
                         np.vstack([dirs, up]), 3.0)

    def _superior_oblique(self):
        o, cone, gl = self.o, self.cone, self.globe
        so = o.superior_oblique
        direction = _unit([-0.7, 0.7])
        nodes = []
        for tau in (0.08, 0.4, 0.75):
            r = cone.radius(tau, direction) - 0.8 - so["thick"] / 2
            nodes.append(cone.point(tau, direction[0] * r, direction[1] * r))
        r = cone.radius(0.93, direction) - 2.5
        trochlea_pt = cone.point(0.93, direction[0] * r, direction[1] * r)
        pts = smooth_curve(np.vstack(nodes + [trochlea_pt]), 32)
        s, _ = _arclength(pts)
        th = np.interp(s, [0, 0.1, 0.55, 0.75, 1], [1.3, so["thick"], so["thick"], so["tendon"], so["tendon"]])
        belly = SuperTube(pts, th, th * 1.2, self._thin_dirs(pts, [-0.7, 0, 0.7]), 2.0)
        troch = Ellipsoid(trochlea_pt, [2.2, 2.2, 2.2])
        tpts = smooth_curve(np.vstack([trochlea_pt, gl.on_globe([-0.1, -0.2, 1.0], 0.6),
                                       gl.on_globe([0.5, 0.4, 0.78], 0.4)]), 20)
        ts, _ = _arclength(tpts)
        tendon = SuperTube(tpts, np.interp(ts, [0, 1], [so["tendon"], 0.6]), np.interp(ts, [0, 1], [2.0, 8.0]),
                           self._thin_dirs(tpts, [0, 0, 1]), 2.5)
        return belly, troch, tendon

    def _inferior_oblique(self) -> Shape:
        o, cone, gl = self.o, self.cone, self.globe
        io = o.inferior_oblique
        start = cone.point(0.95, -(cone.radius(0.95, (-0.5, -0.86)) - 2.5) * 0.5,
                           -(cone.radius(0.95, (-0.5, -0.86)) - 2.5) * 0.86)
        bottom = gl.c[2] - gl.r[2]
        pts = smooth_curve(np.array([start, [gl.c[0] - 2.0, gl.c[1] - 2.0, bottom - 1.8 - io["thick"] / 2],
                                     [gl.c[0] + 7.0, gl.c[1] + 3.0, bottom + 2.5 - io["thick"] / 2],
                                     gl.on_globe([0.75, 0.45, -0.45], 0.7)]), 28)
        s, _ = _arclength(pts)
        th = np.interp(s, [0, 0.15, 0.6, 1], [1.4, io["thick"], io["thick"], 0.8])
        wd = np.interp(s, [0, 0.15, 0.6, 1], [3.0, io["wide"], io["wide"], 8.0])
        return SuperTube(pts, th, wd, self._thin_dirs(pts, [0, 0, -1]), 2.5)

    def _gland(self) -> Shape:
        o, gl = self.o, self.globe
        g = o.gland
        radial = _unit([0.6, -0.15, 0.78])
        centre = gl.on_globe(radial, 2.2 + g["thick"] / 2) + np.array([0.0, g["shift"], 0.0])
        along = _unit(np.cross(radial, [0.0, 1.0, 0.0]))
        ap = _unit(np.cross(along, radial))
        return Ellipsoid(centre, [g["length"] / 2, g["width"] / 2, g["thick"] / 2], np.stack([along, ap, radial], 1))

    def _vein(self) -> SuperTube:
        o, gl, cone = self.o, self.globe, self.cone
        d = o.vessels["sov"]
        on_mid = self.paths["optic_nerve"]["points"][24]
        pts = smooth_curve(np.array([
            cone.point(0.92, -(cone.radius(0.92, (-0.6, 0.8)) - 4.0) * 0.6, (cone.radius(0.92, (-0.6, 0.8)) - 4.0) * 0.8),
            [gl.c[0] - 2.0, gl.c[1] + 9.0, gl.c[2] + gl.r[2] - 1.5],
            [on_mid[0] + 1.0, on_mid[1], on_mid[2] + 3.2 + d / 2],
            cone.point(0.1, 3.0, 2.5)]), 32)
        return SuperTube(pts, np.full(32, d), np.full(32, d), None, 2.0)

    # --- layers ---------------------------------------------------------------------------------------
    def layers(self) -> list[Layer]:
        o, w, gl, cone = self.o, self.walls, self.globe, self.cone
        side = o.side
        lab = lambda key: structures.label_value(side, key)  # noqa: E731
        out: list[tuple[str, Shape, str, int]] = []
        box_lo, box_hi = self.box()
        skin = self.skin
        wall = o.wall

        # Bone: the cone grown by each wall's thickness, also covering the head's own orbital cavity
        # (which was shaped by the shared landmarks), behind the rim plane; then the cone's contents.
        def shell(u, y, z):
            return lazy_max(u, y, z, [lambda u, y, z: w.behind_rim(u, y, z),
                                      lambda u, y, z: np.minimum(cone.distance(u, y, z, wall),
                                                                 w.cavity(u, y, z, wall, cap=2.8)),
                                      lambda u, y, z: skin(u, y, z) + F32(3.0)])
        out.append(("orbit_wall", self._f(shell, box_lo, box_hi), "thin_bone", 0))
        c = np.asarray(o.canal, dtype=float)
        canal_dir = _unit(c - _entrance_centre(o))
        rc = 2 * o.canal_radius
        out.append(("optic_canal", SuperTube([c - canal_dir, c + canal_dir * 14.0], [rc, rc], [rc, rc], None, 2.0),
                    "dura", 0))

        def front(u, y, z):
            return lazy_max(u, y, z, [lambda u, y, z: -w.behind_rim(u, y, z), lambda u, y, z: cone.distance(u, y, z),
                                      skin])
        out.append(("preseptal_tissue", self._f(front, box_lo, box_hi), "soft_tissue", 0))
        septum = Ellipsoid(gl.c, gl.r + o.lids["septum_gap"] + 2.0 * (o.fat_factor - 1.0) * 4)
        lid = F32(o.lids["thick"] + 0.4)

        def fat(u, y, z):
            return lazy_max(u, y, z, [lambda u, y, z: np.minimum(w.behind_rim(u, y, z), septum(u, y, z)),
                                      lambda u, y, z: cone.distance(u, y, z), lambda u, y, z: skin(u, y, z) + lid])
        out.append(("orbital_fat", self._f(fat, box_lo, box_hi), "orbital_fat", 0))
        if o.lids["open"] > 0.5:
            half_h = o.lids["fissure"] / 2
            zf = gl.c[2] - 0.8
            almond = Ellipsoid([gl.c[0] + 0.8, gl.c[1], zf], [o.lids["width"], 40.0, half_h])
            globe_sdf = Ellipsoid(gl.c, gl.r)
            reach, cy = F32(o.lids["thick"] + 2.0), F32(gl.c[1] - 4.0)
            out.append(("palpebral_fissure", self._f(
                lambda u, y, z: np.maximum(np.maximum(almond(u, y, z), y - cy), globe_sdf(u, y, z) - reach),
                [gl.c[0] - o.lids["width"], gl.c[1] - 22, zf - half_h],
                [gl.c[0] + o.lids["width"] + 2, gl.c[1] - 3, zf + half_h]), "air", 0))

        inner = self._f(lambda u, y, z: cone.distance(u, y, z, -0.2), box_lo, box_hi)
        for key in RECTI:
            self.rectus_path(key)
        self.nerve_path()
        out.append(("lacrimal_gland", Intersection(self._gland(), inner), "lacrimal_gland", 0))
        out.append(("superior_ophthalmic_vein", Intersection(self._vein(), inner), "vessel", 0))
        out.append(("inferior_oblique", Intersection(self._inferior_oblique(), inner), "confuser_muscle", 0))
        so_belly, trochlea, so_tendon = self._superior_oblique()
        out.append(("superior_oblique", Intersection(so_belly, inner), "confuser_muscle", 0))
        out.append(("superior_oblique_tendon", Intersection(so_tendon, inner), "confuser_muscle", 0))
        out.append(("trochlea", trochlea, "trochlea", 0))
        out.append(("levator", Intersection(self._levator(), inner), "confuser_muscle", 0))
        for key in RECTI:
            out.append((key, self.rectus(key, inner), "rectus", lab(key)))

        # Optic nerve (label: nerve + CSF + sheath) from the globe to the orbital opening of the canal.
        npath = self.paths["optic_nerve"]
        cap = self._f(lambda u, y, z: cone.local(u, y, z)[0] * F32(-1), [-1e3] * 3, [1e3] * 3)
        pts, sheath, nerve = npath["points"], npath["sheath"], npath["nerve"]
        dura = o.nerve_curve["dura"]
        out.append(("canal_nerve", SuperTube([c - canal_dir * 0.6, c + canal_dir * 14.0], [3.4, 3.4], [3.4, 3.4],
                                             None, 2.0), "nerve", 0))
        out.append(("optic_nerve_sheath", Intersection(SuperTube(pts, sheath, sheath, None, 2.0), cap), "dura",
                    lab("optic_nerve")))
        csf = sheath - 2 * dura
        out.append(("optic_nerve_csf", Intersection(SuperTube(pts, csf, csf, None, 2.0), cap), "csf",
                    lab("optic_nerve")))
        core = np.minimum(nerve, csf - 0.3)
        out.append(("optic_nerve", Intersection(SuperTube(pts, core, core, None, 2.0), cap), "nerve",
                    lab("optic_nerve")))

        # Globe: sclera ellipsoid + corneal cap (label: the whole eyeball), vitreous, aqueous, lens.
        g_lab = lab("globe")
        cr, rise = o.cornea["radius"], o.cornea["rise"]
        apex_y = gl.c[1] - gl.r[1]
        sclera_r = gl.r - np.array([0.0, 0.35 * rise, 0.0])  # the cornea protrudes 0.7 x rise beyond it
        sclera_c = gl.c + np.array([0.0, 0.35 * rise, 0.0])
        ball = Ellipsoid(sclera_c, sclera_r)
        cornea = Ellipsoid([gl.c[0], apex_y + cr, gl.c[2]], [cr, cr, cr])
        eye = self._f(lambda u, y, z: np.minimum(ball(u, y, z), cornea(u, y, z)), gl.c - gl.r, gl.c + gl.r)
        out.append(("globe", eye, "sclera", g_lab))
        out.append(("vitreous", Offset(ball, -o.sclera), "vitreous", g_lab))
        iris_y = apex_y + o.lens_depth
        chamber = self._f(lambda u, y, z: np.maximum(eye(u, y, z) + F32(0.55), y - F32(iris_y)), gl.c - gl.r,
                          gl.c + gl.r)
        out.append(("anterior_chamber", chamber, "aqueous", g_lab))
        lr, la = o.lens_radii
        out.append(("lens", Ellipsoid([gl.c[0], iris_y + 0.2 + la, gl.c[2]], [lr, la, lr]), "lens", g_lab))
        self.info["globe_centre_side_frame"] = [round(float(v), 3) for v in gl.c]
        return [Layer(f"{side}_{name}", Mirrored(shape, self.sign), material, label)
                for name, shape, material, label in out]
