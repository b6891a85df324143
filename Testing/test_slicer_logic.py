"""The Slicer modules' scene logic (OrbitSeg/OrbitSegMRMLLib), headless with the slicer-core wheel.

Real MRML scenes with the module logics Slicer would create (segmentations, tables, volumes, colors,
markups, plots), real volume nodes with flipped and oblique geometry, real segmentation, table, ROI
and plot nodes, files written by Slicer's storage nodes and read back by slicerio and the core, the
real background command line the panel runs, and a corrected result saved as a training case and
adapted on into a model the panel can choose. Tests that need MRML skip only when ``slicer``
cannot be imported; the parts without Slicer (command lines, progress lines, dependencies, study
lists, model registration) always run.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy
import SimpleITK as sitk
import slicerio
import torch

from conftest import BLOB_RADIUS, BLOBS, ROTATIONS, blob_phantom, bright_model, head_phantom, make_image
from OrbitSegLib import imageio, model_cards, models, protocol, requirements, site_cases, structures
from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.model_store import available_models, register_model
from OrbitSegLib.references import annotated_structures
from OrbitSegLib.segio import read_reference
from OrbitSegLib.voi import suggest_voi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "OrbitSeg"))

try:
    import slicer
except ImportError:  # the slicer-core wheel is not installed
    slicer = None
if slicer is not None:
    import slicer.util
    import vtk
    from vtk.util import numpy_support

    from OrbitSegMRMLLib import geometry, roi, segments, tablenodes, trainingcase, trainingchart
    from OrbitSegMRMLLib.logic import SegmentationLogic

needs_slicer = pytest.mark.skipif(slicer is None, reason="slicer-core (headless MRML) is not installed")

LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


# --- fixtures and helpers -------------------------------------------------------------------------

@pytest.fixture
def mrml(tmp_path):
    """A scene with the application logic and the module logics the OrbitSeg modules rely on."""
    if slicer is None:
        pytest.skip("slicer-core (headless MRML) is not installed")
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    (tmp_path / "share" / "ColorFiles").mkdir(parents=True)
    app.SetHomeDirectory(str(tmp_path))
    app.SetShareDirectory("share")
    logics = {}
    for name, cls in (("Colors", slicer.vtkSlicerColorLogic), ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                      ("Tables", slicer.vtkSlicerTablesLogic), ("Volumes", slicer.vtkSlicerVolumesLogic),
                      ("Markups", slicer.vtkSlicerMarkupsLogic), ("Plots", slicer.vtkSlicerPlotsLogic)):
        logic = cls()
        logic.SetMRMLApplicationLogic(app)
        app.SetModuleLogic(name, logic)
        logic.SetMRMLScene(scene)
        logics[name] = logic
    yield SimpleNamespace(scene=scene, app=app, logics=logics, logic=SegmentationLogic(scene, app))
    scene.Clear(1)


def volume_node(scene, image, name="CT"):
    return geometry.image_to_volume_node(image, scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name))


def ras_of_index(node, ijk):
    return (geometry.ijk_to_ras(node) @ np.append(np.asarray(ijk, float), 1.0))[:3]


def constant_checkpoint(path: Path, class_index: int = 1) -> Path:
    """A tiny real SV-Net checkpoint whose every voxel is ``class_index`` (all weights zero but the head bias)."""
    network = models.create("sv-net", widths=[2, 2, 2, 2, 2])
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.zero_()
        network.classifier.bias[class_index] = 6.0
    card = models.make_card(network, window=(48, 400), spacing=(1.0, 1.0, 1.5), input_size=(32, 32, 16),
                            description="constant test model", training_data="none (test)",
                            metrics={"iou": {"globe": 0.5}})
    models.save_checkpoint(path, network, card)
    return path


def segment_centroid_ras(segmentation_node, segment_id):
    """Centroid (RAS) of a segment's voxels in its internal binary labelmap."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    image = segmentation_node.GetBinaryLabelmapInternalRepresentation(segment_id)
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    dims = image.GetDimensions()
    mask = array.reshape(dims[::-1]) == segment.GetLabelValue()
    kji = np.argwhere(mask).mean(axis=0)
    ijk = kji[::-1] + np.array(image.GetExtent()[::2], float)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return (slicer.util.arrayFromVTKMatrix(matrix) @ np.append(ijk, 1.0))[:3], int(mask.sum())


# --- volume nodes, geometry, slices ------------------------------------------------------------------

@needs_slicer
@pytest.mark.parametrize("orientation", list(ROTATIONS))
def test_volume_node_and_image_share_every_voxel_position(mrml, orientation):
    rng = np.random.default_rng(1)
    image = make_image(rng.integers(-1000, 1000, (7, 9, 11)).astype(np.int16), spacing=(0.5, 0.6, 1.2),
                       origin=(10.0, -20.0, 5.0), direction=ROTATIONS[orientation])
    node = volume_node(mrml.scene, image)
    np.testing.assert_allclose(node.GetSpacing(), image.GetSpacing())
    for ijk in [(0, 0, 0), (10, 8, 6), (3, 5, 2)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
        np.testing.assert_allclose(ras_of_index(node, ijk), lps * LPS_TO_RAS, atol=1e-9)
    back = geometry.volume_to_image(node)
    assert imageio.same_grid(back, image) and geometry.same_grid(image, node)
    assert back.GetPixelID() == sitk.sitkInt16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert geometry.axial_axis(node) == imageio.axial_axis(image)


@needs_slicer
def test_volume_node_made_by_slicer_converts_with_its_ras_geometry(mrml):
    """A node built the Slicer way (array + IJKToRAS), RAS-flipped and oblique, lands on the same LPS points."""
    rotation = ROTATIONS["oblique"] @ np.diag([-1.0, 1.0, -1.0])
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = rotation * np.array([0.4, 0.4, 2.0])
    ijk_to_ras[:3, 3] = (12.0, 40.0, -7.0)
    node = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "slicer-made")
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    array = np.arange(5 * 6 * 8, dtype=np.int16).reshape(5, 6, 8)
    slicer.util.updateVolumeFromArray(node, array)
    image = geometry.volume_to_image(node)
    assert image.GetSize() == (8, 6, 5)
    for ijk in [(0, 0, 0), (7, 5, 4), (2, 3, 1)]:
        ras = ijk_to_ras @ np.append(np.asarray(ijk, float), 1.0)
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(ijk), ras[:3] * LPS_TO_RAS, atol=1e-9)
        assert image[ijk] == array[ijk[2], ijk[1], ijk[0]]
    node.SetAndObserveImageData(None)
    with pytest.raises(OrbitSegError, match="has no voxels"):
        geometry.volume_to_image(node)


