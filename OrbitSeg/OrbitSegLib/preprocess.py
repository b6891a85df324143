"""From a CT crop to the model's grid and back: windowing and resampling (SimpleITK).

The *model grid* of one eye is axis-aligned in LPS with the model's own spacing; for the left eye it
is mirrored in x (direction ``diag(-1, 1, 1)``), so that in the array ``[z, y, x]`` both eyes read
z inferior→superior, y anterior→posterior, x lateral→medial. One model thereby serves both eyes and
any scanner orientation (LPS, RAS, flipped or oblique), slice spacing and in-plane resolution.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .errors import OrbitSegError
from .imageio import ijk_to_lps
from .voi import crop, index_box_to_physical, physical_box_to_index

DEFAULT_WINDOW = (48.0, 400.0)
"""Window level and width in HU (both papers)."""

AIR_HU = -1000.0

CONTEXT_MM = (0.0, 0.0, 6.0)
"""Context (x, y, z mm) the model sees beyond each side of the VOI box: a radiologist's start/end
slices hug the muscles, and the network needs the tissue above and below them."""


def window(hu: np.ndarray, level: float = DEFAULT_WINDOW[0], width: float = DEFAULT_WINDOW[1]) -> np.ndarray:
    """Clip HU to ``[level - width/2, level + width/2]`` and scale to 0..1 (float32, same shape)."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = level - width / 2.0
    out = np.asarray(hu, dtype=np.float32) - np.float32(low)
    out *= np.float32(1.0 / width)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def model_grid(crop: sitk.Image, side: str, spacing: tuple[float, float, float],
               multiple: int = 1, inplane_size: tuple[int, int] | None = None,
               context_mm: tuple[float, float, float] = CONTEXT_MM) -> sitk.Image:
    """An empty reference image: the model grid covering ``crop``'s physical extent plus ``context_mm``.

    ``spacing`` is (x, y, z) mm. Sizes are rounded up to a multiple of ``multiple`` by growing the
    grid symmetrically. With ``inplane_size = (nx, ny)`` the in-plane size is fixed and the in-plane
    spacing is stretched to fit (the SEQ-UNET paper's fixed 64×64 input).
    """
    size = np.array(crop.GetSize())
    corners = np.array([[i, j, k, 1.0] for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
    lps = (ijk_to_lps(crop) @ corners.T).T[:, :3]
    lo = lps.min(axis=0) - np.asarray(context_mm, dtype=float)
    hi = lps.max(axis=0) + np.asarray(context_mm, dtype=float)
    spacing = np.array(spacing, dtype=float)
    if inplane_size is not None:
        spacing[:2] = (hi[:2] - lo[:2]) / (np.array(inplane_size, dtype=float) - 1)
    out_size = np.floor((hi - lo) / spacing + 1e-6).astype(int) + 1
    if inplane_size is None and multiple > 1:
        padded = -(-out_size // multiple) * multiple
        lo = lo - (padded - out_size) * spacing / 2.0
        out_size = padded
    else:
        out_size[2] = -(-out_size[2] // max(multiple, 1)) * max(multiple, 1)
    direction = np.eye(3)
    origin = lo.copy()
    if side == "left":
        direction[0, 0] = -1.0
        origin[0] = lo[0] + (out_size[0] - 1) * spacing[0]
    grid = sitk.Image([int(v) for v in out_size], sitk.sitkUInt8)
    grid.SetSpacing(spacing.tolist())
    grid.SetOrigin(origin.tolist())
    grid.SetDirection(direction.flatten().tolist())
    return grid


GRID_SHIFTS = {
    1: ((0.0, 0.0, 0.0),),
    2: ((0.0, 0.0, 0.0), (0.5, 0.5, 0.5)),
    4: ((0.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 0.5, 0.5)),
}
"""Grid offsets (x, y, z, in voxels of the model grid) averaged by ``InferenceOptions.grid_shifts``: the
grid itself, and grids moved by half a voxel, so that the network sees the CT sampled at other points."""


def grid_offsets(shifts: int) -> tuple[tuple[float, float, float], ...]:
    """The offsets (voxels, x y z) of :data:`GRID_SHIFTS` for a number of grids (1, 2 or 4)."""
    if shifts not in GRID_SHIFTS:
        raise OrbitSegError(f"grid shifts must be one of {sorted(GRID_SHIFTS)}, got {shifts!r}")
    return GRID_SHIFTS[shifts]


def shifted_grid(grid: sitk.Image, offset: tuple[float, float, float]) -> sitk.Image:
    """``grid`` moved by ``offset`` voxels (x, y, z) along its own axes; same size, spacing, direction."""
    if not any(offset):
        return grid
    direction = np.array(grid.GetDirection()).reshape(3, 3)
    step = direction @ (np.asarray(offset, dtype=float) * np.array(grid.GetSpacing()))
    moved = sitk.Image(grid)
    moved.SetOrigin((np.array(grid.GetOrigin()) + step).tolist())
    return moved


def image_to_grid(image: sitk.Image, grid: sitk.Image, level: float, width: float) -> np.ndarray:
    """An image (the whole CT, so the context around the VOI is real tissue) resampled (linear) onto
    the model grid and windowed: float32 ``[z, y, x]`` in 0..1. Outside the image: air."""
    resampled = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)
    return window(sitk.GetArrayViewFromImage(resampled), level, width)


def labels_to_grid(labels: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """A label image resampled (nearest neighbour) onto the model grid: uint8 ``[z, y, x]``."""
    resampled = sitk.Resample(labels, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(resampled)


def label_fractions(labels: sitk.Image, grid: sitk.Image, values: list[int]) -> np.ndarray:
    """Partial-volume targets: the fraction of each label value around every model-grid point.

    Each value's indicator image is resampled linearly onto ``grid``, so a point between a structure's
    voxels and the background gets the fraction the boundary leaves it, instead of the all-or-nothing
    nearest label of :func:`labels_to_grid`. Only the part of ``labels`` under the grid is read.
    Returns float32 ``[len(values), z, y, x]`` in 0..1 (0 outside the label image).
    """
    shape = (len(values),) + tuple(grid.GetSize()[::-1])
    extent = index_box_to_physical(grid, (0, 0, 0), tuple(n - 1 for n in grid.GetSize()))
    lo, hi = physical_box_to_index(labels, *extent)
    lo = [max(0, v - 1) for v in lo]
    hi = [min(n - 1, v + 1) for v, n in zip(hi, labels.GetSize())]
    if any(h < l for l, h in zip(lo, hi)):
        return np.zeros(shape, dtype=np.float32)
    region = crop(labels, lo, hi)
    array = sitk.GetArrayViewFromImage(region)
    indicators = sitk.GetImageFromArray(np.stack([array == v for v in values], axis=-1).astype(np.float32),
                                        isVector=True)
    indicators.CopyInformation(region)
    resampled = sitk.Resample(indicators, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat32)
    return np.moveaxis(sitk.GetArrayFromImage(resampled), -1, 0).reshape(shape)


def scores_to_crop(scores: np.ndarray, grid: sitk.Image, crop: sitk.Image) -> np.ndarray:
    """Class scores ``[C, z, y, x]`` on the model grid resampled (linear) onto the crop's grid.

    Returns float32 ``[C, k, j, i]`` in the crop's index order. Outside the model grid the score is 0.
    """
    vector = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(scores.astype(np.float32, copy=False), 0, -1)),
                                    isVector=True)
    vector.CopyInformation(grid)
    back = sitk.Resample(vector, crop, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat32)
    return np.moveaxis(sitk.GetArrayFromImage(back), -1, 0)
