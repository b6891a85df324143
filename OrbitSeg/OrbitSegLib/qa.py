"""Quality assurance: refuse inputs that are not orbital CT, and flag results that should not be trusted.

One module serves the command line, batch mode, the evaluation and the Slicer panel (all of them go
through :func:`pipeline.segment_image`). What each flag means to a radiologist is in ``docs/qa.md``.

Flags (``volumes.csv`` column ``qa``, codes separated by ``;``; ``run.json`` ``qa`` list):

- ``implausible``: a failure, not a finding. The structure is empty or nearly so, larger than any adult
  anatomy allows, was found in several pieces, reaches a face of its VOI box (cut off), lies where the
  structure cannot be relative to its globe, or differs grossly from the other side where anatomy is
  symmetric. Do not report its volume.
- ``outside-normal``: a clinical finding. The volume lies outside the adult normal range
  (:data:`NORMAL_RANGES_CM3`, with sources); enlarged muscles in TAO are what OrbitSeg measures.
- ``uncertain``: the model disagrees with itself about the structure (:func:`uncertainty_scores`).
- ``input``: the scan is outside the acquisition range the model in use was trained on (its card's
  :attr:`~OrbitSegLib.models.ModelCard.training_acquisition`, else :data:`TRAINED_ACQUISITION`), or
  was resampled to correct its geometry (:func:`input_findings`).

Input guards (:func:`check_input`) run before any model work and raise :class:`OrbitSegError` for an
image that no model can segment: values that are not Hounsfield units, voxels too coarse to resolve a
rectus muscle, or a field of view that cannot hold an orbit.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from . import structures
from .dicomseries import RESAMPLED_KEY, TILT_KEY
from .errors import OrbitSegError
from .imageio import axial_axis, ijk_to_lps

FLAGS = ("implausible", "outside-normal", "uncertain", "input")
"""The flag codes, in the order they are listed in a ``qa`` cell."""

QA_COLUMNS = ("qa", "normal_range_cm3", "uncertainty", "qa_reasons")
"""Columns :func:`annotate_rows` adds to every volume row."""


@dataclass(frozen=True)
class NormalRange:
    """Adult normal volume range (cm³) of one structure and where it comes from."""

    low: float
    high: float
    source: str

    def text(self) -> str:
        return f"{self.low:g}-{self.high:g}"


_MUSCLE_SOURCE = ("mean ± 2 SD, SD taken as 15 % of the mean; means: Clark & Demer, IOVS 2016;57:1106 (relaxed "
                  "rectus volumes, MRI) and Nishida et al., Jpn J Ophthalmol 1996;40:439 (MR 0.69 ± 0.09, LR 0.73 ± "
                  "0.08 cm³)")
NORMAL_RANGES_CM3: dict[str, NormalRange] = {
    "globe": NormalRange(6.5, 8.5, "adult eyeball, axial length 22-25 mm (OrbitSeg reference sheet; Bekerman et al., "
                                   "J Ophthalmol 2014:503645)"),
    "superior_rectus": NormalRange(0.35, 0.65, _MUSCLE_SOURCE + "; SR mean 0.50"),
    "inferior_rectus": NormalRange(0.42, 0.78, _MUSCLE_SOURCE + "; IR mean 0.60"),
    "medial_rectus": NormalRange(0.49, 0.91, _MUSCLE_SOURCE + "; MR mean 0.70"),
    "lateral_rectus": NormalRange(0.49, 0.91, _MUSCLE_SOURCE + "; LR mean 0.70"),
    "optic_nerve": NormalRange(0.5, 0.7, "intra-orbital optic nerve with sheath (OrbitSeg reference sheet)"),
}
"""Adult normal volumes. A volume outside them is a finding (``outside-normal``), not a failure."""

PLAUSIBLE_CM3: dict[str, tuple[float, float]] = {
    "globe": (3.0, 15.0),
    "superior_rectus": (0.1, 4.0),
    "inferior_rectus": (0.1, 4.0),
    "medial_rectus": (0.1, 4.0),
    "lateral_rectus": (0.1, 4.0),
    "optic_nerve": (0.1, 2.0),
}
"""Volumes (cm³) outside which no adult orbit lies, even in microphthalmos, high myopia (axial length
16-33 mm) or the most severe TAO (recti up to about 4x their normal volume): ``implausible``."""

SYMMETRY_RATIO = {"globe": 1.5, "optic_nerve": 2.5}
"""Largest plausible ratio of right to left volume where anatomy is symmetric (muscles are not: TAO
is often asymmetric)."""

FRAGMENT_KEPT = 0.6
"""A structure whose largest connected piece holds less than this share of the model's voxels for it
was found in several pieces."""
CUT_FRACTION = 0.35
"""A structure whose cross-section on a face of its VOI box is at least this share of its largest
cross-section along that axis reaches the face: it is cut off."""
POSITION_MARGIN_MM = 1.0
MAX_DISTANCE_MM = 50.0
UNCERTAIN_SCORE = 0.15
"""A structure whose uncertainty score (:func:`uncertainty_scores`) exceeds this is ``uncertain``:
chosen on 16 phantom selection cases (seed 1357, 192 structures: 99th percentile 0.137, largest 0.153),
so the bundled SV-Net is rarely this unsure in the world it was trained on (docs/qa.md)."""


SPACING_TOLERANCE = 1e-4
"""Relative margin by which a spacing may pass a range's bounds and still lie inside it: the same scan
read from NIfTI (float32 spacings), NRRD or DICOM (decimal strings) differs in the last digits."""


@dataclass(frozen=True)
class AcquisitionRange:
    """Voxel spacings (mm) of scans, as :func:`spacings` measures them: ``inplane`` (the largest in-plane
    spacing) and ``slice`` (the spacing between slices), each (low, high)."""

    inplane: tuple[float, float]
    slice: tuple[float, float]

    @classmethod
    def spanning(cls, pairs: Iterable[tuple[float, float]]) -> AcquisitionRange:
        """The smallest range holding every (in-plane, slice) pair of ``pairs`` (mm, as :func:`spacings`
        gives them); ``ValueError`` when there is none."""
        pairs = [(float(inplane), float(slice_mm)) for inplane, slice_mm in pairs]
        if not pairs:
            raise ValueError("an acquisition range needs the spacings of at least one scan")
        inplane, slice_mm = zip(*pairs)
        return cls((min(inplane), max(inplane)), (min(slice_mm), max(slice_mm)))

    def hull(self, other: AcquisitionRange) -> AcquisitionRange:
        """The smallest range holding this one and ``other``."""
        return AcquisitionRange((min(self.inplane[0], other.inplane[0]), max(self.inplane[1], other.inplane[1])),
                                (min(self.slice[0], other.slice[0]), max(self.slice[1], other.slice[1])))

    def text(self) -> str:
        """E.g. ``"0.25-0.5 mm in-plane, 0.5-3 mm between slices"``."""
        return (f"{self.inplane[0]:.3g}-{self.inplane[1]:.3g} mm in-plane, "
                f"{self.slice[0]:.3g}-{self.slice[1]:.3g} mm between slices")

    def to_dict(self) -> dict:
        """The form a model card stores: ``{"inplane_mm": [low, high], "slice_mm": [low, high]}``."""
        return {"inplane_mm": list(self.inplane), "slice_mm": list(self.slice)}

    @classmethod
    def from_dict(cls, data: dict) -> AcquisitionRange:
        """Inverse of :meth:`to_dict`; ``ValueError`` unless both are two positive mm values, low ≤ high."""
        if not isinstance(data, dict) or set(data) != {"inplane_mm", "slice_mm"}:
            raise ValueError(f"acquisition range {data!r} is not "
                             "{'inplane_mm': [low, high], 'slice_mm': [low, high]}")
        bounds = []
        for key in ("inplane_mm", "slice_mm"):
            value = data[key]
            if (not isinstance(value, (list, tuple)) or len(value) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                    or not 0 < value[0] <= value[1]):
                raise ValueError(f"acquisition range {key} {value!r} is not [low, high] in mm with 0 < low <= high")
            bounds.append((float(value[0]), float(value[1])))
        return cls(*bounds)


TRAINED_ACQUISITION = AcquisitionRange(inplane=(0.25, 0.5), slice=(0.5, 3.0))
"""What the bundled models were trained on: the phantom's scanner protocols (docs/phantom.md); the range
of every model whose card does not record its own (:func:`trained_range`). Scans outside the range of
the model in use are segmented and flagged ``input``."""
USABLE_ACQUISITION = AcquisitionRange(inplane=(0.1, 2.0), slice=(0.1, 6.0))
"""Outside this no model can resolve a 3-5 mm rectus muscle: such scans are refused."""
FIELD_OF_VIEW_MM = (30.0, 600.0)
"""In-plane extent (mm) a scan must have along both in-plane axes to hold an orbit, and at most."""
MIN_AXIAL_EXTENT_MM = 12.0
AIR_HU = -500.0
SOFT_TISSUE_HU = (-200.0, 200.0)
MIN_SOFT_TISSUE_FRACTION = 0.01


@dataclass(frozen=True)
class Finding:
    """One QA flag: ``flag`` (one of :data:`FLAGS`), a sentence ``reason``, and the side and structure
    it concerns (both ``None`` for the whole scan)."""

    flag: str
    reason: str
    side: str | None = None
    structure: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def spacings(image: sitk.Image) -> tuple[float, float]:
    """(largest in-plane spacing, slice spacing) in mm: the slice axis is the one closest to S-I."""
    axis = axial_axis(image)
    spacing = image.GetSpacing()
    return max(s for n, s in enumerate(spacing) if n != axis), spacing[axis]


def trained_range(recorded: dict | None) -> AcquisitionRange:
    """The acquisition range a model was trained on, from its card's ``training_acquisition``
    (:meth:`AcquisitionRange.to_dict` form); :data:`TRAINED_ACQUISITION` for a card that records none
    (the bundled models, and models written before cards recorded it)."""
    return TRAINED_ACQUISITION if recorded is None else AcquisitionRange.from_dict(recorded)


def check_input(image: sitk.Image, source: str = "the CT") -> None:
    """Refuse (:class:`OrbitSegError`, one line) an image that no model can segment as an orbital CT in HU.

    Model-independent, so it runs before any model is loaded; what the model in use was not trained on
    is flagged afterwards (:func:`input_findings`)."""
    if min(image.GetSize()) < 4:
        raise OrbitSegError(f"{source}: size {image.GetSize()} has fewer than 4 voxels along an axis; OrbitSeg needs "
                            "a CT volume covering the orbits")
    inplane, slice_mm = spacings(image)
    usable = USABLE_ACQUISITION
    if not (usable.inplane[0] <= inplane <= usable.inplane[1] and usable.slice[0] <= slice_mm <= usable.slice[1]):
        raise OrbitSegError(
            f"{source}: voxels of {inplane:.3g} mm in-plane and {slice_mm:.3g} mm between slices cannot resolve the "
            f"3-5 mm rectus muscles; OrbitSeg needs {usable.inplane[0]:g}-{usable.inplane[1]:g} mm in-plane and "
            f"{usable.slice[0]:g}-{usable.slice[1]:g} mm slices")
    extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    axis = axial_axis(image)
    planar = [float(e) for n, e in enumerate(extent) if n != axis]
    if min(planar) < FIELD_OF_VIEW_MM[0] or max(planar) > FIELD_OF_VIEW_MM[1] or extent[axis] < MIN_AXIAL_EXTENT_MM:
        raise OrbitSegError(
            f"{source}: a field of view of {' x '.join(f'{e:.0f}' for e in extent)} mm cannot be an orbital or head "
            f"CT; OrbitSeg needs {FIELD_OF_VIEW_MM[0]:g}-{FIELD_OF_VIEW_MM[1]:g} mm in-plane and at least "
            f"{MIN_AXIAL_EXTENT_MM:g} mm along the slices")
    values = sitk.GetArrayViewFromImage(image)
    lowest = float(values.min())
    if lowest > AIR_HU:
        raise OrbitSegError(
            f"{source}: no voxel is below {AIR_HU:g} HU (lowest {lowest:g}), so the values are not Hounsfield units "
            "(air is about -1000 HU); if the scan was stored without its rescale (e.g. 0..4095), convert it to HU")
    sample = values[::2, ::2, ::2]
    soft = float(np.count_nonzero((sample >= SOFT_TISSUE_HU[0]) & (sample <= SOFT_TISSUE_HU[1]))) / sample.size
    if soft < MIN_SOFT_TISSUE_FRACTION:
        raise OrbitSegError(
            f"{source}: only {soft * 100:.2g} % of the voxels lie between {SOFT_TISSUE_HU[0]:g} and "
            f"{SOFT_TISSUE_HU[1]:g} HU (fat, muscle, globe); this is not a CT of the orbits in Hounsfield units")


def _inside(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] * (1 - SPACING_TOLERANCE) <= value <= bounds[1] * (1 + SPACING_TOLERANCE)


def input_findings(image: sitk.Image, trained: AcquisitionRange = TRAINED_ACQUISITION) -> list[Finding]:
    """The scan-level ``input`` findings of a usable image (:func:`check_input`): in-plane or slice
    spacing (:func:`spacings`) outside ``trained``, the range the model in use was trained on (its
    card's, :func:`trained_range`), within :data:`SPACING_TOLERANCE`; and a DICOM series resampled to
    correct its geometry."""
    inplane, slice_mm = spacings(image)
    findings = []
    if not _inside(inplane, trained.inplane):
        findings.append(Finding("input", f"in-plane voxels of {inplane:.3g} mm lie outside the {trained.inplane[0]:.3g}"
                                         f"-{trained.inplane[1]:.3g} mm the model was trained on"))
    if not _inside(slice_mm, trained.slice):
        findings.append(Finding("input", f"slices {slice_mm:.3g} mm apart lie outside the {trained.slice[0]:.3g}-"
                                         f"{trained.slice[1]:.3g} mm the model was trained on"))
    if image.HasMetaDataKey(RESAMPLED_KEY):
        findings.append(Finding("input", f"the DICOM series was {image.GetMetaData(RESAMPLED_KEY)}"))
    return findings


def acquisition(image: sitk.Image) -> dict:
    """What ``run.json`` records of the scan: spacings (mm), size, gantry tilt and resampling."""
    inplane, slice_mm = spacings(image)
    record = {"size": list(image.GetSize()), "spacing_mm": [round(s, 5) for s in image.GetSpacing()],
              "inplane_spacing_mm": round(inplane, 5), "slice_spacing_mm": round(slice_mm, 5)}
    if image.HasMetaDataKey(TILT_KEY):
        record["gantry_tilt_deg"] = float(image.GetMetaData(TILT_KEY))
    if image.HasMetaDataKey(RESAMPLED_KEY):
        record["resampled"] = image.GetMetaData(RESAMPLED_KEY)
    return record


def uncertainty_map(scores: np.ndarray) -> np.ndarray:
    """Per-voxel uncertainty of ``[C, z, y, x]`` class scores (0..1): 1 minus the margin between the two
    highest classes, as uint8 percent ``[z, y, x]`` (0: one class is certain, 100: two classes tie)."""
    top = np.partition(scores, scores.shape[0] - 2, axis=0)[-2:]
    margin = np.clip(top[1] - top[0], 0.0, 1.0)
    return np.rint((1.0 - margin) * 100.0).astype(np.uint8)


def uncertainty_scores(scores: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    """Per structure: 1 − soft Dice between its mean score map and its final mask (``scores``
    ``[C, z, y, x]`` averaged over grid shifts and ensemble members, ``classes`` ``[z, y, x]``).

    0 when the model is sure of every voxel it labels and of none it leaves out; it grows with
    boundary voxels the model half-believes, and with disagreement between the grids or members whose
    scores were averaged. NaN for a structure neither labelled nor scored."""
    out = {}
    for s in structures.STRUCTURES:
        p = scores[s.class_index]
        mask = classes == s.class_index
        denominator = float(p.sum(dtype=np.float64)) + float(np.count_nonzero(mask))
        overlap = float(p[mask].sum(dtype=np.float64))
        out[s.key] = 1.0 - 2.0 * overlap / denominator if denominator > 0 else float("nan")
    return out


@dataclass
class EyeEvidence:
    """What QA needs from one eye's segmentation beyond the final labelmap: the eye box (inclusive
    index triples, i j k), the model's voxels per structure before and after keeping the largest piece,
    and the uncertainty scores."""

    side: str
    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    raw_voxels: dict[str, int]
    kept_voxels: dict[str, int]
    uncertainty: dict[str, float]


def eye_evidence(side: str, lo, hi, raw: np.ndarray, classes: np.ndarray, scores: np.ndarray) -> EyeEvidence:
    """Collect :class:`EyeEvidence` from one eye's raw argmax ``raw``, cleaned ``classes`` (both
    ``[z, y, x]`` on the crop) and mean ``scores`` ``[C, z, y, x]``."""
    raw_counts = np.bincount(raw.ravel(), minlength=structures.NUM_CLASSES)
    kept_counts = np.bincount(classes.ravel(), minlength=structures.NUM_CLASSES)
    return EyeEvidence(side, tuple(lo), tuple(hi), {s.key: int(raw_counts[s.class_index]) for s in structures.STRUCTURES},
                       {s.key: int(kept_counts[s.class_index]) for s in structures.STRUCTURES},
                       uncertainty_scores(scores, classes))


def assess(labelmap: sitk.Image, rows: Sequence[dict], evidence: Sequence[EyeEvidence],
           scan: Sequence[Finding] = ()) -> list[Finding]:
    """Every finding of one segmentation: ``scan`` findings, then per eye and structure ``implausible``,
    ``outside-normal`` and ``uncertain``. ``rows`` are its volume rows (``side``, ``structure``,
    ``volume_cm3``); ``labelmap`` is on the CT grid (OrbitSeg label values)."""
    volumes = {(r["side"], r["structure"]): float(r["volume_cm3"]) for r in rows}
    labels = sitk.GetArrayViewFromImage(labelmap)
    findings = list(scan)
    failed: set[tuple[str, str]] = set()
    for eye in evidence:
        for finding in _eye_failures(labelmap, labels, eye, volumes):
            findings.append(finding)
            failed.add((finding.side, finding.structure))
    for finding in _asymmetry(volumes):
        findings.append(finding)
        failed.add((finding.side, finding.structure))
    for eye in evidence:
        for s in structures.STRUCTURES:
            volume, normal = volumes[(eye.side, s.key)], NORMAL_RANGES_CM3[s.key]
            if (eye.side, s.key) not in failed and not normal.low <= volume <= normal.high:
                word = "enlarged" if volume > normal.high else "small"
                findings.append(Finding("outside-normal", f"{word}: {volume:.2f} cm³, outside the adult normal "
                                                          f"{normal.text()} cm³", eye.side, s.key))
            score = eye.uncertainty[s.key]
            if np.isfinite(score) and score > UNCERTAIN_SCORE:
                findings.append(Finding("uncertain", f"uncertainty {score:.2f} (above {UNCERTAIN_SCORE:g}): the model "
                                                     "is unsure of much of its outline; check it on the images", eye.side, s.key))
    return findings


def _eye_failures(labelmap: sitk.Image, labels: np.ndarray, eye: EyeEvidence,
                  volumes: dict[tuple[str, str], float]) -> list[Finding]:
    (i0, j0, k0), (i1, j1, k1) = eye.lo, eye.hi
    box = labels[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1]
    offset = structures.SIDE_OFFSET[eye.side]
    findings: list[Finding] = []

    def fail(key: str, reason: str) -> None:
        findings.append(Finding("implausible", reason, eye.side, key))

    centres = {}
    for s in structures.STRUCTURES:
        volume, (low, high) = volumes[(eye.side, s.key)], PLAUSIBLE_CM3[s.key]
        mask = box == s.class_index + offset
        if volume < low:
            fail(s.key, f"{'empty' if volume == 0 else 'nearly empty'}: {volume:.3f} cm³, less than the {low:g} cm³ "
                        "of any adult")
            continue
        if volume > high:
            fail(s.key, f"{volume:.2f} cm³, more than the {high:g} cm³ any adult orbit holds")
        raw, kept = eye.raw_voxels[s.key], eye.kept_voxels[s.key]
        if raw > 0 and kept < FRAGMENT_KEPT * raw:
            fail(s.key, f"found in pieces: the largest, kept, holds {kept / raw:.0%} of what the model labelled")
        for face in _faces_reached(mask, s.key == "globe", axial_axis(labelmap)):
            fail(s.key, f"reaches the {face} of its VOI box, so part of it lies outside: check the start/end slices "
                        "and the eye box")
        centres[s.key] = _centre_lps(labelmap, mask, eye.lo)
    findings += [Finding("implausible", reason, eye.side, key) for key, reason in _misplaced(centres, eye.side)]
    return findings


def _faces_reached(mask: np.ndarray, all_faces: bool, axial_index: int) -> list[str]:
    """Names of the faces of ``mask``'s box (``[k, j, i]``) where its cross-section is at least
    :data:`CUT_FRACTION` of its largest one along that axis; only the axial faces unless ``all_faces``."""
    faces = []
    array_axis = {0: 2, 1: 1, 2: 0}
    axes = (0, 1, 2) if all_faces else (array_axis[axial_index],)
    for axis in axes:
        if mask.shape[axis] < 3:
            continue
        areas = mask.sum(axis=tuple(a for a in range(3) if a != axis))
        largest = areas.max()
        for end, name in ((0, "first"), (-1, "last")):
            if largest > 0 and areas[end] >= CUT_FRACTION * largest:
                faces.append(f"{name} slice" if axis == array_axis[axial_index] else "edge")
    return list(dict.fromkeys(faces))


def _centre_lps(labelmap: sitk.Image, mask: np.ndarray, lo) -> np.ndarray:
    k, j, i = ndimage.center_of_mass(mask)
    index = np.array([i + lo[0], j + lo[1], k + lo[2], 1.0])
    return (ijk_to_lps(labelmap) @ index)[:3]


def _misplaced(centres: dict[str, np.ndarray], side: str) -> list[tuple[str, str]]:
    """Structures whose centre lies where anatomy cannot put it, relative to the globe's centre: the
    superior rectus above it, the inferior below, the medial rectus medial, the lateral lateral, the
    optic nerve behind, all within :data:`MAX_DISTANCE_MM`. Directions follow the globe→optic-nerve axis
    (so a pitched head is fine); LPS axes when the nerve is missing."""
    if "globe" not in centres:
        return []
    globe = centres["globe"]
    out = []
    posterior = np.array([0.0, 1.0, 0.0])
    if "optic_nerve" in centres:
        towards = centres["optic_nerve"] - globe
        if towards @ posterior <= POSITION_MARGIN_MM:
            out.append(("optic_nerve", "lies in front of its globe's centre, where the optic nerve cannot be"))
        else:
            posterior = towards / np.linalg.norm(towards)
    superior = _orthogonal(np.array([0.0, 0.0, 1.0]), [posterior])
    medial = _orthogonal(np.array([1.0 if side == "right" else -1.0, 0.0, 0.0]), [posterior, superior])
    rules = {"superior_rectus": (superior, "above"), "inferior_rectus": (-superior, "below"),
             "medial_rectus": (medial, "medial to"), "lateral_rectus": (-medial, "lateral to")}
    for key, centre in centres.items():
        if key == "globe":
            continue
        distance = float(np.linalg.norm(centre - globe))
        if distance > MAX_DISTANCE_MM:
            out.append((key, f"its centre lies {distance:.0f} mm from its globe's, outside the orbit"))
        elif key in rules and (centre - globe) @ rules[key][0] <= POSITION_MARGIN_MM:
            name = structures.structure(key).display_name
            out.append((key, f"does not lie {rules[key][1]} its globe's centre, as the {name} does"))
    return out


def _orthogonal(vector: np.ndarray, against: list[np.ndarray]) -> np.ndarray:
    for axis in against:
        vector = vector - (vector @ axis) * axis
    return vector / np.linalg.norm(vector)


def _asymmetry(volumes: dict[tuple[str, str], float]) -> list[Finding]:
    out = []
    for key, ratio in SYMMETRY_RATIO.items():
        right, left = volumes.get(("right", key)), volumes.get(("left", key))
        if not right or not left or min(right, left) < PLAUSIBLE_CM3[key][0]:
            continue
        if max(right, left) / min(right, left) > ratio:
            reason = (f"right {right:.2f} and left {left:.2f} cm³ differ {max(right, left) / min(right, left):.1f}-fold; "
                      f"the two sides of a {structures.structure(key).display_name} differ by less than {ratio:g}-fold")
            out += [Finding("implausible", reason, side, key) for side in ("right", "left")]
    return out


def annotate_rows(rows: Sequence[dict], findings: Sequence[Finding], evidence: Sequence[EyeEvidence]) -> None:
    """Add :data:`QA_COLUMNS` to every volume row in place: the flag codes (scan-level findings on every
    row), the normal range, the uncertainty score and the reasons."""
    scores = {(e.side, key): value for e in evidence for key, value in e.uncertainty.items()}
    for row in rows:
        mine = [f for f in findings if f.side is None or (f.side == row["side"] and f.structure == row["structure"])]
        codes = [flag for flag in FLAGS if any(f.flag == flag for f in mine)]
        row["qa"] = ";".join(codes)
        row["normal_range_cm3"] = NORMAL_RANGES_CM3[row["structure"]].text()
        row["uncertainty"] = scores.get((row["side"], row["structure"]), float("nan"))
        row["qa_reasons"] = "; ".join(f"{f.flag}: {f.reason}" for f in mine)


def format_findings(findings: Sequence[Finding]) -> str:
    """The findings as text lines for a terminal ("" when there are none), scan-level ones first."""
    lines = []
    for f in sorted(findings, key=lambda f: f.side is not None):
        where = structures.segment_name(f.side, f.structure) if f.side else "Scan"
        lines.append(f"  {where}: {f.flag}: {f.reason}")
    return "\n".join(["QA (docs/qa.md explains each flag):"] + lines) if lines else ""
