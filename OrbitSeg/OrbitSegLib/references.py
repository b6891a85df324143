"""Reference labelmaps: which structures they annotate, and placing them exactly onto a CT's grid.

A reference records the structures it annotates in its image metadata (:func:`mark_annotated`, done by
:func:`segio.read_reference`), so that a structure it leaves out has no reference values instead of a
reference volume of 0. A reference saved cropped (as 3D Slicer saves segmentations) is placed voxel for
voxel onto the CT's grid by :func:`reference_on_grid`.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from . import structures
from .errors import OrbitSegError
from .imageio import grid_description, same_grid

ANNOTATED_KEY = "OrbitSeg_annotated_labels"
"""Metadata key of a reference labelmap image: the label values it annotates, space-separated."""
LATTICE_TOLERANCE = 1e-3
"""How far (in voxels) a reference's origin may lie from a CT voxel centre to count as on the CT's lattice."""


def mark_annotated(labelmap: sitk.Image, annotated: set[tuple[str, str]]) -> None:
    """Record on a reference labelmap image (in its metadata) which ``(side, key)`` structures it annotates."""
    values = sorted(structures.label_value(side, key) for side, key in annotated)
    labelmap.SetMetaData(ANNOTATED_KEY, " ".join(str(v) for v in values))


def annotated_structures(labelmap: sitk.Image) -> set[tuple[str, str]]:
    """The ``(side, key)`` structures a reference labelmap annotates: as recorded by :func:`mark_annotated`,
    or all twelve when nothing is recorded (e.g. a labelmap made in memory)."""
    if not labelmap.HasMetaDataKey(ANNOTATED_KEY):
        return {(side, key) for _, side, key in structures.label_table()}
    values = {int(v) for v in labelmap.GetMetaData(ANNOTATED_KEY).split()}
    return {(side, key) for value, side, key in structures.label_table() if value in values}


def _lattice_offset(image: sitk.Image, reference: sitk.Image) -> tuple[int, int, int]:
    """Index ``(i, j, k)`` on ``image``'s grid of the reference's first voxel, for a reference that can be
    placed exactly onto that grid; otherwise :class:`OrbitSegError`.

    Placeable: same spacing and direction (within 1e-4 mm/cosine, as :func:`imageio.same_grid`), origin
    within :data:`LATTICE_TOLERANCE` voxel of a voxel centre of ``image`` (the offset may be negative), and
    every labelled voxel inside ``image``'s extent.
    """
    index = np.array(image.TransformPhysicalPointToContinuousIndex(reference.GetOrigin()))
    offset = np.rint(index)
    if not (np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-4)
            and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-4)
            and np.all(np.abs(index - offset) <= LATTICE_TOLERANCE)):
        raise OrbitSegError("the reference segmentation is on a different grid than the CT: "
                            f"reference {grid_description(reference)}; CT {grid_description(image)} (a reference "
                            "must share the CT's voxel lattice: same spacing and direction, origin on a CT voxel; "
                            "it may be cropped, as 3D Slicer saves segmentations)")
    offset = offset.astype(int)
    size = np.array(image.GetSize())
    if np.any(offset < 0) or np.any(offset + reference.GetSize() > size):
        shape = sitk.LabelShapeStatisticsImageFilter()
        shape.Execute(reference != 0)
        if shape.HasLabel(1):
            box = shape.GetBoundingBox(1)  # (i, j, k, size_i, size_j, size_k) on the reference's grid
            lo = offset + box[:3]
            hi = lo + box[3:] - 1
            if np.any(lo < 0) or np.any(hi >= size):
                raise OrbitSegError("the reference segmentation has labelled voxels outside the CT: they span CT "
                                    f"voxels {tuple(lo.tolist())} to {tuple(hi.tolist())} (i, j, k), but the CT "
                                    f"has size {tuple(size.tolist())}")
    return tuple(offset.tolist())


def reference_on_grid(image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """A reference labelmap on ``image``'s exact grid (size, spacing, origin, direction).

    A reference already on that grid is returned as is. One on the same voxel lattice with another
    extent (e.g. saved by 3D Slicer cropped to its segments' extent) is placed into the full grid, zeros
    elsewhere, voxel for voxel; parts outside the grid must be unlabelled. Anything else is an
    :class:`OrbitSegError`. What :func:`mark_annotated` recorded is kept.
    """
    if same_grid(image, reference):
        return reference
    offset = _lattice_offset(image, reference)
    snapped = sitk.Image(reference)  # on the CT's exact lattice, so nearest neighbour copies voxels
    snapped.SetSpacing(image.GetSpacing())
    snapped.SetDirection(image.GetDirection())
    snapped.SetOrigin(image.TransformIndexToPhysicalPoint(offset))
    placed = sitk.Resample(snapped, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    if reference.HasMetaDataKey(ANNOTATED_KEY):
        placed.SetMetaData(ANNOTATED_KEY, reference.GetMetaData(ANNOTATED_KEY))
    return placed
