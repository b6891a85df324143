"""VOI: automatic suggestion, validation errors, crop and paste-back with exact geometry."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROTATIONS, head_phantom, make_image
from OrbitSegLib import voi as V
from OrbitSegLib.errors import OrbitSegError

GLOBES = {"right": np.array([-31.0, 2.0, 1.0]), "left": np.array([31.0, 2.0, 1.0])}


@pytest.mark.parametrize("orientation", list(ROTATIONS))
def test_globes_found_for_every_orientation(orientation):
    image = head_phantom(ROTATIONS[orientation])
    found = V.find_globes(image)
    for side in ("right", "left"):
        assert np.linalg.norm(found[side] - GLOBES[side]) < 3.0, (side, found[side])


@pytest.mark.parametrize("orientation", ["lps", "oblique"])
def test_suggested_boxes_contain_the_orbit(orientation):
    image = head_phantom(ROTATIONS[orientation])
    voi = V.suggest_voi(image)
    assert 0 <= voi.start_slice < voi.end_slice < image.GetSize()[voi.axial_axis]
    for side, centre in GLOBES.items():
        lo, hi = voi.eye_box(side)
        # the globe centre and a point 30 mm behind it (towards the apex) are inside the box
        for point in (centre, centre + np.array([0.0, 30.0, 0.0])):
            index = image.TransformPhysicalPointToContinuousIndex(point.tolist())
            assert all(l - 1 <= v <= h + 1 for v, l, h in zip(index, lo, hi)), (side, point, lo, hi)


def test_no_orbit_found_is_a_clear_error():
    blank = make_image(np.full((40, 60, 60), 30, np.int16), (1.0, 1.0, 1.0))
    with pytest.raises(OrbitSegError, match="no orbit found"):
        V.suggest_voi(blank)


def _voi_for(image):
    return V.VOI(5, 30, {"right": ((2, 3, 0), (20, 25, 39)), "left": ((30, 3, 0), (50, 25, 39))})


@pytest.mark.parametrize("start, end, message", [
    (-1, 20, "start slice -1 is outside the image"),
    (5, 40, "end slice 40 is outside the image"),
    (25, 10, "start slice 25 is after end slice 10"),
    (10, 11, "too few"),
])
def test_bad_start_end_slices(start, end, message):
    image = make_image(np.zeros((40, 30, 60), np.int16))
    with pytest.raises(OrbitSegError, match=message):
        V.validate_voi(image, _voi_for(image).with_slices(start, end), ("right", "left"))


def test_box_clipped_or_refused():
    image = make_image(np.zeros((40, 30, 60), np.int16))
    voi = V.VOI(5, 30, {"right": ((-5, -2, 0), (20, 25, 39)), "left": ((70, 3, 0), (80, 25, 39))})
    clipped = V.validate_voi(image, voi, ("right",))
    assert clipped.eye_box("right") == ((0, 0, 5), (20, 25, 30))
    with pytest.raises(OrbitSegError, match="left eye box"):
        V.validate_voi(image, voi, ("left",))
    with pytest.raises(OrbitSegError, match="no box for the left eye"):
        V.VOI(5, 30, {"right": voi.boxes["right"]}).eye_box("left")


@pytest.mark.parametrize("orientation", list(ROTATIONS))
def test_crop_keeps_physical_position_and_paste_restores(orientation):
    rng = np.random.default_rng(0)
    array = rng.integers(-100, 100, size=(20, 30, 40)).astype(np.int16)
    image = make_image(array, (0.4, 0.5, 1.5), (3.0, -7.0, 11.0), ROTATIONS[orientation])
    lo, hi = (5, 7, 3), (24, 21, 15)
    region = V.crop(image, lo, hi)
    assert region.GetSize() == (20, 15, 13)
    np.testing.assert_allclose(region.TransformIndexToPhysicalPoint((0, 0, 0)), image.TransformIndexToPhysicalPoint(lo))
    np.testing.assert_allclose(region.GetDirection(), image.GetDirection())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(region), array[3:16, 7:22, 5:25])
    full = np.zeros(array.shape, np.uint8)
    values = (sitk.GetArrayFromImage(region) > 0).astype(np.uint8) * 3
    V.paste(full, values, lo)
    np.testing.assert_array_equal(full[3:16, 7:22, 5:25], values)
    assert full.sum() == values.sum()
    # paste never overwrites an existing label
    V.paste(full, np.full(values.shape, 9, np.uint8), lo)
    assert set(np.unique(full[3:16, 7:22, 5:25])) == {3, 9}
    assert (full[3:16, 7:22, 5:25][values == 3] == 3).all()


def test_physical_and_index_boxes_round_trip():
    image = make_image(np.zeros((30, 40, 50), np.int16), (0.5, 0.5, 2.0), (10.0, 20.0, 30.0), ROTATIONS["ras"])
    lo, hi = (4, 6, 2), (30, 33, 20)
    lps_min, lps_max = V.index_box_to_physical(image, lo, hi)
    assert V.physical_box_to_index(image, lps_min, lps_max) == (lo, hi)


def test_voi_dict_round_trip_and_overrides():
    voi = V.VOI(3, 40, {"right": ((1, 2, 3), (10, 20, 40))})
    assert V.VOI.from_dict(voi.to_dict()) == voi
    assert voi.with_slices(end=35).eye_box("right") == ((1, 2, 3), (10, 20, 35))


def test_detection_convolution_equals_scipy_fftconvolve():
    from scipy import signal

    rng = np.random.default_rng(3)
    array = rng.random((23, 30, 17), dtype=np.float32)
    for kernel in (V._ball(4.5), V._shell(4.5, 7.5)):
        np.testing.assert_allclose(V._convolve_same(array, kernel), signal.fftconvolve(array, kernel, mode="same"),
                                   atol=1e-5)
