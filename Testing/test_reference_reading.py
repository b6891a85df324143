"""Reference segmentations as 3D Slicer saves them: cropped to their extent, or lacking some structures."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from conftest import ROTATIONS, make_image
from OrbitSegLib import metrics, references, segio, structures
from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.imageio import ijk_to_lps, read_image, same_grid
from OrbitSegLib.phantom import write_dataset
from OrbitSegLib.tables import (REFERENCE_COLUMNS, VOLUME_COLUMNS, agreement_rows, format_volume_table, read_csv,
                                volume_rows, write_csv)

OPTIC_NERVES = {("right", "optic_nerve"), ("left", "optic_nerve")}


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    """One small phantom case folder: ``ct.nii.gz``, ``reference.seg.nrrd`` and ``labels.nii.gz``."""
    folder = tmp_path_factory.mktemp("phantom")
    write_dataset(folder, 1, seed=5, small=True)
    return next(p for p in folder.iterdir() if p.is_dir())


def labelled_box(labelmap: sitk.Image) -> tuple[list[int], list[int]]:
    """Index ``(i, j, k)`` and size of the bounding box of the labelled voxels."""
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(labelmap != 0)
    box = shape.GetBoundingBox(1)
    return list(box[:3]), list(box[3:])


def cropped(labelmap: sitk.Image) -> sitk.Image:
    """The labelmap cropped to its labelled voxels, as Slicer's "crop to minimum extent" (same lattice)."""
    index, size = labelled_box(labelmap)
    return sitk.RegionOfInterest(labelmap, size, index)


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def test_cropped_seg_nrrd_is_placed_on_the_ct_grid(case, tmp_path):
    ct = read_image(case / "ct.nii.gz")
    full = segio.read_reference(case / "reference.seg.nrrd", ct)
    small = cropped(full)
    assert small.GetSize() != full.GetSize() and small.GetOrigin() != full.GetOrigin()
    path = segio.write_seg_nrrd(small, tmp_path / "cropped.seg.nrrd")
    assert slicerio.read_segmentation(str(path), skip_voxels=True)["ijkToLPS"][0][3] != ct.GetOrigin()[0]

    back = segio.read_reference(path, ct)
    assert same_grid(back, ct)
    np.testing.assert_array_equal(array(back), array(full))
    assert references.annotated_structures(back) == references.annotated_structures(full)

    as_stored = segio.read_reference(path)  # on its own (cropped) grid: compare_labelmaps places it
    assert as_stored.GetSize() == small.GetSize()
    rows = metrics.compare_labelmaps(full, as_stored)
    assert all(r["iou"] == 1.0 and r["reference_volume_cm3"] == r["volume_cm3"] > 0 for r in rows)


def test_cropped_labelmap_is_placed_on_the_ct_grid(case, tmp_path):
    ct = read_image(case / "ct.nii.gz")
    full = segio.read_reference(case / "labels.nii.gz")
    path = segio.write_labelmap(cropped(full), tmp_path / "cropped.nii.gz")
    back = segio.read_reference(path, ct)
    assert same_grid(back, ct)
    np.testing.assert_array_equal(array(back), array(full))


def test_reference_reaching_beyond_an_oblique_ct_with_labels_inside(tmp_path):
    ct = make_image(np.zeros((12, 14, 16), np.int16), (0.4, 0.5, 1.5), (10.0, -20.0, 5.0), ROTATIONS["oblique"])
    labels = np.zeros((12, 14, 16), np.uint8)
    labels[0:3, 2:6, 0:4] = structures.label_value("right", "globe")
    labels[9:12, 10:14, 12:16] = structures.label_value("left", "lateral_rectus")
    full = make_image(labels, ct.GetSpacing(), ct.GetOrigin(), ROTATIONS["oblique"])
    padded = sitk.ConstantPad(full, (3, 0, 2), (1, 4, 2))  # 3 voxels before i, 4 after j, ...: same lattice
    assert padded.GetSize() == (20, 18, 16)
    path = segio.write_seg_nrrd(padded, tmp_path / "padded.seg.nrrd")
    back = segio.read_reference(path, ct)
    assert same_grid(back, ct)
    np.testing.assert_array_equal(array(back), labels)


def test_reference_on_a_shifted_lattice_is_refused(case, tmp_path):
    ct = read_image(case / "ct.nii.gz")
    small = cropped(segio.read_reference(case / "reference.seg.nrrd"))
    origin = np.array(small.GetOrigin())
    small.SetOrigin(tuple(origin + 0.5 * np.array(small.GetSpacing()) * np.array([1.0, 0.0, 0.0])))
    path = segio.write_seg_nrrd(small, tmp_path / "shifted.seg.nrrd")
    with pytest.raises(OrbitSegError, match=r"shifted\.seg\.nrrd: the reference segmentation is on a different grid"):
        segio.read_reference(path, ct)
    with pytest.raises(OrbitSegError, match="different grid"):
        references.reference_on_grid(ct, segio.read_reference(path))
    finer = make_image(array(segio.read_reference(case / "labels.nii.gz")), (0.5, 0.5, 2.0), ct.GetOrigin())
    with pytest.raises(OrbitSegError, match="different grid"):
        metrics.compare_labelmaps(ct, finer)


