"""Random anatomy parameters of one phantom head: bony orbits, globes, muscles, nerve, sinuses, TAO.

All lengths in mm. The *head frame* has its origin midway between the two (normal-position) globe
centres, x to the patient's left, y posterior, z superior (LPS directions). Each orbit is described
in its *side frame* (u, y, z) with u = distance from the mid-sagittal plane (lateral positive), so
both orbits share one description (the right orbit is x = -u, the left x = +u).

Sources for the ranges: the OrbitSeg reference sheet (globe 24.2 x 23.7 x 23.5 mm, volume 6.5-8.5 cm3;
orbit depth 40-45 mm, entrance 35 x 40 mm, 25 mm between medial walls; rectus insertions behind the
limbus MR 5.5, IR 6.6-6.9, LR 6.9, SR 7.0-7.7 mm; belly thickness MR 4.2+-0.6, IR 4.2+-0.7,
LR 3.4+-0.6, SR 4.1+-0.7 mm; optic nerve 25-30 mm, 3-4 mm, 5.5 mm with sheath; TAO bellies 1.3-2.5x,
fat up to 1.4x) and standard anatomy texts for the rest.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

RECTI = ("superior_rectus", "inferior_rectus", "medial_rectus", "lateral_rectus")

# key: (belly thickness mean, sd), belly width range, insertion distance behind the limbus range,
# tendon length range, insertion width range
RECTUS_TABLE = {
    "superior_rectus": ((4.1, 0.7), (6.0, 7.2), (7.0, 7.7), (5.0, 6.5), (9.5, 11.0)),
    "inferior_rectus": ((4.2, 0.7), (7.6, 8.8), (6.6, 6.9), (4.5, 6.0), (9.0, 10.5)),
    "medial_rectus": ((4.2, 0.6), (9.0, 10.2), (5.3, 5.7), (3.0, 4.5), (9.5, 11.0)),
    "lateral_rectus": ((3.4, 0.6), (9.2, 10.4), (6.7, 7.1), (7.0, 9.5), (8.5, 10.0)),
}
# How often TAO enlarges each muscle (IR and MR most often).
TAO_INVOLVEMENT = {"inferior_rectus": 0.9, "medial_rectus": 0.75, "superior_rectus": 0.5, "lateral_rectus": 0.35}


@dataclass
class Muscle:
    """One rectus muscle; ``enlargement`` multiplies the belly thickness (TAO; 1 = normal), tendon spared."""

    belly_thick: float
    belly_wide: float
    origin_thick: float
    origin_wide: float
    tendon_thick: float
    tendon_len: float
    insertion_wide: float
    insertion_dist: float
    belly_pos: float
    wall_gap: float
    enlargement: float


@dataclass
class Orbit:
    """One orbit in its side frame (u lateral from the midline, y posterior, z superior)."""

    side: str
    globe_centre: list[float]
    globe_radii: list[float]
    sclera: float
    lens_radii: list[float]
    lens_depth: float
    pupil: float
    proptosis: float
    fat_factor: float
    canal: list[float]
    canal_dir: list[float]
    canal_radius: float
    wall_ref_y: float
    medial_front: float
    lateral_rim: list[float]
    roof_front: float
    floor_front: float
    roof_dome: float
    floor_dip: float
    lateral_bulge: float
    medial_bulge: float
    roof_lateral_slope: float
    floor_medial_slope: float
    corner_radius: float
    wall: dict[str, float]
    rim: list[float]
    depth: float
    muscles: dict[str, Muscle]
    nerve: dict[str, float]
    levator: dict[str, float]
    superior_oblique: dict[str, float]
    inferior_oblique: dict[str, float]
    gland: dict[str, float]
    vessels: dict[str, float]
    lids: dict[str, float]


@dataclass
class Head:
    """Skull, face, sinuses and brain (head frame)."""

    skull_centre: list[float]
    skull_radii: list[float]
    skull_thick: float
    squama_thick: float
    cortex: float
    head_radii: list[float]
    head_centre_y: float
    head_corner: float
    soft_scale: float
    face_jitter: list[float]
    nose: dict[str, float]
    keros: float
    sella_z: float
    middle_fossa_z: float
    temporalis_front: float
    zygomatic_arch: dict[str, float]
    maxillary: dict[str, float]
    ethmoid: dict[str, float]
    sphenoid: dict[str, float]
    frontal_sinus: dict[str, float]
    nasal: dict[str, float]
    septa_seed: int


@dataclass
class Anatomy:
    """One head: TAO state, head and both orbits; ``model`` names the anatomy model that drew it
    (``classic``: :func:`draw_anatomy`, ``sweep``: :func:`.sweep.draw_sweep_anatomy`)."""

    tao: bool
    severity: float
    head: Head
    orbits: dict[str, Orbit] = field(default_factory=dict)
    model: str = "classic"

    def to_dict(self) -> dict:
        return asdict(self)


def _u(rng, low, high) -> float:
    return float(rng.uniform(low, high))


def _tao_factors(rng: np.random.Generator, severity: float) -> dict[str, dict[str, float]]:
    """Belly enlargement per side and muscle: asymmetric between eyes, IR and MR most often."""
    side_severity = {"right": severity * _u(rng, 0.45, 1.0), "left": severity * _u(rng, 0.45, 1.0)}
    worse = "right" if rng.uniform() < 0.5 else "left"
    side_severity[worse] = max(side_severity[worse], severity)
    factors = {}
    for side, s in side_severity.items():
        f = {}
        for key in RECTI:
            if rng.uniform() < TAO_INVOLVEMENT[key] * (0.6 + 0.4 * s):
                f[key] = float(np.clip(1.3 + 1.2 * s * rng.uniform(0.4, 1.0), 1.3, 2.5))
            else:
                f[key] = _u(rng, 1.0, 1.15)
        if max(f.values()) < 1.3:
            f["inferior_rectus"] = float(np.clip(1.3 + 1.2 * s * rng.uniform(0.4, 1.0), 1.3, 2.5))
        factors[side] = f
    return factors


def _muscles(rng, factors: dict[str, float], shared: dict[str, float]) -> dict[str, Muscle]:
    out = {}
    for key in RECTI:
        (tm, ts), wide, ins, tlen, iwide = RECTUS_TABLE[key]
        thick = float(np.clip(shared[key] + rng.normal(0, 0.12), tm - 1.8 * ts, tm + 1.8 * ts))
        out[key] = Muscle(
            belly_thick=thick,
            belly_wide=_u(rng, *wide) * (0.85 + 0.15 * thick / tm),
            origin_thick=_u(rng, 1.4, 2.0),
            origin_wide=_u(rng, 3.0, 4.2),
            tendon_thick=_u(rng, 0.7, 1.0),
            tendon_len=_u(rng, *tlen),
            insertion_wide=_u(rng, *iwide),
            insertion_dist=_u(rng, *ins),
            belly_pos=_u(rng, 0.45, 0.58),
            wall_gap=_u(rng, 0.4, 1.6),
            enlargement=factors[key],
        )
    return out


def draw_anatomy(rng: np.random.Generator, tao: bool) -> Anatomy:
    """Draw one head's anatomy; ``tao`` selects thyroid-associated ophthalmopathy."""
    # The TAO draws are always made, so a case with and without TAO is the same head.
    drawn_severity = _u(rng, 0.25, 1.0)
    drawn_factors = _tao_factors(rng, drawn_severity)
    severity = drawn_severity if tao else 0.0
    factors = drawn_factors if tao else {s: {k: 1.0 for k in RECTI} for s in ("right", "left")}
    # Shared (both-eye) anatomy, then a little asymmetry per side.
    half_ipd = _u(rng, 29.0, 33.5)
    globe_scale = _u(rng, 0.982, 1.055)
    interorbital = _u(rng, 11.0, 14.0)
    depth = _u(rng, 39.0, 44.0)
    entrance_h = _u(rng, 33.0, 37.5)
    entrance_w = _u(rng, 38.0, 42.0)
    rectus_shared = {k: float(rng.normal(RECTUS_TABLE[k][0][0], RECTUS_TABLE[k][0][1] * 0.9)) for k in RECTI}
    nerve_shared = {"d_mid": _u(rng, 4.8, 5.6), "slack": _u(rng, 1.04, 1.14)}
    orbits = {}
    for side in ("right", "left"):
        j = lambda s=1.0: float(rng.normal(0, s))  # noqa: E731 - small asymmetry jitter
        f = factors[side]
        enlarged = np.mean([v - 1 for v in f.values()])
        fat_tao, fat_normal = rng.uniform(0.15, 1.0) * 0.4 * severity, j(0.02)
        fat = float(np.clip(1.0 + (fat_tao if tao else fat_normal), 0.96, 1.4))
        proptosis = float(np.clip((fat - 1) / 0.4 * 4.0 * tao + enlarged * 3.0 + j(0.8), -1.5, 9.0))
        scale = globe_scale * (1 + j(0.01))
        radii = [12.1 * scale * (1 + j(0.012)), 11.85 * scale * (1 + j(0.012)), 11.75 * scale * (1 + j(0.012))]
        g = half_ipd + j(0.4)
        gz = j(0.8)
        medial_front = interorbital + j(0.3)
        cu = medial_front + _u(rng, 2.0, 4.0)
        cz = _u(rng, 1.5, 4.5)
        rim = [_u(rng, -4.0, -1.5), _u(rng, 0.3, 0.45), _u(rng, -0.12, -0.05)]
        lateral_u = medial_front + entrance_w + j(0.8)
        lateral_rim = [lateral_u, rim[0] + rim[1] * (lateral_u - g)]
        roof_front = gz + entrance_h * _u(rng, 0.47, 0.53)
        floor_front = gz - entrance_h * _u(rng, 0.47, 0.53)
        # The optic canal lies ``depth`` mm from the centre of the orbital entrance.
        centre_u = (medial_front + lateral_u) / 2
        centre_y = rim[0] + rim[1] * (centre_u - g) + rim[2] * (roof_front + floor_front) / 2
        canal_y = centre_y + float(np.sqrt(depth ** 2 - (centre_u - cu) ** 2 - ((roof_front + floor_front) / 2 - cz) ** 2))
        orbits[side] = Orbit(
            side=side,
            globe_centre=[g, -proptosis + j(0.5), gz],
            globe_radii=radii,
            sclera=_u(rng, 0.6, 1.0),
            lens_radii=[_u(rng, 4.3, 4.8), _u(rng, 1.8, 2.2)],
            lens_depth=_u(rng, 3.2, 3.8),
            pupil=_u(rng, 1.5, 3.2),
            proptosis=proptosis,
            fat_factor=fat,
            canal=[cu, canal_y, cz],
            canal_dir=[-_u(rng, 0.35, 0.55), 1.0, _u(rng, 0.05, 0.3)],
            canal_radius=_u(rng, 2.6, 3.1),
            wall_ref_y=_u(rng, -9.5, -7.0),
            medial_front=medial_front,
            lateral_rim=lateral_rim,
            roof_front=roof_front,
            floor_front=floor_front,
            roof_dome=_u(rng, 1.5, 3.5),
            floor_dip=_u(rng, 1.0, 3.0),
            lateral_bulge=_u(rng, 1.0, 3.0),
            medial_bulge=_u(rng, 0.0, 1.0),
            roof_lateral_slope=_u(rng, 0.05, 0.2),
            floor_medial_slope=_u(rng, 0.2, 0.4),
            corner_radius=_u(rng, 8.0, 11.0),
            wall={"medial": _u(rng, 0.45, 1.0), "floor": _u(rng, 0.5, 1.2), "roof": _u(rng, 0.8, 2.2),
                  "lateral": _u(rng, 1.8, 4.0)},
            rim=rim,
            depth=depth,
            muscles=_muscles(rng, f, rectus_shared),
            nerve={"exit_nasal_deg": _u(rng, 10, 20), "exit_down_deg": _u(rng, -2, 6),
                   "slack": nerve_shared["slack"] + j(0.01), "d_bulb": _u(rng, 5.7, 6.4),
                   "d_mid": nerve_shared["d_mid"] + j(0.1), "d_apex": _u(rng, 4.0, 4.6),
                   "csf": _u(rng, 0.35, 0.8), "dura": _u(rng, 0.35, 0.5), "s_amp": _u(rng, 0.3, 1.0),
                   "sag": _u(rng, -0.3, 1.0), "phase": _u(rng, -0.3, 0.3)},
            levator={"thick": _u(rng, 1.4, 2.2) * (1 + severity * _u(rng, 0, 0.6)),
                     "wide": _u(rng, 6.0, 8.5), "apo_wide": _u(rng, 12.0, 17.0), "gap": _u(rng, -0.15, 0.15)},
            superior_oblique={"thick": _u(rng, 2.5, 3.6) * (1 + severity * _u(rng, 0, 0.4)),
                              "tendon": _u(rng, 1.0, 1.6), "trochlea_calcified": float(rng.uniform() < 0.25)},
            inferior_oblique={"thick": _u(rng, 2.0, 3.0) * (1 + severity * _u(rng, 0, 0.4)),
                              "wide": _u(rng, 4.5, 6.5)},
            gland={"length": _u(rng, 16.0, 22.0) * (1 + severity * _u(rng, 0, 0.25)),
                   "width": _u(rng, 9.0, 13.0), "thick": _u(rng, 3.5, 5.5), "shift": _u(rng, -2.0, 2.0)},
            vessels={"sov": _u(rng, 1.4, 2.6) * (1 + severity * _u(rng, 0, 0.5)),
                     "artery": _u(rng, 0.9, 1.5), "small": float(rng.integers(4, 10)),
                     "seed": float(rng.integers(0, 2 ** 31))},
            lids={"thick": _u(rng, 1.2, 2.2), "open": float(rng.uniform() < 0.65),
                  "fissure": _u(rng, 7.0, 10.5) + _u(rng, 0, 3) * tao, "width": _u(rng, 13.0, 15.5),
                  "septum_gap": _u(rng, 1.5, 3.0) + 8.0 * (fat - 1)},
        )
    head = Head(
        skull_centre=[0.0, _u(rng, 72, 84), _u(rng, 22, 32)],
        skull_radii=[_u(rng, 60, 67), _u(rng, 84, 92), _u(rng, 68, 78)],
        skull_thick=_u(rng, 5.0, 8.0),
        squama_thick=_u(rng, 2.2, 4.0),
        cortex=_u(rng, 1.2, 2.2),
        head_radii=[_u(rng, 70, 80), _u(rng, 92, 102)],
        head_centre_y=_u(rng, 72, 82),
        head_corner=_u(rng, 36, 50),
        soft_scale=_u(rng, 0.8, 1.35),
        face_jitter=[float(v) for v in rng.normal(0, 1.0, 12)],
        nose={"height": _u(rng, 16, 28), "width": _u(rng, 7, 11), "bone": _u(rng, 3.0, 7.0),
              "rhinion": _u(rng, -16, -8)},
        keros=_u(rng, 1.0, 7.0),
        sella_z=_u(rng, 2.0, 7.0),
        middle_fossa_z=_u(rng, -26, -18),
        temporalis_front=_u(rng, 6.0, 10.0),
        zygomatic_arch={"z": _u(rng, -22, -15), "height": _u(rng, 6, 9), "thick": _u(rng, 3.5, 5.5)},
        maxillary={"lateral": _u(rng, 36, 42), "front": _u(rng, 1.5, 3.0), "back": _u(rng, 18, 26),
                   "bottom": _u(rng, -48, -40), "mucosa_r": _u(rng, 0, 1) ** 3 * 5, "mucosa_l": _u(rng, 0, 1) ** 3 * 5,
                   "fluid_r": float(rng.uniform() < 0.08), "fluid_l": float(rng.uniform() < 0.08),
                   "fluid_level": _u(rng, -40, -25)},
        ethmoid={"front": _u(rng, -7, -3), "back": _u(rng, 24, 30), "bottom": _u(rng, -12, -8),
                 "cells_y": float(rng.integers(4, 8)), "mucosa": _u(rng, 0, 1) ** 3 * 3},
        sphenoid={"front": _u(rng, 26, 31), "back": _u(rng, 48, 58), "half": _u(rng, 10, 16),
                  "bottom": _u(rng, -20, -12), "septum_x": _u(rng, -5, 5)},
        frontal_sinus={"present": float(rng.uniform() < 0.92), "size_r": _u(rng, 0.5, 1.3),
                       "size_l": _u(rng, 0.5, 1.3), "height": _u(rng, 19, 27), "septum_x": _u(rng, -4, 4)},
        nasal={"half_width": _u(rng, 10, 14), "septum_dev": _u(rng, -3, 3), "choana": _u(rng, 44, 52)},
        septa_seed=int(rng.integers(0, 2 ** 31)),
    )
    return Anatomy(tao=tao, severity=severity, head=head, orbits=orbits)
