"""Per-eye VOI boxes <-> markups ROI nodes.

The core's VOI (:class:`OrbitSegLib.voi.VOI`) holds inclusive voxel index boxes ``(lo, hi)`` per eye.
Each box is shown as a markups ROI aligned with the volume's voxel axes (so an oblique or flipped
CT gets a box that lines up with its slices), covering the boxed voxels edge to edge. Reading an ROI
back takes the voxels whose centres it covers; a box survives the round trip unchanged, and an ROI
the user rotated gives the index box around it.
"""
from __future__ import annotations

import numpy as np
import slicer.util

from OrbitSegLib import structures
from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.voi import VOI

from .geometry import axial_axis, ijk_to_ras, node_name, world_to_local

ROI_NAMES = {side: f"OrbitSeg box {side} ({structures.SIDE_ABBREVIATION[side]})" for side in structures.SIDES}
ROI_COLORS = {"right": (0.95, 0.55, 0.1), "left": (0.1, 0.7, 0.95)}


def index_box_to_roi(volume_node, lo, hi, roi_node):
    """Place ``roi_node`` over the inclusive index box ``lo..hi`` of ``volume_node`` (aligned with its voxels)."""
    matrix = ijk_to_ras(volume_node)
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    if np.any(hi < lo):
        raise OrbitSegError(f"box {tuple(lo.astype(int))}..{tuple(hi.astype(int))} is empty")
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    axes = matrix[:3, :3] / spacing
    if np.linalg.det(axes) < 0:  # an ROI frame must be a rotation; a box is symmetric, so flip one axis
        axes[:, 2] = -axes[:, 2]
    object_to_node = np.eye(4)
    object_to_node[:3, :3] = axes
    object_to_node[:3, 3] = (matrix @ np.append((lo + hi) / 2.0, 1.0))[:3]
    was_modifying = roi_node.StartModify()
    try:
        roi_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
        roi_node.GetObjectToNodeMatrix().DeepCopy(slicer.util.vtkMatrixFromArray(object_to_node))
        roi_node.SetSize(*((hi - lo + 1.0) * spacing))
    finally:
        roi_node.EndModify(was_modifying)
    return roi_node


def roi_to_index_box(volume_node, roi_node) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Inclusive index box (not clipped to the image) of the voxels whose centres an ROI covers.

    The ROI may be under another (linear) transform than the volume and may be rotated.
    """
    object_to_node = slicer.util.arrayFromVTKMatrix(roi_node.GetObjectToNodeMatrix())
    half = np.array(roi_node.GetSize(), float) / 2.0
    corners = np.array([[x, y, z, 1.0] for x in (-half[0], half[0]) for y in (-half[1], half[1])
                        for z in (-half[2], half[2])])
    roi_to_world = np.linalg.inv(world_to_local(roi_node))
    ras = (world_to_local(volume_node) @ roi_to_world @ object_to_node @ corners.T)
    ijk = (np.linalg.inv(ijk_to_ras(volume_node)) @ ras)[:3].T
    lo = np.floor(ijk.min(axis=0) + 0.5 + 1e-3).astype(int)  # tolerance: ROI sizes are stored with float error
    hi = np.ceil(ijk.max(axis=0) - 0.5 - 1e-3).astype(int)
    if np.any(hi < lo):
        raise OrbitSegError(f"ROI {node_name(roi_node)} covers no voxel centre of {node_name(volume_node)}")
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi)


def voi_to_rois(volume_node, voi: VOI, rois: dict) -> dict:
    """Show each eye box of ``voi`` (with its start/end slices) in ``rois[side]`` (existing ROI nodes)."""
    for side, roi in rois.items():
        if side in voi.boxes:
            index_box_to_roi(volume_node, *voi.eye_box(side), roi)
    return rois


def set_roi_slices(volume_node, roi_node, start: int, end: int):
    """Move an ROI's axial extent to slices ``start..end``, keeping its in-plane extent."""
    lo, hi = (list(v) for v in roi_to_index_box(volume_node, roi_node))
    axis = axial_axis(volume_node)
    lo[axis], hi[axis] = int(start), int(end)
    return index_box_to_roi(volume_node, lo, hi, roi_node)


def voi_from_rois(volume_node, rois: dict, start: int | None = None, end: int | None = None) -> VOI:
    """A VOI from per-eye ROIs; start/end slices default to the union of the ROIs' axial extents."""
    if not rois:
        raise OrbitSegError("no eye boxes: run Auto-detect or place the boxes first")
    axis = axial_axis(volume_node)
    boxes = {side: roi_to_index_box(volume_node, roi) for side, roi in rois.items()}
    first = min(lo[axis] for lo, _ in boxes.values()) if start is None else int(start)
    last = max(hi[axis] for _, hi in boxes.values()) if end is None else int(end)
    return VOI(first, last, boxes, axis)


def style_roi(roi_node, side: str) -> None:
    """Name and colour an eye's ROI and keep its handles interactive (needs the node in a scene)."""
    roi_node.SetName(ROI_NAMES[side])
    display = roi_node.GetDisplayNode()
    if display is None and roi_node.GetScene() is not None:
        roi_node.CreateDefaultDisplayNodes()
        display = roi_node.GetDisplayNode()
    if display is not None:
        display.SetSelectedColor(*ROI_COLORS[side])
        display.SetColor(*ROI_COLORS[side])
        display.SetFillOpacity(0.05)
        display.SetHandlesInteractive(True)
