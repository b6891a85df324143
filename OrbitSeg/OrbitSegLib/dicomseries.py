"""Reading a DICOM series folder onto a regular grid: gantry tilt and uneven slice spacing corrected.

ITK's series reader assumes the slices are stacked along their normal at the spacing of the first two
slices. A CT acquired with a tilted gantry has slices whose origins also drift in the plane (the stack
is sheared), and a series can have uneven gaps (missing or overlapping slices); read naively, both
put every voxel at the wrong physical point. As dcm2niix does for tilt, :func:`read_dicom_series`
measures each slice's position (ImagePositionPatient, ImageOrientationPatient) and, when the stack is
sheared or unevenly spaced, resamples it linearly onto a regular grid whose axes are the slices' row,
column and normal directions (spacing along the normal: the median slice step), covering every
acquired voxel. What it found is stored in the image's metadata (:data:`TILT_KEY`,
:data:`SPACING_KEY`, :data:`RESAMPLED_KEY`) for the run's record and for :mod:`qa`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .errors import OrbitSegError

log = logging.getLogger(__name__)

TILT_KEY = "orbitseg_gantry_tilt_deg"
"""Metadata key: the stack's shear angle in degrees (gantry tilt), as text."""
SPACING_KEY = "orbitseg_slice_steps_mm"
"""Metadata key: ``"min max median"`` of the acquired slice steps along the normal, in mm."""
RESAMPLED_KEY = "orbitseg_resampled"
"""Metadata key: a sentence saying why and how the series was resampled (absent when it was not)."""

TILT_TOLERANCE_DEG = 0.1
UNEVEN_TOLERANCE = 0.05
"""Slice steps deviating from their median by more than this fraction count as uneven."""


def read_dicom_series(folder: str | Path) -> sitk.Image:
    """The largest DICOM series in ``folder`` as a 3D image on a regular grid (LPS mm, values as stored
    after the rescale, i.e. HU for CT). Raises :class:`OrbitSegError` for a folder without a series or
    a series with slices at the same position."""
    folder = Path(folder)
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise OrbitSegError(f"{folder}: folder holds no DICOM series")
    files = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series}
    chosen = max(files, key=lambda sid: len(files[sid]))
    if len(series) > 1:
        log.warning("%s holds %d DICOM series; reading the largest (%s, %d files)",
                    folder, len(series), chosen, len(files[chosen]))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files[chosen])
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    if image.GetSize()[2] < 2:
        return image
    positions = np.array([_floats(reader.GetMetaData(k, "0020|0032"), 3, folder) for k in range(image.GetSize()[2])])
    orientation = _floats(reader.GetMetaData(0, "0020|0037"), 6, folder)
    return regularize(image, positions, orientation, str(folder))


def _floats(text: str, count: int, folder: Path) -> np.ndarray:
    try:
        values = np.array([float(v) for v in text.strip().split("\\")], dtype=float)
    except ValueError:
        values = np.array([])
    if values.size != count:
        raise OrbitSegError(f"{folder}: a slice has no valid position/orientation tags ({text.strip()!r})")
    return values


def regularize(image: sitk.Image, positions: np.ndarray, orientation: np.ndarray, source: str = "series") -> sitk.Image:
    """``image`` (slices ``k`` as read, ``[k, j, i]``) placed by its slices' true origins ``positions``
    (``[K, 3]`` LPS mm) and ``orientation`` (row then column direction cosines): returned unchanged (bar
    the metadata) when the slices stack evenly along their normal, else resampled onto a regular grid."""
    row, col = orientation[:3] / np.linalg.norm(orientation[:3]), orientation[3:] / np.linalg.norm(orientation[3:])
    normal = np.cross(row, col)
    offsets = positions - positions[0]
    along = offsets @ normal                      # [K] mm along the normal
    if along[-1] < 0:                             # stored from head to feet: flip to increasing order
        return regularize(_flip_slices(image), positions[::-1].copy(), orientation, source)
    steps = np.diff(along)
    if np.any(steps <= 1e-3):
        raise OrbitSegError(f"{source}: two slices lie at the same position (duplicated or mixed series); "
                            "export one series per folder")
    drift = offsets - np.outer(along, normal)     # [K, 3] in-plane shift of each slice's origin
    tilt = float(np.degrees(np.arctan2(np.linalg.norm(drift[-1]), along[-1])))
    median = float(np.median(steps))
    uneven = bool(np.max(np.abs(steps - median)) > UNEVEN_TOLERANCE * median)
    _record(image, tilt, steps)
    if tilt <= TILT_TOLERANCE_DEG and not uneven:
        image.SetOrigin(tuple(positions[0]))
        image.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
        image.SetSpacing((*image.GetSpacing()[:2], median))
        return image
    out = _resample(image, along, drift @ row, drift @ col, row, col, normal, positions[0], median)
    for key in (TILT_KEY, SPACING_KEY):
        out.SetMetaData(key, image.GetMetaData(key))
    reasons = ([f"a gantry tilt of {tilt:.1f}°"] if tilt > TILT_TOLERANCE_DEG else []) + (
        [f"uneven slice steps ({steps.min():.2f}–{steps.max():.2f} mm)"] if uneven else [])
    note = (f"resampled onto a regular grid of {median:.3g} mm slices to correct " + " and ".join(reasons))
    out.SetMetaData(RESAMPLED_KEY, note)
    log.info("%s: %s", source, note)
    return out


