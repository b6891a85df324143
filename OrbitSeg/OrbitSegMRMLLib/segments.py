"""OrbitSeg labelmaps <-> segmentation nodes.

- :func:`labelmap_to_segmentation_node`: a result labelmap (OrbitSeg label values, on the CT's grid)
  becomes one segment per side and structure, named ("Right superior rectus"), coloured and tagged
  with SNOMED CT terminology from :mod:`OrbitSegLib.structures`. The node's reference geometry is
  the input volume (what DICOM SEG export needs) and it sits under the volume's parent transform.
- :func:`segmentation_node_to_labelmap`: any segmentation node (e.g. a manual reference) becomes an
  OrbitSeg labelmap on a volume's grid; segments are matched by name ("Right globe", "OD SR") or by
  terminology (type + laterality), others are ignored.
- :func:`segment_mask`: one segment as a mask on a volume's grid.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import slicer.util
import vtk

from OrbitSegLib import structures
from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.references import mark_annotated

from .geometry import ijk_to_ras, node_name, same_grid, set_image_geometry

BINARY_LABELMAP = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
CLOSED_SURFACE = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()


def segment_id(side: str, key: str) -> str:
    """Segment ID of a side and structure (``"right_superior_rectus"``), as in OrbitSeg's ``.seg.nrrd`` files."""
    return f"{structures.check_side(side)}_{structures.structure(key).key}"


def labelmap_to_segmentation_node(labelmap: sitk.Image, sides, segmentation_node, volume_node, *,
                                  closed_surface: bool = True) -> list[str]:
    """Replace the segments of ``segmentation_node`` with those of an OrbitSeg labelmap.

    ``labelmap``: uint8 OrbitSeg label values on ``volume_node``'s exact grid (otherwise
    :class:`OrbitSegError`). Every structure of the given ``sides`` gets a segment, even an empty one,
    so results always list the same segments. With ``closed_surface`` the 3D surfaces are built.
    Returns the segment IDs in label order.
    """
    if not same_grid(labelmap, volume_node):
        raise OrbitSegError(f"the segmentation result is not on the voxel grid of {node_name(volume_node)}")
    segmentation = segmentation_node.GetSegmentation()
    was_modifying = segmentation_node.StartModify()
    try:
        # Under the volume's parent transform first: the reference geometry is then the volume's own grid
        # (set the other way round, Slicer would fold the transform into it and apply it twice).
        segmentation_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        segmentation.RemoveAllSegments()
        segmentation.SetSourceRepresentationName(BINARY_LABELMAP)
        ids = vtk.vtkStringArray()  # position v-1 receives label value v
        created = []
        for value, side, key in structures.label_table():
            if side not in sides:
                ids.InsertNextValue("")
                continue
            sid = segment_id(side, key)
            segmentation.AddEmptySegment(sid, structures.segment_name(side, key), list(structures.structure(key).color))
            segment = segmentation.GetSegment(sid)
            segment.SetTag(segment.GetTerminologyEntryTagName(), structures.terminology_string(side, key))
            ids.InsertNextValue(sid)
            created.append(sid)
        image = _oriented_image(sitk.GetArrayViewFromImage(labelmap).astype(np.uint8, copy=False), ijk_to_ras(volume_node))
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(image, segmentation_node, ids, None):
            raise OrbitSegError(f"could not import the segmentation result into {node_name(segmentation_node)}")
    finally:
        segmentation_node.EndModify(was_modifying)
    if segmentation_node.GetScene() is not None:
        segmentation_node.CreateDefaultDisplayNodes()
        display = segmentation_node.GetDisplayNode()
        display.SetVisibility(True)
        display.SetVisibility2DFill(True)
        display.SetVisibility2DOutline(True)
        display.SetVisibility3D(closed_surface)
    if closed_surface:
        segmentation_node.CreateClosedSurfaceRepresentation()
    return created


def _oriented_image(array_kji: np.ndarray, matrix_ijk_to_ras: np.ndarray):
    """A vtkOrientedImageData with a copy of ``array_kji`` placed by ``matrix_ijk_to_ras``."""
    carrier = slicer.vtkMRMLLabelMapVolumeNode()  # not added to any scene; only allocates the image data
    slicer.util.updateVolumeFromArray(carrier, array_kji)
    image = slicer.vtkOrientedImageData()
    image.ShallowCopy(carrier.GetImageData())
    image.SetGeometryFromImageToWorldMatrix(slicer.util.vtkMatrixFromArray(matrix_ijk_to_ras))
    return image