@needs_slicer
@pytest.mark.parametrize("orientation", ["flipped", "oblique"])
def test_slice_offsets_and_slice_views_give_axial_indices(mrml, orientation):
    image = make_image(np.zeros((20, 12, 10), np.int16), spacing=(0.5, 0.5, 1.5), origin=(3.0, 4.0, -10.0),
                       direction=ROTATIONS[orientation])
    node = volume_node(mrml.scene, image)
    axis = geometry.axial_axis(node)
    assert axis == 2 and geometry.axial_slice_count(node) == 20
    for k in (0, 7, 19):
        assert geometry.slice_index_from_offset(node, geometry.slice_offset_from_index(node, k)) == k
    # a slice view aligned with the volume (as Slicer shows it), centred anywhere in the slice plane
    matrix = geometry.ijk_to_ras(node)
    normal = matrix[:3, 2] / np.linalg.norm(matrix[:3, 2])
    slice_to_ras = np.eye(4)
    slice_to_ras[:3, 2] = normal
    slice_to_ras[:3, 3] = ras_of_index(node, (1, 11, 13))
    assert geometry.slice_index_from_slice_to_ras(node, slice_to_ras) == 13
    assert geometry.slice_index_from_slice_to_ras(node, slicer.util.vtkMatrixFromArray(slice_to_ras)) == 13
    # a real axial slice node moved to a slice's offset, as the panel's "From red slice" reads it
    red = mrml.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    red.SetOrientationToAxial()
    red.SetSliceOffset(geometry.slice_offset_from_index(node, 11))
    assert geometry.slice_index_from_slice_to_ras(node, red.GetSliceToRAS()) == 11
    sagittal = np.eye(4)[:, [1, 2, 0, 3]]  # normal along R: parallel to the axial axis
    with pytest.raises(OrbitSegError, match="not axial"):
        geometry.slice_index_from_slice_to_ras(node, sagittal)
    # under a parent transform the volume moves 9 mm up: the same index sits 9 mm higher in the world
    before = geometry.slice_offset_from_index(node, 5)
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[2, 3] = 9.0
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    node.SetAndObserveTransformNodeID(transform.GetID())
    assert geometry.slice_offset_from_index(node, 5) == pytest.approx(before + 9.0)
    assert geometry.slice_index_from_offset(node, before + 9.0) == 5


# --- result -> segmentation node, tables, files ---------------------------------------------------------

@needs_slicer
@pytest.mark.parametrize("orientation", ["ras", "oblique"])
def test_result_becomes_named_coloured_tagged_segments_at_the_right_place(mrml, orientation):
    image = blob_phantom(ROTATIONS[orientation])
    ct = volume_node(mrml.scene, image)
    segmentation = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "OrbitSeg")
    table = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode", "volumes")
    shown = mrml.logic.segment(ct, bright_model(), segmentation, table, device="cpu")

    seg = segmentation.GetSegmentation()
    assert seg.GetNumberOfSegments() == 12
    for value, side, key in structures.label_table():
        sid = segments.segment_id(side, key)
        segment = seg.GetSegment(sid)
        assert segment is not None, sid
        assert segment.GetName() == structures.segment_name(side, key)
        np.testing.assert_allclose(segment.GetColor(), structures.structure(key).color)
        assert segment.GetLabelValue() == value
        tag = vtk.reference("")
        assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag)
        assert str(tag) == structures.terminology_string(side, key)
        assert "SCT^" + structures.structure(key).snomed_code in str(tag)
    # reference geometry = the CT (needed for DICOM SEG export), 2D and 3D display
    role = segmentation.GetReferenceImageGeometryReferenceRole()
    assert segmentation.GetNodeReference(role) is ct
    geometry_string = seg.GetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    reference = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry_string, reference)
    matrix = vtk.vtkMatrix4x4()
    reference.GetImageToWorldMatrix(matrix)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), geometry.ijk_to_ras(ct), atol=1e-6)
    assert reference.GetDimensions() == image.GetSize()
    assert seg.ContainsRepresentation(segments.CLOSED_SURFACE)
    display = segmentation.GetDisplayNode()
    assert display.GetVisibility2DFill() and display.GetVisibility3D()
    # each blob is the globe segment of its side, at its physical point
    for side, centre in BLOBS.items():
        ras, count = segment_centroid_ras(segmentation, segments.segment_id(side, "globe"))
        assert count > 0
        np.testing.assert_allclose(ras, np.array(centre) * LPS_TO_RAS, atol=0.7)
    # the volume table holds the result rows
    rows = tablenodes.table_node_rows(table)
    assert [r["segment"] for r in rows] == [structures.segment_name(s, k) for _, s, k in structures.label_table()]
    for row, expected in zip(rows, shown.rows):
        assert row["volume_cm3"] == pytest.approx(expected["volume_cm3"])
        assert row["label_value"] == expected["label_value"]
    globe = next(r for r in rows if r["side"] == "right" and r["structure"] == "globe")
    assert globe["volume_cm3"] == pytest.approx(4 / 3 * np.pi * BLOB_RADIUS ** 3 / 1000, rel=0.08)
    assert table.GetColumnUnitLabel("volume_cm3") == "cm3"
    assert shown.device_note.startswith("CPU")