def _flip_slices(image: sitk.Image) -> sitk.Image:
    flipped = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(image)[::-1].copy())
    flipped.SetSpacing(image.GetSpacing())
    for key in image.GetMetaDataKeys():
        flipped.SetMetaData(key, image.GetMetaData(key))
    return flipped


def _record(image: sitk.Image, tilt: float, steps: np.ndarray) -> None:
    image.SetMetaData(TILT_KEY, f"{tilt:.3f}")
    image.SetMetaData(SPACING_KEY, f"{steps.min():.4f} {steps.max():.4f} {np.median(steps):.4f}")


def _resample(image: sitk.Image, along: np.ndarray, shift_u: np.ndarray, shift_v: np.ndarray, row: np.ndarray,
              col: np.ndarray, normal: np.ndarray, origin0: np.ndarray, dz: float) -> sitk.Image:
    """Linear resampling of a sheared/uneven stack onto the regular (row, col, normal) grid covering it.

    ``along``: each slice's position along the normal; ``shift_u``/``shift_v``: each slice origin's
    in-plane shift along row/column (mm). Returns float32 (integer input: rounded back to its type)."""
    source = sitk.GetArrayViewFromImage(image)        # [K, J, I]
    sx, sy = image.GetSpacing()[:2]
    count_k, count_j, count_i = source.shape
    u_min, v_min = float(shift_u.min()), float(shift_v.min())
    size_i = int(np.ceil((float(shift_u.max()) - u_min) / sx - 1e-6)) + count_i
    size_j = int(np.ceil((float(shift_v.max()) - v_min) / sy - 1e-6)) + count_j
    size_k = int(np.floor(along[-1] / dz + 1e-6)) + 1
    fill = float(source.min())
    out = np.empty((size_k, size_j, size_i), dtype=np.float32)
    slice_index = np.arange(count_k, dtype=float)
    for m in range(size_k):
        position = np.interp(m * dz, along, slice_index)
        k0 = min(int(np.floor(position)), count_k - 2)
        t = position - k0
        blend = np.zeros((size_j, size_i), dtype=np.float32)
        for k, weight in ((k0, 1.0 - t), (k0 + 1, t)):
            if weight <= 1e-6:
                continue
            # target pixel [b, a] lies at source pixel [b + (v_min - shift_v[k]) / sy, a + (u_min - shift_u[k]) / sx]
            padded = _pad_to(source[k], size_j, size_i, fill)
            blend += np.float32(weight) * ndimage.shift(
                padded, ((shift_v[k] - v_min) / sy, (shift_u[k] - u_min) / sx), order=1, mode="constant", cval=fill,
                prefilter=False)
        out[m] = blend
    if np.issubdtype(source.dtype, np.integer):
        info = np.iinfo(source.dtype)
        out = np.clip(np.rint(out), info.min, info.max).astype(source.dtype)
    result = sitk.GetImageFromArray(out)
    result.SetSpacing((sx, sy, dz))
    result.SetOrigin(tuple(origin0 + u_min * row + v_min * col))
    result.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    return result


def _pad_to(array: np.ndarray, size_j: int, size_i: int, fill: float) -> np.ndarray:
    """``array`` ``[J, I]`` as float32, padded at its high ends with ``fill`` to ``[size_j, size_i]``."""
    padded = np.full((size_j, size_i), fill, dtype=np.float32)
    padded[:array.shape[0], :array.shape[1]] = array
    return padded
