"""Post-processing as in SV-Net: argmax, hole filling per structure, largest connected component.

All arrays are ``[k, j, i]`` (or ``[C, k, j, i]`` for scores); class maps are uint8 with 0 = background.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import measure


def scores_to_classes(scores: np.ndarray) -> np.ndarray:
    """Argmax over the class axis of ``[C, ...]`` scores (channel 0 = background) → uint8 ``[...]``."""
    return np.argmax(scores, axis=0).astype(np.uint8)


def clean_classes(classes: np.ndarray, fill_holes: bool = True, largest_component: bool = True) -> np.ndarray:
    """Per structure: fill holes, keep the largest connected component (26-connectivity).

    Holes are filled only where no other structure lies, and removed islands become background,
    so every voxel keeps at most one structure. Works on each structure's bounding box. Returns a new
    uint8 array of the same shape.
    """
    out = classes.copy()
    present = [int(c) for c in np.unique(classes) if c != 0]
    boxes = ndimage.find_objects(classes)
    for c in present:
        box = _grow(boxes[c - 1], classes.shape, 1)
        region = out[box]
        mask = region == c
        if largest_component:
            mask = _largest_component(mask)
        if fill_holes:
            mask = ndimage.binary_fill_holes(mask) & ((region == 0) | (region == c))
        region[(region == c) & ~mask] = 0
        region[mask] = c
    return out


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labelled, count = measure.label(mask, connectivity=mask.ndim, return_num=True)
    if count <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))


def _grow(box: tuple[slice, ...], shape: tuple[int, ...], margin: int) -> tuple[slice, ...]:
    return tuple(slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(box, shape))