def test_reference_with_labels_outside_the_ct_is_refused(case, tmp_path):
    ct = read_image(case / "ct.nii.gz")
    small = cropped(segio.read_reference(case / "reference.seg.nrrd"))
    index, _ = labelled_box(segio.read_reference(case / "labels.nii.gz"))
    # the same lattice, moved so that its first voxels lie 2 voxels before the CT's first one along i
    small.SetOrigin(ct.TransformIndexToPhysicalPoint((-2, index[1], index[2])))
    path = segio.write_seg_nrrd(small, tmp_path / "outside.seg.nrrd")
    with pytest.raises(OrbitSegError, match=r"labelled voxels outside the CT: they span CT voxels \(-2, "):
        segio.read_reference(path, ct)
    with pytest.raises(OrbitSegError, match="labelled voxels outside the CT"):
        metrics.compare_labelmaps(ct, segio.read_reference(path))


def write_without_optic_nerves(labelmap: sitk.Image, path: Path) -> Path:
    """A Slicer segmentation of ``labelmap`` with no optic nerve segments at all (as an annotator might save)."""
    wanted = {structures.label_value(side, key) for _, side, key in structures.label_table()} - {
        structures.label_value(side, key) for side, key in OPTIC_NERVES}
    voxels = array(labelmap).transpose(2, 1, 0)
    voxels = np.ascontiguousarray(np.where(np.isin(voxels, list(wanted)), voxels, 0).astype(np.uint8))
    slicerio.write_segmentation(str(path), {"voxels": voxels, "ijkToLPS": ijk_to_lps(labelmap),
                                            "segments": segio.segment_records(wanted)})
    return path


def test_structures_missing_from_a_seg_nrrd_have_no_reference_values(case, tmp_path, caplog):
    ct = read_image(case / "ct.nii.gz")
    prediction = segio.read_reference(case / "labels.nii.gz", ct)  # stands in for OrbitSeg's result
    complete = segio.read_reference(case / "reference.seg.nrrd", ct)
    partial = segio.read_reference(write_without_optic_nerves(complete, tmp_path / "partial.seg.nrrd"), ct)
    assert references.annotated_structures(partial) == references.annotated_structures(complete) - OPTIC_NERVES

    with caplog.at_level(logging.WARNING, logger="OrbitSegLib"):
        comparison = metrics.compare_labelmaps(prediction, partial)
    assert "lacks Right optic nerve, Left optic nerve" in caplog.text
    rows = volume_rows(metrics.volumes_cm3(prediction), structures.SIDES, comparison)
    for row in rows:
        assert row["volume_cm3"] > 0
        if (row["side"], row["structure"]) in OPTIC_NERVES:
            assert all(math.isnan(row[c]) for c in REFERENCE_COLUMNS)
        else:
            assert row["reference_volume_cm3"] == pytest.approx(row["volume_cm3"]) and row["iou"] == 1.0

    path = write_csv(rows, tmp_path / "volumes.csv", VOLUME_COLUMNS + REFERENCE_COLUMNS)
    back = {(r["side"], r["structure"]): r for r in read_csv(path)}
    assert all(back[s][c] == "" for s in OPTIC_NERVES for c in REFERENCE_COLUMNS)
    assert float(back[("right", "globe")]["reference_volume_cm3"]) > 0 and back[("left", "globe")]["iou"] == "1"
    table = format_volume_table(rows).splitlines()
    nerve = next(line for line in table if line.startswith("Right optic nerve"))
    assert nerve.split()[-4:] == ["-", "-", "-", "-"] and "nan" not in "\n".join(table)

    complete_rows = volume_rows(metrics.volumes_cm3(prediction), structures.SIDES,
                                metrics.compare_labelmaps(prediction, complete))
    agreement = {(a["structure"], a["side"]): a for a in agreement_rows(rows + complete_rows)}
    assert agreement[("optic_nerve", "both")]["n"] == 2 and agreement[("optic_nerve", "right")]["n"] == 1
    assert agreement[("optic_nerve", "both")]["mae"] == pytest.approx(0.0)
    assert agreement[("globe", "both")]["n"] == 4
    assert not any(a["structure"] == "optic_nerve" for a in agreement_rows(rows))


def test_label_values_missing_from_a_labelmap_have_no_reference_values(case, tmp_path):
    ct = read_image(case / "ct.nii.gz")
    prediction = segio.read_reference(case / "labels.nii.gz")
    labels = array(prediction)
    labels[labels == structures.label_value("left", "optic_nerve")] = 0
    partial = sitk.GetImageFromArray(labels)
    partial.CopyInformation(prediction)
    path = segio.write_labelmap(partial, tmp_path / "partial.nii.gz")
    reference = segio.read_reference(path, ct)
    rows = {(r["side"], r["structure"]): r for r in metrics.compare_labelmaps(prediction, reference)}
    assert math.isnan(rows[("left", "optic_nerve")]["reference_volume_cm3"])
    assert math.isnan(rows[("left", "optic_nerve")]["dice"])
    assert rows[("right", "optic_nerve")]["dice"] == 1.0 and rows[("right", "optic_nerve")]["reference_volume_cm3"] > 0


def test_a_labelmap_made_in_memory_annotates_every_structure():
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1:3, 1:3, 1:3] = structures.label_value("right", "globe")
    image = make_image(labels)
    assert len(references.annotated_structures(image)) == 12
    rows = metrics.compare_labelmaps(image, image)
    left_globe = next(r for r in rows if (r["side"], r["structure"]) == ("left", "globe"))
    assert left_globe["reference_volume_cm3"] == 0.0 and left_globe["vs"] == 1.0