def _terminology_side_key(tag: str) -> tuple[str, str] | None:
    """(side, key) from a ``TerminologyEntry`` tag: SNOMED type plus laterality (type or region modifier)."""
    parts = (tag or "").split("~")
    if len(parts) < 4:
        return None

    def code(part: str) -> str:
        fields = part.split("^")
        return fields[1] if len(fields) > 1 else ""

    type_code = code(parts[2])
    modifiers = {code(parts[3])} | ({code(parts[6])} if len(parts) > 6 else set())
    key = next((s.key for s in structures.STRUCTURES if s.snomed_code == type_code), None)
    side = next((side for side, c in structures.SIDE_CODES.items() if c[1] in modifiers), None)
    return (side, key) if side and key else None


def match_segments(segmentation_node) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Match a segmentation's segments to OrbitSeg structures.

    Returns ``(matched, ignored)``: ``matched`` lists ``(segment_id, side, key)`` (the first segment
    wins when several name the same structure); ``ignored`` lists the names of the other segments.
    """
    segmentation = segmentation_node.GetSegmentation()
    matched, ignored, seen = [], [], set()
    for index in range(segmentation.GetNumberOfSegments()):
        sid = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(sid)
        side_key = structures.match_segment_name(segment.GetName() or "")
        if side_key is None:
            tag = vtk.reference("")
            if segment.GetTag(segment.GetTerminologyEntryTagName(), tag):
                side_key = _terminology_side_key(str(tag))
        if side_key is None or side_key in seen:
            ignored.append(segment.GetName())
            continue
        seen.add(side_key)
        matched.append((sid, *side_key))
    return matched, ignored


def segmentation_node_to_labelmap(segmentation_node, volume_node) -> tuple[sitk.Image, list[str]]:
    """An OrbitSeg labelmap (uint8) of a segmentation node's matched segments on ``volume_node``'s grid,
    recording which structures it annotates (:func:`references.mark_annotated`).

    Returns ``(labelmap, ignored segment names)``. The segmentation may have any geometry and
    transform; Slicer resamples it onto the volume's grid. :class:`OrbitSegError` when no segment
    names an OrbitSeg structure.
    """
    if segmentation_node is None:
        raise OrbitSegError("no reference segmentation selected")
    matched, ignored = match_segments(segmentation_node)
    if not matched:
        names = ", ".join(ignored)[:300] or "none"
        raise OrbitSegError(f"no segment of {node_name(segmentation_node)} names an OrbitSeg structure "
                            f"(e.g. 'Right globe', 'Left medial rectus'); segments: {names}")
    lookup = np.zeros(len(matched) + 1, dtype=np.uint8)
    for n, (_, side, key) in enumerate(matched):
        lookup[n + 1] = structures.label_value(side, key)
    exported, matrix = _export_on_grid(segmentation_node, [sid for sid, _, _ in matched], volume_node)
    image = sitk.GetImageFromArray(lookup[np.clip(exported, 0, len(matched))])
    set_image_geometry(image, matrix)
    if not same_grid(image, volume_node):
        raise OrbitSegError(f"{node_name(segmentation_node)} could not be put on the grid of {node_name(volume_node)}")
    mark_annotated(image, {(side, key) for _, side, key in matched})  # a structure without a segment is not a 0
    return image, ignored


def segment_mask(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    """One segment's voxels on ``volume_node``'s grid as Slicer resamples them: bool ``[k, j, i]``, all of
    them, whichever other segments overlap it."""
    exported, matrix = _export_on_grid(segmentation_node, [segment_id], volume_node)
    if exported.shape != volume_node.GetImageData().GetDimensions()[::-1] or \
            not np.allclose(matrix, ijk_to_ras(volume_node), atol=1e-4):
        raise OrbitSegError(f"{node_name(segmentation_node)} could not be put on the grid of {node_name(volume_node)}")
    return exported > 0


def _export_on_grid(segmentation_node, segment_ids: list[str], volume_node) -> tuple[np.ndarray, np.ndarray]:
    """Segments exported onto a volume's grid as Slicer resamples them: ``(array, ijk_to_ras)``, ``array``
    ``[k, j, i]`` holding ``n + 1`` where ``segment_ids[n]`` is (later segments win where they overlap)."""
    ids = vtk.vtkStringArray()
    for sid in segment_ids:
        ids.InsertNextValue(sid)
    scene = segmentation_node.GetScene()
    before = _node_ids(scene)
    carrier = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", scene.GenerateUniqueName("OrbitSeg export"))
    try:
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, carrier, volume_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
        if not ok:
            raise OrbitSegError(f"could not resample {node_name(segmentation_node)} onto {node_name(volume_node)}")
        return slicer.util.arrayFromVolume(carrier).copy(), ijk_to_ras(carrier)
    finally:
        for node_id in _node_ids(scene) - before:  # the carrier and whatever the export added (e.g. a colour table)
            node = scene.GetNodeByID(node_id)
            if node is not None:
                scene.RemoveNode(node)


def _node_ids(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