@needs_slicer
def test_result_under_a_parent_transform_keeps_the_cts_own_grid(mrml):
    image = blob_phantom(ROTATIONS["oblique"])
    ct = volume_node(mrml.scene, image)
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = (100.0, -20.0, 7.0)
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    ct.SetAndObserveTransformNodeID(transform.GetID())
    segmentation = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    table = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode")
    mrml.logic.segment(ct, bright_model(), segmentation, table, device="cpu", closed_surface=False)
    # the segmentation moves with the CT, and its reference geometry is the CT's untransformed grid
    assert segmentation.GetTransformNodeID() == transform.GetID()
    assert segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()) is ct
    geometry_string = segmentation.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    reference = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry_string, reference)
    matrix = vtk.vtkMatrix4x4()
    reference.GetImageToWorldMatrix(matrix)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), geometry.ijk_to_ras(ct), atol=1e-6)
    # and each globe segment lies on its blob, in the CT's own (untransformed) coordinates
    for side, centre in BLOBS.items():
        ras, count = segment_centroid_ras(segmentation, segments.segment_id(side, "globe"))
        assert count > 0
        np.testing.assert_allclose(ras, np.array(centre) * LPS_TO_RAS, atol=0.7)


@needs_slicer
def test_one_side_gives_only_that_sides_segments(mrml):
    image = blob_phantom(ROTATIONS["lps"])
    ct = volume_node(mrml.scene, image)
    segmentation = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    table = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode")
    mrml.logic.segment(ct, bright_model(), segmentation, table, side="left", device="cpu", closed_surface=False)
    seg = segmentation.GetSegmentation()
    assert [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())] == \
        [structures.segment_name("left", s.key) for s in structures.STRUCTURES]
    assert {r["side"] for r in tablenodes.table_node_rows(table)} == {"left"}
    assert not seg.ContainsRepresentation(segments.CLOSED_SURFACE)
    wrong_grid = make_image(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(OrbitSegError, match="not on the voxel grid"):
        segments.labelmap_to_segmentation_node(wrong_grid, ("right",), segmentation, ct)


@needs_slicer
@pytest.mark.parametrize("orientation", ["ras", "oblique"])
def test_seg_nrrd_written_by_slicer_reads_back_with_slicerio_on_the_ct_grid(mrml, tmp_path, orientation):
    image = blob_phantom(ROTATIONS[orientation])
    ct = volume_node(mrml.scene, image)
    segmentation = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    table = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode")
    from OrbitSegLib.pipeline import segment_image

    result = segment_image(image, bright_model(), device="cpu")
    mrml.logic.show_result(result.labelmap, result.sides, ct, segmentation, table, closed_surface=False)
    path = tmp_path / "result.seg.nrrd"
    segmentation.AddDefaultStorageNode()
    storage = segmentation.GetStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(segmentation)

    data = slicerio.read_segmentation(str(path))
    np.testing.assert_allclose(data["ijkToLPS"], imageio.ijk_to_lps(image), atol=1e-6)
    assert data["voxels"].shape[-3:] == image.GetSize()
    names = {s["name"]: s for s in data["segments"]}
    assert set(names) == {structures.segment_name(s, k) for _, s, k in structures.label_table()}
    globe = names["Right globe"]
    assert globe["terminology"]["type"][1] == "79652003" and globe["terminology"]["typeModifier"][1] == "24028007"
    # the core reads the file back (segments matched by name) to exactly the result labelmap
    back = read_reference(path)
    assert imageio.same_grid(back, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(result.labelmap))


@needs_slicer
def test_reference_segmentation_node_gives_the_agreement_table(mrml):
    image = blob_phantom(ROTATIONS["oblique"])
    ct = volume_node(mrml.scene, image)
    from OrbitSegLib.metrics import compare_labelmaps
    from OrbitSegLib.pipeline import segment_image

    result = segment_image(image, bright_model(), device="cpu")
    predicted = sitk.GetArrayFromImage(result.labelmap)
    # a reference: the right globe one slice lower, the left globe as predicted
    expected = np.zeros_like(predicted)
    right, left = structures.label_value("right", "globe"), structures.label_value("left", "globe")
    expected[:-1][predicted[1:] == right] = right
    expected[predicted == left] = left
    reference_image = sitk.GetImageFromArray(expected)
    reference_image.CopyInformation(image)
    reference = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "manual")
    segments.labelmap_to_segmentation_node(reference_image, structures.SIDES, reference, ct, closed_surface=False)
    seg = reference.GetSegmentation()
    seg.GetSegment(segments.segment_id("right", "globe")).SetName("OD eyeball")  # matched by name
    left_segment = seg.GetSegment(segments.segment_id("left", "globe"))
    left_segment.SetName("Segment_7")  # matched by its terminology only
    seg.AddEmptySegment("lens", "Right lens", [1.0, 1.0, 0.0])  # not an OrbitSeg structure

    result_node = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    volumes = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode")
    agreement = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode")
    shown = mrml.logic.show_result(result.labelmap, result.sides, ct, result_node, volumes, reference_node=reference,
                                   comparison_table_node=agreement, closed_surface=False)
    assert shown.ignored_reference_segments == ["Right lens"]
    truth = {(r["side"], r["structure"]): r for r in compare_labelmaps(result.labelmap, reference_image)}
    rows = tablenodes.table_node_rows(agreement)
    assert list(rows[0]) == list(tablenodes.COMPARISON_COLUMNS)
    for row in rows:
        want = truth[(row["side"], row["structure"])]
        for column in ("reference_volume_cm3", "difference_cm3", "iou", "dice", "vs", "sensitivity", "specificity"):
            np.testing.assert_allclose(row[column], want[column], equal_nan=True)
    right_row = next(r for r in rows if r["side"] == "right" and r["structure"] == "globe")
    assert 0.5 < right_row["dice"] < 1.0
    left_row = next(r for r in rows if r["side"] == "left" and r["structure"] == "globe")
    assert left_row["dice"] == pytest.approx(1.0)
    # the same comparison from the result segmentation node already in the scene
    rows_again, _ = mrml.logic.compare_nodes(result_node, reference, ct, agreement)
    assert [r["dice"] for r in rows_again if r["structure"] == "globe"] == \
        pytest.approx([right_row["dice"], left_row["dice"]])
    # a reference without a segment for the left optic nerve: no reference values, not a volume of 0
    seg.RemoveSegment(segments.segment_id("left", "optic_nerve"))
    rows_partial, _ = mrml.logic.compare_nodes(result_node, reference, ct, agreement)
    for row in rows_partial:
        missing = (row["side"], row["structure"]) == ("left", "optic_nerve")
        assert np.isnan(row["reference_volume_cm3"]) == missing and (np.isnan(row["sensitivity"]) or not missing)
    unrelated = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "other")
    unrelated.GetSegmentation().AddEmptySegment("x", "Tumor", [1.0, 0.0, 0.0])
    with pytest.raises(OrbitSegError, match="names an OrbitSeg structure"):
        segments.segmentation_node_to_labelmap(unrelated, ct)
    assert mrml.scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0


