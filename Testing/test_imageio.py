"""Image and segmentation I/O: exact geometry round trips and clear errors for bad input."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from conftest import ROTATIONS, make_image
from OrbitSegLib import segio, structures
from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.imageio import axial_axis, ijk_to_lps, read_image, same_grid, write_image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("orientation", list(ROTATIONS))
def test_round_trip_keeps_geometry(tmp_path, suffix, orientation):
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    image = make_image(array, (0.31, 0.42, 1.5), (-12.5, 30.25, 7.0), ROTATIONS[orientation])
    path = write_image(image, tmp_path / f"ct{suffix}")
    back = read_image(path)
    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), array)


def test_ras_nifti_header_is_read_as_lps(tmp_path):
    """A NIfTI written with a RAS-style affine keeps its voxel-to-world mapping."""
    image = make_image(np.zeros((3, 4, 5), np.int16), (0.5, 0.5, 2.0), (10.0, 20.0, -5.0), ROTATIONS["ras"])
    back = read_image(write_image(image, tmp_path / "ras.nii.gz"))
    np.testing.assert_allclose(ijk_to_lps(back), ijk_to_lps(image), atol=1e-5)
    # voxel (1, 2, 3) sits at origin + direction @ (spacing * index)
    point = back.TransformIndexToPhysicalPoint((1, 2, 3))
    np.testing.assert_allclose(point, (10.0 - 0.5, 20.0 - 1.0, -5.0 + 6.0), atol=1e-5)


def test_dicom_series_folder(tmp_path):
    array = (np.arange(5 * 6 * 7).reshape(5, 6, 7) % 300 - 100).astype(np.int16)
    image = make_image(array, (0.4, 0.4, 1.25), (-20.0, -10.0, 3.0))
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[0]):
        slice_image = image[:, :, k]
        slice_image.SetMetaData("0020|0032", "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        slice_image.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.1")
        slice_image.SetMetaData("0008|0060", "CT")
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(slice_image)
    back = read_image(folder)
    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), array)


@pytest.mark.parametrize("case, message", [
    ("missing", "file not found"),
    ("corrupt", "cannot read image"),
    ("2d", "2D image"),
    ("single_slice", "single slice"),
    ("4d", "4D image"),
    ("rgb", "vector/RGB"),
    ("nan", "NaN or infinite"),
    ("empty_folder", "no DICOM series"),
])
def test_bad_inputs_are_refused_with_a_clear_message(tmp_path, case, message):
    path = tmp_path / f"{case}.nii.gz"
    if case == "corrupt":
        path.write_bytes(b"this is not an image" * 10)
    elif case == "2d":
        sitk.WriteImage(sitk.Image(8, 8, sitk.sitkInt16), str(path))
    elif case == "single_slice":
        sitk.WriteImage(sitk.Image(8, 8, 1, sitk.sitkInt16), str(path))
    elif case == "4d":
        sitk.WriteImage(sitk.Image([4, 4, 4, 3], sitk.sitkInt16), str(path))
    elif case == "rgb":
        path = tmp_path / "rgb.nrrd"
        sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkVectorUInt8, 3), str(path))
    elif case == "nan":
        path = tmp_path / "nan.nrrd"  # (ITK's NIfTI reader turns NaN into 0)
        array = np.zeros((4, 4, 4), np.float32)
        array[1, 2, 3] = np.nan
        array[0, 0, 0] = np.inf
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    elif case == "empty_folder":
        path = tmp_path / "empty"
        path.mkdir()
    with pytest.raises(OrbitSegError) as info:
        read_image(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_axial_axis_follows_direction():
    assert axial_axis(make_image(np.zeros((3, 4, 5), np.int16))) == 2
    coronal = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    assert axial_axis(make_image(np.zeros((3, 4, 5), np.int16), direction=coronal)) == 1


def test_seg_nrrd_round_trip_names_colours_terminology(tmp_path):
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[1:3, 2:5, 1:3] = structures.label_value("right", "superior_rectus")
    labels[3:5, 1:2, 5:7] = structures.label_value("left", "optic_nerve")
    image = make_image(labels, (0.3, 0.3, 1.0), (5.0, -3.0, 2.0), ROTATIONS["oblique"])
    path = segio.write_seg_nrrd(image, tmp_path / "out.seg.nrrd")
    seg = slicerio.read_segmentation(str(path))
    names = slicerio.segment_names(seg)
    assert len(names) == 12
    assert "Right superior rectus" in names and "Left optic nerve" in names and "Right globe" in names
    sr = slicerio.segment_from_name(seg, "Right superior rectus")
    assert sr["terminology"]["type"][1] == "5815008"
    assert sr["terminology"]["typeModifier"][1] == "24028007"
    np.testing.assert_allclose(sr["color"], structures.structure("superior_rectus").color, atol=1e-6)
    np.testing.assert_allclose(seg["ijkToLPS"], ijk_to_lps(image), atol=1e-6)
    mask = slicerio.segment_mask(seg, "Left optic nerve")  # (i, j, k)
    np.testing.assert_array_equal(mask.transpose(2, 1, 0), labels == structures.label_value("left", "optic_nerve"))
    back = segio.read_reference(path)
    assert same_grid(back, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)


def test_reference_segments_matched_by_name_or_terminology(tmp_path):
    shape = (5, 6, 7)
    seg = slicerio.create_segmentation(shape[::-1], np.diag([0.5, 0.5, 1.0, 1.0]))
    a = np.zeros(shape[::-1], bool)
    a[1:3, 1:3, 1:3] = True
    b = np.zeros(shape[::-1], bool)
    b[4:6, 4:6, 3:4] = True
    c = np.zeros(shape[::-1], bool)
    c[0, 0, 0] = True
    slicerio.add_segment(seg, a, {"name": "OD MR"})
    slicerio.add_segment(seg, b, {"name": "Segment_7", "terminology": structures.terminology("left", "globe")})
    slicerio.add_segment(seg, c, {"name": "lacrimal gland"})
    path = tmp_path / "ref.seg.nrrd"
    slicerio.write_segmentation(str(path), seg)
    labels = sitk.GetArrayFromImage(segio.read_reference(path)).transpose(2, 1, 0)
    assert (labels[a] == structures.label_value("right", "medial_rectus")).all()
    assert (labels[b] == structures.label_value("left", "globe")).all()
    assert labels[0, 0, 0] == 0  # unmatched segment ignored


def test_reference_errors(tmp_path):
    path = tmp_path / "labels.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 3, 3), 40, np.uint8)), str(path))
    with pytest.raises(OrbitSegError, match="not OrbitSeg labels"):
        segio.read_reference(path)
    seg = slicerio.create_segmentation((3, 3, 3), np.eye(4))
    slicerio.add_segment(seg, np.ones((3, 3, 3), bool), {"name": "tumour"})
    slicerio.write_segmentation(str(tmp_path / "other.seg.nrrd"), seg)
    with pytest.raises(OrbitSegError, match="no segment matches"):
        segio.read_reference(tmp_path / "other.seg.nrrd")


def test_writes_are_atomic(tmp_path, monkeypatch):
    """A failing writer leaves neither a partial output nor a temporary file behind."""
    target = tmp_path / "ct.nii.gz"

    def broken(image, path, compress):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken)
    with pytest.raises(RuntimeError):
        write_image(make_image(np.zeros((2, 2, 2), np.int16)), target)
    assert list(tmp_path.iterdir()) == []
