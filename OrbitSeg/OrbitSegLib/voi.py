"""Volume of interest (VOI): axial start/end slices plus one in-plane box per eye, in index space.

A radiologist confirms the start and end axial slices (as in SV-Net); each eye (OD = right,
OS = left) gets an in-plane box. :func:`suggest_voi` proposes all of them from the image: it finds
the two globes (near-water spheres ~24 mm across, ringed by fat and air) and places a box around
each orbit, from the eyelids to the orbital apex. Every value can be overridden.

Index conventions: slices are 0-based and inclusive along the image's axial index axis
(:func:`imageio.axial_axis`); boxes are inclusive ``(lo, hi)`` index triples ``(i, j, k)``.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import fft, ndimage

from . import structures
from .errors import OrbitSegError
from .imageio import axial_axis, ijk_to_lps

log = logging.getLogger(__name__)

Index3 = tuple[int, int, int]

# Orbit box around a globe centre, in mm, in eye coordinates: x lateral→medial, y anterior→posterior
# (LPS +y), z inferior→superior. Covers lids to apex, floor to roof, with margins.
ORBIT_BOX_MM = {"x": (-21.0, 25.0), "y": (-17.0, 45.0), "z": (-21.0, 23.0)}

MANUAL_VOI_HINT = ("give the eye boxes and slices yourself with --voi FILE.json (the form run.json's \"voi\" "
                   "has; --start/--end alone do not help), or set them in the Slicer panel")
_DETECTION_SPACING = 1.5  # mm, isotropic grid used for globe detection
_GLOBE_RADIUS = 10.5      # mm, core of the matched filter
_SHELL = (13.5, 17.0)     # mm, ring of fat/air around the globe
_EYE_DISTANCE = (45.0, 85.0)  # mm, plausible distance between the two globe centres


@dataclass(frozen=True)
class VOI:
    """Start/end axial slices and per-eye index boxes of one image.

    ``boxes[side] = (lo, hi)``: inclusive voxel index triples (i, j, k). The axial extent of each box
    is ``start_slice..end_slice``; the in-plane extents are per eye.
    """

    start_slice: int
    end_slice: int
    boxes: dict[str, tuple[Index3, Index3]] = field(default_factory=dict)
    axial_axis: int = 2

    def eye_box(self, side: str) -> tuple[Index3, Index3]:
        """Inclusive (lo, hi) index box of one eye, with the VOI's start/end slices applied."""
        if side not in self.boxes:
            raise OrbitSegError(f"the VOI has no box for the {side} eye ({structures.SIDE_ABBREVIATION[side]})")
        lo, hi = (list(v) for v in self.boxes[side])
        lo[self.axial_axis], hi[self.axial_axis] = self.start_slice, self.end_slice
        return tuple(lo), tuple(hi)

    def with_slices(self, start: int | None = None, end: int | None = None) -> "VOI":
        """A copy with the user's start and/or end slice."""
        return replace(self, start_slice=self.start_slice if start is None else int(start),
                       end_slice=self.end_slice if end is None else int(end))

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {"start_slice": self.start_slice, "end_slice": self.end_slice, "axial_axis": self.axial_axis,
                "boxes": {s: [list(lo), list(hi)] for s, (lo, hi) in self.boxes.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "VOI":
        """Inverse of :meth:`to_dict`."""
        boxes = {s: (tuple(int(v) for v in lo), tuple(int(v) for v in hi)) for s, (lo, hi) in data["boxes"].items()}
        return cls(int(data["start_slice"]), int(data["end_slice"]), boxes, int(data.get("axial_axis", 2)))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "VOI":
        """A VOI from a JSON file: :meth:`to_dict`'s form, or a ``run.json`` holding it under ``"voi"``.
        Raises :class:`OrbitSegError` for a missing, unreadable or malformed file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.from_dict(data.get("voi", data) if isinstance(data, dict) else data)
        except OSError as error:
            raise OrbitSegError(f"cannot read the VOI file {path}: {error.strerror or error}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise OrbitSegError(f"{path} is not a VOI file (JSON with start_slice, end_slice and boxes "
                                f"{{side: [[i, j, k], [i, j, k]]}}, or a run.json): {error!r}") from None


def validate_voi(image: sitk.Image, voi: VOI, sides: tuple[str, ...]) -> VOI:
    """Check a VOI against an image; clip boxes to the image.

    Raises :class:`OrbitSegError` for start/end slices outside the image or in the wrong order, and
    for boxes that miss the image.
    """
    size = image.GetSize()
    axis = axial_axis(image)
    if voi.axial_axis != axis:
        raise OrbitSegError(f"VOI is along index axis {voi.axial_axis} but the image's axial axis is {axis}")
    last = size[axis] - 1
    for name, value in (("start", voi.start_slice), ("end", voi.end_slice)):
        if not 0 <= value <= last:
            raise OrbitSegError(f"{name} slice {value} is outside the image (slices 0..{last})")
    if voi.start_slice > voi.end_slice:
        raise OrbitSegError(f"start slice {voi.start_slice} is after end slice {voi.end_slice}")
    if voi.end_slice - voi.start_slice < 2:
        raise OrbitSegError(f"slices {voi.start_slice}..{voi.end_slice} are too few; the VOI needs at least 3 slices")
    boxes = {}
    for side in sides:
        lo, hi = voi.eye_box(side)
        clipped_lo = tuple(max(0, v) for v in lo)
        clipped_hi = tuple(min(n - 1, v) for v, n in zip(hi, size))
        if any(a > b for a, b in zip(clipped_lo, clipped_hi)):
            raise OrbitSegError(f"the {side} eye box {lo}..{hi} lies outside the image (size {size})")
        if (clipped_lo, clipped_hi) != (lo, hi):
            log.info("%s eye box clipped to the image: %s..%s", side, clipped_lo, clipped_hi)
        boxes[side] = (clipped_lo, clipped_hi)
    return replace(voi, boxes=boxes)


def crop(image: sitk.Image, lo: Index3, hi: Index3) -> sitk.Image:
    """Crop an inclusive index box; the crop keeps its exact physical position."""
    size = [int(h - l + 1) for l, h in zip(lo, hi)]
    return sitk.RegionOfInterest(image, size, [int(v) for v in lo])


def paste(target: np.ndarray, values: np.ndarray, lo: Index3) -> None:
    """Write a ``[k, j, i]`` crop into a full ``[k, j, i]`` label array where the target is still 0.

    ``lo`` is the crop's (i, j, k) origin index. Voxels already labelled (e.g. by the other eye)
    keep their label, so no voxel ends up in two structures.
    """
    region = tuple(slice(l, l + n) for l, n in zip(lo[::-1], values.shape))
    window = target[region]
    free = (window == 0) & (values != 0)
    window[free] = values[free]


def physical_box_to_index(image: sitk.Image, lps_min: np.ndarray, lps_max: np.ndarray) -> tuple[Index3, Index3]:
    """Inclusive index box covering an axis-aligned LPS box (not clipped to the image)."""
    corners = np.array([[x, y, z] for x in (lps_min[0], lps_max[0]) for y in (lps_min[1], lps_max[1])
                        for z in (lps_min[2], lps_max[2])])
    inverse = np.linalg.inv(ijk_to_lps(image))
    ijk = (inverse[:3, :3] @ corners.T).T + inverse[:3, 3]
    lo = tuple(int(v) for v in np.floor(ijk.min(axis=0) + 1e-6))
    hi = tuple(int(v) for v in np.ceil(ijk.max(axis=0) - 1e-6))
    return lo, hi


def index_box_to_physical(image: sitk.Image, lo: Index3, hi: Index3) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned LPS bounds (min, max) of the voxel centres of an inclusive index box."""
    corners = np.array([[i, j, k, 1.0] for i in (lo[0], hi[0]) for j in (lo[1], hi[1]) for k in (lo[2], hi[2])])
    lps = (ijk_to_lps(image) @ corners.T).T[:, :3]
    return lps.min(axis=0), lps.max(axis=0)


def orbit_box_lps(globe_center: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned LPS box (min, max) of one orbit around its globe centre (see ORBIT_BOX_MM)."""
    medial = 1.0 if side == "right" else -1.0  # LPS x grows to the patient's left
    xs = sorted(globe_center[0] + medial * np.array(ORBIT_BOX_MM["x"]))
    ys = globe_center[1] + np.array(ORBIT_BOX_MM["y"])
    zs = globe_center[2] + np.array(ORBIT_BOX_MM["z"])
    return np.array([xs[0], ys[0], zs[0]]), np.array([xs[1], ys[1], zs[1]])


def voi_from_globes(image: sitk.Image, globes: dict[str, np.ndarray]) -> VOI:
    """VOI from globe centres (LPS mm): per-eye orbit boxes and start/end slices covering both."""
    axis = axial_axis(image)
    boxes = {side: physical_box_to_index(image, *orbit_box_lps(np.asarray(c, float), side)) for side, c in globes.items()}
    last = image.GetSize()[axis] - 1
    start = max(0, min(lo[axis] for lo, _ in boxes.values()))
    end = min(last, max(hi[axis] for _, hi in boxes.values()))
    return VOI(start, end, boxes, axis)


def suggest_voi(image: sitk.Image) -> VOI:
    """Propose start/end slices and both per-eye boxes from the image alone.

    Raises :class:`OrbitSegError` when no pair of globes is found (e.g. the image is not an orbital
    or head CT).
    """
    return voi_from_globes(image, find_globes(image))


def find_globes(image: sitk.Image) -> dict[str, np.ndarray]:
    """Centres (LPS mm) of the right and left globes.

    Resamples to a coarse isotropic axis-aligned grid, scores every point with a matched filter
    (mean "near-water" fraction inside a 10.5 mm ball minus that in a 13.5–17 mm shell, so the
    brain and muscles, which are surrounded by more soft tissue, score low) and picks the best pair of
    peaks at a plausible inter-globe distance and similar height.
    """
    grid = _detection_grid(image)
    hu = sitk.GetArrayFromImage(grid)  # [z, y, x], LPS-aligned; NaN outside the image
    inside = np.isfinite(hu).astype(np.float32)
    water = ((hu > -30) & (hu < 70)).astype(np.float32)
    score = _fraction(water, inside, _ball(_GLOBE_RADIUS)) - _fraction(water, inside, _shell(*_SHELL))
    score = np.nan_to_num(score, nan=-1.0)
    peaks = _local_maxima(score, radius_vox=int(round(8 / _DETECTION_SPACING)), count=12)
    if len(peaks) < 2:
        raise OrbitSegError("no orbit found: the image shows no globe-like structures; "
                            f"{MANUAL_VOI_HINT}")
    points = [np.array(grid.TransformContinuousIndexToPhysicalPoint([float(p[2]), float(p[1]), float(p[0])])) for p in peaks]
    values = [float(score[tuple(p)]) for p in peaks]
    best, best_value = None, -np.inf
    for a in range(len(points)):
        for b in range(a + 1, len(points)):
            delta = points[b] - points[a]
            distance = abs(delta[0])
            if not (_EYE_DISTANCE[0] <= distance <= _EYE_DISTANCE[1]) or abs(delta[2]) > 12 or abs(delta[1]) > 12:
                continue
            if min(values[a], values[b]) < 0.25:
                continue
            if values[a] + values[b] > best_value:
                best, best_value = (a, b), values[a] + values[b]
    if best is None:
        raise OrbitSegError(f"no orbit found: could not find two globes at a plausible distance; {MANUAL_VOI_HINT}")
    a, b = best
    right, left = (points[a], points[b]) if points[a][0] < points[b][0] else (points[b], points[a])
    log.info("globes found at right %s, left %s (LPS mm)", np.round(right, 1), np.round(left, 1))
    return {"right": right, "left": left}


def _detection_grid(image: sitk.Image) -> sitk.Image:
    """The image resampled (linear, float32) onto an axis-aligned LPS grid of _DETECTION_SPACING mm."""
    size = np.array(image.GetSize())
    corners = np.array([[i, j, k, 1.0] for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
    lps = (ijk_to_lps(image) @ corners.T).T[:, :3]
    lo, hi = lps.min(axis=0), lps.max(axis=0)
    out_size = [int(np.floor((h - l) / _DETECTION_SPACING)) + 1 for l, h in zip(lo, hi)]
    smoothed = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), _DETECTION_SPACING / 2)
    return sitk.Resample(smoothed, out_size, sitk.Transform(), sitk.sitkLinear, lo.tolist(),
                         [_DETECTION_SPACING] * 3, np.eye(3).flatten().tolist(), float("nan"), sitk.sitkFloat32)


def _fraction(values: np.ndarray, inside: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Kernel-weighted mean of ``values`` over the voxels inside the image (normalised convolution).

    Voxels outside the image count as unknown, not as air, so tissue cut by the field of view does
    not look like a globe ringed by air. NaN where less than half the kernel lies inside the image.
    """
    num = _convolve_same(values * inside, kernel)
    den = _convolve_same(inside, kernel)
    return np.where(den > 0.5, num / np.maximum(den, 1e-6), np.nan).astype(np.float32)


def _convolve_same(array: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``scipy.signal.fftconvolve(array, kernel, mode="same")`` for an odd-sized ``kernel``, with
    :mod:`scipy.fft` directly: importing :mod:`scipy.signal` (which imports :mod:`scipy.stats`) costs
    every process that segments about 0.4 s."""
    full = [n + k - 1 for n, k in zip(array.shape, kernel.shape)]
    shape = [fft.next_fast_len(n, real=True) for n in full]
    product = fft.rfftn(array, shape) * fft.rfftn(kernel, shape)
    start = [(k - 1) // 2 for k in kernel.shape]
    return fft.irfftn(product, shape)[tuple(slice(a, a + n) for a, n in zip(start, array.shape))]


def _ball(radius_mm: float) -> np.ndarray:
    r = int(np.ceil(radius_mm / _DETECTION_SPACING))
    z, y, x = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1] * _DETECTION_SPACING
    kernel = ((x * x + y * y + z * z) <= radius_mm ** 2).astype(np.float32)
    return kernel / kernel.sum()


def _shell(inner_mm: float, outer_mm: float) -> np.ndarray:
    r = int(np.ceil(outer_mm / _DETECTION_SPACING))
    z, y, x = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1] * _DETECTION_SPACING
    d2 = x * x + y * y + z * z
    kernel = ((d2 <= outer_mm ** 2) & (d2 > inner_mm ** 2)).astype(np.float32)
    return kernel / kernel.sum()


def _local_maxima(score: np.ndarray, radius_vox: int, count: int) -> list[tuple[int, int, int]]:
    """Up to ``count`` strongest local maxima of a ``[z, y, x]`` score, at least ``radius_vox`` apart."""
    footprint = ndimage.maximum_filter(score, size=2 * radius_vox + 1)
    candidates = np.argwhere((score == footprint) & (score > 0))
    order = np.argsort(score[tuple(candidates.T)])[::-1]
    return [tuple(int(v) for v in candidates[i]) for i in order[:count]]