@needs_slicer
def test_table_shown_in_the_layout(mrml):
    layout = mrml.scene.AddNewNodeByClass("vtkMRMLLayoutNode")
    layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView)
    row = {"side": "right", "structure": "globe", "segment": "Right globe", "label_value": 1, "volume_cm3": 9.1,
           "qa": "outside-normal", "normal_range_cm3": "6.5-8.5", "uncertainty": 0.03,
           "qa_reasons": "outside-normal: enlarged: 9.10 cm³, outside the adult normal 6.5-8.5 cm³"}
    table = tablenodes.volume_table([row], mrml.scene.AddNewNodeByClass("vtkMRMLTableNode"))
    mrml.logic.show_table(table)
    assert layout.GetViewArrangement() == slicer.vtkSlicerTablesLogic.GetLayoutWithTable(
        slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView)
    assert mrml.app.GetSelectionNode().GetActiveTableID() == table.GetID()
    assert tablenodes.table_node_rows(table) == [row]


# --- VOI <-> ROI nodes ------------------------------------------------------------------------------

@needs_slicer
@pytest.mark.parametrize("orientation", ["ras", "flipped", "oblique"])
def test_voi_round_trips_through_per_eye_roi_nodes(mrml, orientation):
    image = head_phantom(ROTATIONS[orientation])
    ct = volume_node(mrml.scene, image)
    voi = mrml.logic.suggest_voi(ct)
    assert voi == suggest_voi(image)
    rois = mrml.logic.show_voi(ct, voi)
    assert set(rois) == {"right", "left"}
    assert rois["right"].GetName() == roi.ROI_NAMES["right"] and rois["right"].GetDisplayNode() is not None
    for side, node in rois.items():
        lo, hi = voi.eye_box(side)
        centre = ras_of_index(ct, (np.array(lo) + np.array(hi)) / 2.0)
        np.testing.assert_allclose(node.GetCenter(), centre, atol=1e-6)
        np.testing.assert_allclose(node.GetSize(), (np.array(hi) - lo + 1) * np.array(image.GetSpacing()), atol=1e-6)
    def effective(v):  # what the pipeline uses: each eye box with the start/end slices applied
        return v.start_slice, v.end_slice, {side: v.eye_box(side) for side in v.boxes}

    assert effective(mrml.logic.voi_from_rois(ct, rois, voi.start_slice, voi.end_slice)) == effective(voi)
    assert effective(mrml.logic.voi_from_rois(ct, rois)) == effective(voi)  # start/end from the boxes themselves
    # the user drags the right box 2 voxels along i: only that box moves
    moved = slicer.util.arrayFromVTKMatrix(rois["right"].GetObjectToNodeMatrix())
    moved[:3, 3] += 2 * geometry.ijk_to_ras(ct)[:3, 0]
    rois["right"].GetObjectToNodeMatrix().DeepCopy(slicer.util.vtkMatrixFromArray(moved))
    again = mrml.logic.voi_from_rois(ct, rois, voi.start_slice, voi.end_slice)
    lo, hi = voi.eye_box("right")
    assert again.eye_box("right") == ((lo[0] + 2, lo[1], lo[2]), (hi[0] + 2, hi[1], hi[2]))
    assert again.eye_box("left") == voi.eye_box("left")
    # new start/end slices move the boxes' axial extent only
    roi.set_roi_slices(ct, rois["left"], voi.start_slice + 3, voi.end_slice - 2)
    lo2, hi2 = roi.roi_to_index_box(ct, rois["left"])
    assert (lo2[2], hi2[2]) == (voi.start_slice + 3, voi.end_slice - 2)
    assert (lo2[:2], hi2[:2]) == (voi.eye_box("left")[0][:2], voi.eye_box("left")[1][:2])
    with pytest.raises(OrbitSegError, match="no eye boxes"):
        mrml.logic.voi_from_rois(ct, {"right": None})


