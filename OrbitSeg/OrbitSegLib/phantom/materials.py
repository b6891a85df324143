"""Tissue CT numbers (HU) drawn per case, with texture amplitudes.

Each material has a mean HU and a texture amplitude: HU per unit of a random field mixing a
few-mm scale (fat lobules, diploe, grey/white matter) and a sub-mm scale (fibrous septa,
trabeculae). Ranges follow the reference sheet (muscle 25-65, orbital fat
-80 to -120, vitreous 8-12, lens about 110, bone 700-1500 and more for cortex).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# name: (low HU, high HU, texture amplitude HU)
RANGES: dict[str, tuple[float, float, float]] = {
    "air": (-1000, -1000, 0),
    "orbital_fat": (-118, -82, 8),
    "subcutaneous_fat": (-115, -85, 8),
    "soft_tissue": (30, 55, 5),
    "skin": (35, 60, 4),
    "muscle": (40, 60, 5),
    "rectus": (30, 58, 3.5),
    "confuser_muscle": (30, 58, 3.5),
    "lacrimal_gland": (35, 65, 4),
    "vessel": (35, 55, 2),
    "nerve": (28, 40, 2),
    "csf": (4, 14, 1.5),
    "dura": (38, 55, 2),
    "sclera": (40, 62, 3),
    "vitreous": (8, 12, 1.2),
    "aqueous": (4, 10, 1),
    "lens": (95, 125, 3),
    "brain": (28, 38, 4),
    "cortical_bone": (1150, 1750, 150),
    "thin_bone": (900, 1400, 100),
    "cancellous_bone": (280, 600, 180),
    "mucosa": (25, 45, 5),
    "sinus_fluid": (10, 28, 3),
    "cartilage": (80, 140, 14),
    "trochlea": (80, 250, 14),
}


# Contrast enhancement: the fraction of the blood's enhancement each tissue takes up (extraocular and
# other muscles, glands, mucosa and dura enhance; fat, vitreous, lens, CSF and bone do not).
ENHANCEMENT = {"vessel": 1.0, "rectus": 0.18, "confuser_muscle": 0.18, "muscle": 0.12, "lacrimal_gland": 0.25,
               "mucosa": 0.25, "dura": 0.2, "skin": 0.06, "soft_tissue": 0.08, "brain": 0.03, "nerve": 0.03,
               "sclera": 0.08}


@dataclass
class Materials:
    """Per-case tissue table: parallel arrays indexed by :attr:`names` order."""

    hu: dict[str, float]
    texture: dict[str, float]

    def tables(self, layer_materials: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(hu, texture amplitude) float32 arrays indexed by layer."""
        return (np.array([self.hu[m] for m in layer_materials], dtype=np.float32),
                np.array([self.texture[m] for m in layer_materials], dtype=np.float32))

    def enhanced(self, blood_hu: float) -> Materials:
        """The same tissues after intravenous contrast raising blood by ``blood_hu`` HU (:data:`ENHANCEMENT`)."""
        hu = {name: value + ENHANCEMENT.get(name, 0.0) * blood_hu for name, value in self.hu.items()}
        return Materials(hu, dict(self.texture))


def draw_materials(rng: np.random.Generator, tao_activity: float = 0.0) -> Materials:
    """Draw one case's HU per tissue. ``tao_activity`` (0..1) lowers muscle density slightly (oedema)
    and raises orbital fat density (inflammation), within the published ranges."""
    hu, texture = {}, {}
    for name, (low, high, amplitude) in RANGES.items():
        hu[name] = float(rng.uniform(low, high))
        texture[name] = amplitude * float(rng.uniform(0.6, 1.4))
    oedema, inflammation = rng.uniform(0, 1, 2)
    hu["rectus"] = float(np.clip(hu["rectus"] - 6 * tao_activity * oedema, 25, 65))
    hu["orbital_fat"] = float(np.clip(hu["orbital_fat"] + 10 * tao_activity * inflammation, -120, -75))
    hu["confuser_muscle"] = float(np.clip(hu["rectus"] + rng.normal(0, 3), 25, 65))
    return Materials(hu, texture)
