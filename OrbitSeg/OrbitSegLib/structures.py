"""The structures table: the single source of truth for names, labels, colours and terminology.

Every other module (writers, Slicer logic, phantom, training, metrics) derives its segment names,
label values and terminology from here.

Label values in a combined labelmap: right (OD) structures are 1..6, left (OS) structures 7..12,
in the order of :data:`STRUCTURES`. A model predicts one orbit at a time with class indices
0 (background) and 1..6 (the same order), so ``label_value = class_index + SIDE_OFFSET[side]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CATEGORY = ("SCT", "123037004", "Anatomical Structure")
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"

SIDES = ("right", "left")
"""Patient sides: right = OD, left = OS."""

SIDE_CODES = {"right": ("SCT", "24028007", "Right"), "left": ("SCT", "7771000", "Left")}
SIDE_OFFSET = {"right": 0, "left": 6}
SIDE_ABBREVIATION = {"right": "OD", "left": "OS"}


@dataclass(frozen=True)
class Structure:
    """One orbital structure (per side).

    ``class_index`` is the model's output channel (1..6, 0 is background); ``color`` is RGB in 0..1.
    """

    key: str
    display_name: str
    class_index: int
    color: tuple[float, float, float]
    snomed_code: str
    snomed_meaning: str
    abbreviation: str


STRUCTURES: tuple[Structure, ...] = (
    Structure("globe", "globe", 1, (0.55, 0.82, 0.90), "79652003", "Eyeball", "G"),
    Structure("superior_rectus", "superior rectus", 2, (0.20, 0.78, 0.25), "5815008", "Superior rectus muscle", "SR"),
    Structure("inferior_rectus", "inferior rectus", 3, (0.95, 0.45, 0.75), "47869003", "Inferior rectus muscle", "IR"),
    Structure("medial_rectus", "medial rectus", 4, (1.00, 0.85, 0.10), "24937009", "Medial rectus muscle", "MR"),
    Structure("lateral_rectus", "lateral rectus", 5, (0.25, 0.45, 1.00), "31836009", "Lateral rectus muscle", "LR"),
    Structure("optic_nerve", "optic nerve", 6, (1.00, 1.00, 0.75), "18234004", "Optic nerve", "ON"),
)
"""The six structures of one orbit, in model class order."""

STRUCTURE_KEYS = tuple(s.key for s in STRUCTURES)
TAO_KEYS = ("superior_rectus", "inferior_rectus", "medial_rectus", "lateral_rectus", "optic_nerve")
"""The five structures measured in thyroid-associated ophthalmopathy (SV-Net's targets)."""

NUM_CLASSES = len(STRUCTURES) + 1
"""Model classes per orbit, background included."""


def structure(key: str) -> Structure:
    """Return the structure with this key; ``KeyError`` names the valid keys."""
    for s in STRUCTURES:
        if s.key == key:
            return s
    raise KeyError(f"unknown structure {key!r}; valid keys: {', '.join(STRUCTURE_KEYS)}")


def check_side(side: str) -> str:
    """Validate a side name (``right``/``left``) and return it."""
    if side not in SIDES:
        raise ValueError(f"unknown side {side!r}; use 'right' (OD) or 'left' (OS)")
    return side


def sides_for(choice: str) -> tuple[str, ...]:
    """Expand a user's side choice ``both|right|left`` to the list of sides."""
    if choice == "both":
        return SIDES
    return (check_side(choice),)


def segment_name(side: str, key: str) -> str:
    """User-facing segment name, e.g. ``"Right superior rectus"``."""
    return f"{check_side(side).capitalize()} {structure(key).display_name}"


def label_value(side: str, key: str) -> int:
    """Label value of a side and structure in a combined labelmap (1..12)."""
    return structure(key).class_index + SIDE_OFFSET[check_side(side)]


def side_classes(values: np.ndarray, side: str) -> np.ndarray:
    """A combined labelmap array as one side's class indices (uint8, same shape; 0 for background and
    the other side's structures)."""
    offset = SIDE_OFFSET[check_side(side)]
    own = (values > offset) & (values <= offset + len(STRUCTURES))
    return np.where(own, values - offset, 0).astype(np.uint8)


def label_table() -> list[tuple[int, str, str]]:
    """All ``(label_value, side, key)`` triples in label order."""
    return [(label_value(side, s.key), side, s.key) for side in SIDES for s in STRUCTURES]


def side_and_key(value: int) -> tuple[str, str]:
    """Inverse of :func:`label_value`."""
    for v, side, key in label_table():
        if v == value:
            return side, key
    raise KeyError(f"label value {value} is not an OrbitSeg label (1..{len(label_table())})")


def terminology(side: str, key: str) -> dict:
    """Slicer terminology entry of a segment as a slicerio terminology dict."""
    s = structure(key)
    return {
        "contextName": TERMINOLOGY_CONTEXT,
        "category": list(CATEGORY),
        "type": ["SCT", s.snomed_code, s.snomed_meaning],
        "typeModifier": list(SIDE_CODES[check_side(side)]),
        "anatomicContextName": ANATOMIC_CONTEXT,
    }


def terminology_string(side: str, key: str) -> str:
    """Slicer ``TerminologyEntry`` tag value of a segment.

    Format: ``context~category~type~typeModifier~anatomicContext~region~regionModifier``,
    each code as ``scheme^value^meaning``.
    """
    t = terminology(side, key)
    return "~".join([
        t["contextName"], "^".join(t["category"]), "^".join(t["type"]), "^".join(t["typeModifier"]),
        t["anatomicContextName"], "^^", "^^",
    ])


def match_segment_name(name: str) -> tuple[str, str] | None:
    """Map a user's segment name to ``(side, key)``; tolerant of case, underscores and OD/OS.

    Accepts e.g. "Right superior rectus", "right_superior_rectus", "OD SR", "Left optic nerve".
    Returns ``None`` when the name names no OrbitSeg structure.
    """
    words = name.replace("_", " ").replace("-", " ").lower().split()
    if not words:
        return None
    side_words = {"right": "right", "r": "right", "od": "right", "left": "left", "l": "left", "os": "left"}
    side = side_words.get(words[0]) or side_words.get(words[-1])
    if side is None:
        return None
    rest = words[1:] if words[0] in side_words else words[:-1]
    text = " ".join(rest)
    for s in STRUCTURES:
        if text in (s.display_name, s.key.replace("_", " "), s.abbreviation.lower(), s.snomed_meaning.lower()):
            return side, s.key
    if text in ("eye", "eyeball"):
        return side, "globe"
    return None