# --- the background process the panel runs -----------------------------------------------------------

@needs_slicer
def test_background_job_runs_the_cli_and_loads_its_results(mrml, tmp_path):
    image = head_phantom(ROTATIONS["oblique"])
    ct = volume_node(mrml.scene, image)
    model = constant_checkpoint(tmp_path / "constant.pt")
    voi = mrml.logic.suggest_voi(ct)
    job = mrml.logic.prepare_job(ct, tmp_path / "job", str(model), device="cpu", voi=voi, start=voi.start_slice + 1,
                                 grid_shifts=2)
    written = imageio.read_image(job.ct_path)
    assert imageio.same_grid(written, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(image))
    assert json.loads(job.voi_path.read_text(encoding="utf-8")) == voi.to_dict()

    done = subprocess.run(protocol.cli_command(sys.executable, job.arguments()), capture_output=True, text=True, timeout=600, encoding="utf-8")
    assert done.returncode == 0, done.stderr[-2000:]
    splitter = protocol.LineSplitter()
    lines = splitter.feed(done.stderr) + splitter.flush()
    progress = [p for p in map(protocol.parse_progress, lines) if p is not None]
    # the input checks, the model and the VOI come first, silently (a refusal prints one line only)
    assert progress[0].message.startswith("Preparing the right eye") and progress[-1].fraction == 1.0
    assert [p.fraction for p in progress] == sorted(p.fraction for p in progress)
    assert any("right eye (OD)" in p.message for p in progress)
    assert any("(grid 2 of 2)" in p.message for p in progress)  # the panel's "average two shifted grids"
    assert job.read_run()["inference_options"]["grid_shifts"] == 2

    segmentation = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    table = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode")
    shown = mrml.logic.load_job_results(job, ct, segmentation, table, closed_surface=False)
    assert shown.model_name == "constant" and shown.device_note.startswith("CPU")
    proposed = trainingcase.remembered_result(segmentation)  # what Save as training case compares with
    assert (proposed["model"], proposed["model_path"]) == ("constant", str(model))
    assert proposed["model_description"] == "constant test model" and proposed["model_created"]
    assert shown.voi.start_slice == voi.start_slice + 1 and shown.voi.boxes.keys() == voi.boxes.keys()
    assert not protocol.cpu_fallback("cpu", shown.device)
    globes = [r for r in tablenodes.table_node_rows(table) if r["structure"] == "globe"]
    assert len(globes) == 2 and all(r["volume_cm3"] > 1.0 for r in globes)  # the constant model fills each box
    others = [r for r in tablenodes.table_node_rows(table) if r["structure"] != "globe"]
    assert all(r["volume_cm3"] == 0 for r in others)
    # the run's QA reaches the table and the panel: every empty structure is flagged implausible
    assert all(r["qa"].startswith("implausible") and "empty" in r["qa_reasons"] for r in others)
    assert all(r["normal_range_cm3"] for r in tablenodes.table_node_rows(table))
    flagged = {(f.side, f.structure) for f in shown.findings if f.flag == "implausible"}
    assert flagged >= {(r["side"], r["structure"]) for r in others}
    assert any(line.startswith("Right superior rectus: implausible: empty") for line in shown.qa_lines())
    with open(job.out_dir / "volumes.csv", newline="", encoding="utf-8") as handle:
        written_rows = list(csv.DictReader(handle))
    assert [float(r["volume_cm3"]) for r in written_rows] == pytest.approx([r["volume_cm3"] for r in shown.rows], rel=1e-5)

    bad = mrml.logic.prepare_job(ct, tmp_path / "bad", str(model), device="cpu", start=500, end=600)
    failed = subprocess.run(protocol.cli_command(sys.executable, bad.arguments()), capture_output=True, text=True, timeout=600, encoding="utf-8")
    assert failed.returncode != 0
    assert protocol.error_message(failed.stderr.splitlines(), failed.returncode) == \
        f"start slice 500 is outside the image (slices 0..{image.GetSize()[2] - 1})"
    with pytest.raises(OrbitSegError, match="wrote no result"):
        mrml.logic.load_job_results(bad, ct, segmentation, table)


def test_dependency_checks_and_pinned_installs(tmp_path):
    listed = requirements.read_requirements(REPO / "OrbitSeg" / "Resources" / "requirements.txt")
    assert "monai>=1.4" in listed and not any(r.startswith(("torch", "numpy", "SimpleITK")) for r in listed)
    assert requirements.unmet(listed) == []  # this environment has them all
    assert requirements.unmet(["numpy>=1", "numpy<0.1", "surely-not-an-installed-package-xyz"]) == \
        ["numpy<0.1", "surely-not-an-installed-package-xyz"]
    arguments = requirements.install_arguments(["monai>=1.4"])
    assert arguments[0] == "monai>=1.4"
    assert f"numpy=={np.__version__}" in arguments and f"torch=={torch.__version__}" in arguments
    assert f"scipy=={scipy.__version__}" in arguments  # Slicer's SciPy is never swapped for another
    assert requirements.install_arguments(["scipy>=99"])[:1] == ["scipy>=99"]  # unless it is too old
    assert not any(a.startswith("scipy==") for a in requirements.install_arguments(["scipy>=99"]))
    assert requirements.slicer_version_problem(*requirements.MINIMUM_SLICER) == ""
    assert requirements.slicer_version_problem(6, 0) == ""
    assert "needs 3D Slicer 5.6 or newer; this is Slicer 5.2" in requirements.slicer_version_problem(5, 2)
    bad = tmp_path / "requirements.txt"
    bad.write_text("monai>=1.4\nnot a requirement ===\n", encoding="utf-8")
    with pytest.raises(Exception, match="Expected"):
        requirements.read_requirements(bad)


# --- models: list, cards, registration ----------------------------------------------------------------

def test_model_list_cards_and_registration(tmp_path, monkeypatch):
    monkeypatch.setenv("ORBITSEG_USER_MODELS", str(tmp_path / "user"))
    trained = constant_checkpoint(tmp_path / "run" / "fold0.pt")
    path = register_model(trained, "my-sv-net")
    assert path == tmp_path / "user" / "my-sv-net.pt" and path.read_bytes() == trained.read_bytes()
    assert available_models()["my-sv-net"] == path
    with pytest.raises(OrbitSegError, match="already exists"):
        register_model(trained, "my-sv-net")
    assert register_model(trained, "my-sv-net", overwrite=True) == path
    for bad_name in ("", "../evil", "a b", "x/y"):
        with pytest.raises(OrbitSegError, match="plain name"):
            register_model(trained, bad_name)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(OrbitSegError, match="not a readable OrbitSeg checkpoint"):
        register_model(broken, "broken")
    (tmp_path / "user" / "damaged.pt").write_bytes(b"garbage")
    models.save_ensemble(tmp_path / "user" / "pair.pt", [trained, trained])

    choices = {c.name: c for c in model_cards.model_choices()}
    mine = choices["my-sv-net"]
    assert mine.origin == "user" and mine.card["architecture"] == "sv-net" and not mine.problem
    html = model_cards.card_html(mine)
    assert "constant test model" in html and "iou / globe: 0.5" in html and "sv-net" in html
    assert "<b>Trained on scans</b></td><td>0.25-0.5 mm in-plane, 0.5-3 mm between slices (not recorded" in html
    assert model_cards.card_tooltip(mine).startswith("constant test model")
    assert "sv-net, ensemble of 2 networks (outputs averaged)" in model_cards.card_html(choices["pair"])
    assert "ensemble" not in model_cards.card_html(mine)
    assert choices["damaged"].problem and "cannot be used" in model_cards.card_html(choices["damaged"])
    assert [c.origin for c in choices.values()] == sorted((c.origin for c in choices.values()),
                                                          key=lambda o: o != "bundled")


# --- training: data, command line, live log ---------------------------------------------------------

@needs_slicer
def test_training_log_feeds_a_table_and_a_loss_chart(mrml, tmp_path):
    log = tmp_path / "training_log.csv"
    log.write_text("fold,epoch,train_loss,val_loss,val_dice,lr,seconds\n"
                   "0,0,0.9,0.95,0.1,0.0001,3.0\n0,1,0.7,0.8,0.3,0.0001,2.9\n1,0,0.88,,0.12,0.0001,3.1\n"
                   "1,1,0.6", encoding="utf-8")  # the last row is still being written
    rows = protocol.read_training_log(log)
    assert [(r["step"], r["fold"], r["epoch"]) for r in rows] == [(0, 0, 0), (1, 0, 1), (2, 1, 0)]
    assert np.isnan(rows[2]["val_loss"]) and rows[0]["lr"] == 1e-4
    assert protocol.read_training_log(tmp_path / "none.csv") == []
    table = trainingchart.update_log_table(mrml.scene.AddNewNodeByClass("vtkMRMLTableNode", "log"), rows)
    table_rows = tablenodes.table_node_rows(table)
    assert list(table_rows[0]) == ["step", "fold", "epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds"]
    assert [r["train_loss"] for r in table_rows] == [0.9, 0.7, 0.88]
    chart = trainingchart.loss_chart(table, mrml.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "loss"))
    assert chart.GetNumberOfPlotSeriesNodes() == 3
    series = [chart.GetNthPlotSeriesNode(i) for i in range(3)]
    assert [s.GetYColumnName() for s in series] == ["train_loss", "val_loss", "val_dice"]
    assert all(s.GetXColumnName() == "step" and s.GetTableNode() is table for s in series)
    trainingchart.loss_chart(table, chart)  # idempotent: no duplicate series
    assert chart.GetNumberOfPlotSeriesNodes() == 3
    panel_table, panel_chart = trainingchart.log_nodes(mrml.scene)  # what the training panel shows
    assert panel_table.GetNumberOfRows() == 0 and panel_chart.GetNumberOfPlotSeriesNodes() == 3
    assert trainingchart.refresh_log_table(log, panel_table) == 3 and panel_table.GetNumberOfRows() == 3
    assert trainingchart.log_nodes(mrml.scene, panel_table, panel_chart) == (panel_table, panel_chart)


@pytest.mark.slow
@needs_slicer
def test_training_job_on_phantom_cases_feeds_the_chart_and_registers_the_model(mrml, tmp_path, monkeypatch):
    """The training panel's path without Qt: the real ``orbitseg train`` on 3 phantom cases (about a minute)."""
    monkeypatch.setenv("ORBITSEG_USER_MODELS", str(tmp_path / "user"))
    job = protocol.TrainingJob(tmp_path / "run", "tiny-sv-net", "sv-net", "phantom", "3", folds=1, epochs=1,
                               batch_size=2, learning_rate=1e-4, device="cpu")
    done = subprocess.run(protocol.cli_command(sys.executable, job.arguments()), capture_output=True, text=True, timeout=1200, encoding="utf-8")
    assert done.returncode == 0, done.stderr[-2000:]
    progress = [p for p in map(protocol.parse_progress, done.stderr.splitlines()) if p is not None]
    assert progress and progress[-1].fraction == 1.0
    rows = protocol.read_training_log(job.log_path)
    assert [r["fold"] for r in rows] == [0] and np.isfinite(rows[0]["train_loss"])
    table = trainingchart.update_log_table(mrml.scene.AddNewNodeByClass("vtkMRMLTableNode"), rows)
    chart = trainingchart.loss_chart(table, mrml.scene.AddNewNodeByClass("vtkMRMLPlotChartNode"))
    assert table.GetNumberOfRows() == 1 and chart.GetNumberOfPlotSeriesNodes() == 3
    assert job.model_path.is_file() and protocol.best_checkpoint_so_far(job.out_dir) is not None
    assert len(list(job.cache_dir.glob("phantom-*.npz"))) == 3  # kept for a resumed run
    registered = register_model(job.model_path, job.name)
    choice = next(c for c in model_cards.model_choices() if c.name == "tiny-sv-net")
    assert choice.path == registered and choice.card["architecture"] == "sv-net" and not choice.problem


# --- training cases: a corrected result saved, adapted on, and chosen ---------------------------------

def segmented_ct(mrml, orientation: str, name: str):
    """A blob phantom CT node segmented in this process by the bright-voxel model (both globes, no muscles)."""
    image = blob_phantom(ROTATIONS[orientation])
    ct = volume_node(mrml.scene, image, name)
    segmentation = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name} OrbitSeg")
    mrml.logic.segment(ct, bright_model(), segmentation, mrml.scene.AddNewNodeByClass("vtkMRMLTableNode"),
                       device="cpu", closed_surface=False)
    return image, ct, segmentation


def edit_segment(segmentation_node, side: str, key: str, volume_node, mask_kji: np.ndarray) -> None:
    """Give a segment the voxels of ``mask_kji`` (on the CT's grid) as a Segment Editor effect does."""
    carrier = slicer.vtkMRMLLabelMapVolumeNode()
    slicer.util.updateVolumeFromArray(carrier, mask_kji.astype(np.uint8))
    image = slicer.vtkOrientedImageData()
    image.ShallowCopy(carrier.GetImageData())
    image.SetGeometryFromImageToWorldMatrix(slicer.util.vtkMatrixFromArray(geometry.ijk_to_ras(volume_node)))
    assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, segmentation_node, segments.segment_id(side, key), slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)


def muscle_mask(image: sitk.Image, side: str = "right") -> np.ndarray:
    """A small block (bool ``[k, j, i]``) above a globe, where the bright-voxel model finds nothing."""
    centre = np.array(BLOBS[side]) + (0.0, 0.0, 9.0)
    i, j, k = image.TransformPhysicalPointToIndex(centre.tolist())
    mask = np.zeros(sitk.GetArrayViewFromImage(image).shape, bool)
    mask[k - 1:k + 2, j - 2:j + 3, i - 3:i + 4] = True
    return mask


@needs_slicer
def test_a_corrected_result_is_saved_as_a_training_case_with_the_corrected_segments_only(mrml, tmp_path):
    image, ct, segmentation = segmented_ct(mrml, "oblique", "Head CT 3: axial")
    proposed = trainingcase.remembered_result(segmentation)
    assert proposed["model"] == "bright"
    assert set(proposed["fingerprints"]) == {segments.segment_id(s, k) for _, s, k in structures.label_table()}
    site = tmp_path / "site"
    seg = segmentation.GetSegmentation()
    # nothing corrected: refused and nothing written, also after Segment Editor has split or merged the layers
    for reorganise in (lambda: None, lambda: seg.SeparateSegmentLabelmap(segments.segment_id("right", "globe")),
                       lambda: seg.CollapseBinaryLabelmaps(False)):
        reorganise()
        with pytest.raises(OrbitSegError, match="no segment of Head CT 3: axial OrbitSeg differs from what bright"):
            trainingcase.save_training_case(ct, segmentation, site)
        assert not site.exists()
    before, _ = segments.segmentation_node_to_labelmap(segmentation, ct)

    # the radiologist outlines the right superior rectus, which the model missed
    sr_value = structures.label_value("right", "superior_rectus")
    sr = muscle_mask(image)
    edit_segment(segmentation, "right", "superior_rectus", ct, sr)
    saved = trainingcase.save_training_case(ct, segmentation, site)
    assert saved.segments == saved.corrected == ["Right superior rectus"]
    assert saved.case.startswith("Head_CT_3_axial-") and saved.folder == site / saved.case and saved.site_cases == 1
    assert "corrected: Right superior rectus" in saved.message()
    written = imageio.read_image(saved.folder / site_cases.CT_NAME)  # the CT on its exact grid (LPS)
    np.testing.assert_allclose(imageio.ijk_to_lps(written), imageio.ijk_to_lps(image), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(written), sitk.GetArrayViewFromImage(image))
    reference = read_reference(saved.folder / site_cases.REFERENCE_NAME)
    assert imageio.same_grid(reference, image) and sr.sum() > 0
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(reference), sr * sr_value)
    assert annotated_structures(reference) == {("right", "superior_rectus")}  # the others are unlabelled
    assert [s["name"] for s in slicerio.read_segmentation(str(saved.folder / site_cases.REFERENCE_NAME))["segments"]] \
        == ["Right superior rectus"]
    case = json.loads((saved.folder / site_cases.CASE_NAME).read_text(encoding="utf-8"))
    assert (case["ct"], case["model"], case["model_path"]) == ("Head CT 3: axial", "bright", "bright")
    assert case["corrected"] == case["segments"] == ["Right superior rectus"] and case["include_unchanged"] is False
    assert case["segmented"] == proposed["segmented"] and case["saved"] >= case["segmented"]
    assert site_cases.read_cases(site) == [case]
    assert (site / site_cases.STUDIES_NAME).read_text(encoding="utf-8").splitlines() == \
        ["id,image,reference", f"{saved.case},{saved.case}/ct.nrrd,{saved.case}/reference.seg.nrrd"]

    # with the unchanged segments: all twelve, the same case replaced
    every = trainingcase.save_training_case(ct, segmentation, site, include_unchanged=True)
    assert (every.case, every.site_cases, every.corrected) == (saved.case, 1, ["Right superior rectus"])
    assert every.segments == [structures.segment_name(s, k) for _, s, k in structures.label_table()]
    reference = read_reference(every.folder / site_cases.REFERENCE_NAME, written)
    assert annotated_structures(reference) == {(s, k) for _, s, k in structures.label_table()}
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(reference),
                                  np.where(sr, sr_value, sitk.GetArrayViewFromImage(before)))
    assert json.loads((every.folder / site_cases.CASE_NAME).read_text(encoding="utf-8"))["include_unchanged"] is True

    # an undone correction is none; another CT, or a segmentation OrbitSeg did not make, is refused
    edit_segment(segmentation, "right", "superior_rectus", ct, np.zeros_like(sr))
    with pytest.raises(OrbitSegError, match="differs from what bright proposed"):
        trainingcase.save_training_case(ct, segmentation, site)
    other = volume_node(mrml.scene, image, "Other CT")
    with pytest.raises(OrbitSegError, match="was made on the CT Head CT 3: axial, not on Other CT"):
        trainingcase.save_training_case(other, segmentation, site, include_unchanged=True)
    manual = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "manual")
    with pytest.raises(OrbitSegError, match="manual holds no OrbitSeg result"):
        trainingcase.save_training_case(ct, manual, site, include_unchanged=True)
    assert len(site_cases.read_cases(site)) == 1
    assert mrml.scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0


@needs_slicer
def test_training_cases_adapt_into_a_model_the_panel_can_choose(mrml, tmp_path, monkeypatch, capsys):
    """Save as training case twice, then the Training panel's Adapt job (in this process, with a short
    schedule), and the model it registers in OrbitSeg's model list."""
    from OrbitSegLib.cli import main
    from OrbitSegLib.training import adapt as adapt_module

    monkeypatch.setenv("ORBITSEG_USER_MODELS", str(tmp_path / "user"))
    monkeypatch.setattr(adapt_module, "SAMPLES_PER_EPOCH", 4)
    monkeypatch.setattr(adapt_module, "EPOCHS", 2)
    site = tmp_path / "site"
    for n, orientation in enumerate(("ras", "lps")):
        image, ct, segmentation = segmented_ct(mrml, orientation, f"Study {n}")
        globe = segments.segment_mask(segmentation, segments.segment_id("right", "globe"), ct)
        globe[np.nonzero(globe.any(axis=(1, 2)))[0].max()] = False  # the top slice of the right globe was too much
        edit_segment(segmentation, "right", "globe", ct, globe)
        trainingcase.save_training_case(ct, segmentation, site, include_unchanged=n == 1)
    assert [c["corrected"] for c in site_cases.read_cases(site)] == [["Right globe"], ["Right globe"]]

    job = protocol.AdaptJob(site, site_cases.model_path(site, "our-site"), str(constant_checkpoint(tmp_path / "start.pt")),
                            "cpu")
    assert main(job.arguments()) == 0
    printed = capsys.readouterr()
    progress = [p for p in map(protocol.parse_progress, printed.err.splitlines()) if p is not None]
    assert progress and progress[-1].fraction == 1.0
    assert f"Model saved: {job.model_path} (adapted on 2 studies)" in printed.out  # the panel shows what is printed
    assert len(protocol.read_training_log(job.log_path)) == 2  # the panel's live chart follows this log
    registered = register_model(job.model_path, "our-site")
    assert available_models()["our-site"] == registered
    choice = next(c for c in model_cards.model_choices() if c.name == "our-site")
    assert choice.origin == "user" and not choice.problem
    assert "adapted to site (2 corrected studies)" in choice.card["description"]


@needs_slicer
def test_a_case_with_only_its_muscles_corrected_trains_those_muscles(mrml, tmp_path):
    from OrbitSegLib.training.data import GridSpec, prepare, studies_from_list

    image, ct, segmentation = segmented_ct(mrml, "ras", "Muscles only")
    edit_segment(segmentation, "right", "superior_rectus", ct, muscle_mask(image))
    trainingcase.save_training_case(ct, segmentation, tmp_path)
    eyes = prepare(studies_from_list(site_cases.study_list(tmp_path)), GridSpec((1.0, 1.0, 1.5), (48.0, 400.0), 16))
    assert [(e.side, e.annotated.tolist()) for e in eyes] == \
        [("right", [s.key == "superior_rectus" for s in structures.STRUCTURES])]
