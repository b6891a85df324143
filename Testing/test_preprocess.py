"""Windowing and the model grid: resampling to the model's spacing and back, mirroring the left eye."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROTATIONS, make_image, physical_grid
from OrbitSegLib import preprocess as P
from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.inference import InferenceOptions


def test_window_clips_and_scales():
    hu = np.array([-1000, -152, 48, 248, 3000], dtype=np.int16)
    out = P.window(hu)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(P.window(np.array([0.0]), level=0, width=100), [0.5])
    with pytest.raises(ValueError):
        P.window(hu, width=0)


def _blob_crop(direction, spacing=(0.3, 0.3, 2.5)):
    """A crop with a 5 mm sphere of 100 HU at LPS (−30, 10, 4) in -100 HU fat."""
    image = make_image(np.zeros((14, 120, 110), np.int16), spacing, (-45.0, -8.0, -12.0), direction)
    # centre the grid on the blob whatever the direction
    centre = np.array([-30.0, 10.0, 4.0])
    extent = (np.array(image.GetSize()) - 1) * np.array(spacing)
    image.SetOrigin(tuple(centre - np.asarray(direction) @ (extent / 2)))
    xyz = physical_grid(image)
    hu = np.where(((xyz - centre) ** 2).sum(-1) < 5.0 ** 2, 100, -100).astype(np.int16)
    return make_image(hu, spacing, image.GetOrigin(), direction), centre


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("orientation", list(ROTATIONS))
def test_model_grid_is_axis_aligned_mirrored_and_keeps_positions(orientation, side):
    crop, centre = _blob_crop(ROTATIONS[orientation])
    grid = P.model_grid(crop, side, (0.5, 0.5, 1.0), multiple=8)
    assert all(n % 8 == 0 for n in grid.GetSize())
    expected_direction = np.diag([-1.0 if side == "left" else 1.0, 1.0, 1.0])
    np.testing.assert_allclose(np.array(grid.GetDirection()).reshape(3, 3), expected_direction)
    volume = P.image_to_grid(crop, grid, 48, 400)
    assert volume.dtype == np.float32 and volume.shape == grid.GetSize()[::-1]
    # the blob's centroid in the model grid is at the same physical point
    weights = np.clip(volume - volume.min(), 0, None) * (volume > 0.4)
    zyx = np.array(np.nonzero(weights)).T
    centroid_index = (zyx * weights[weights > 0][:, None]).sum(0) / weights[weights > 0].sum()
    point = grid.TransformContinuousIndexToPhysicalPoint(centroid_index[::-1].tolist())
    np.testing.assert_allclose(point, centre, atol=0.6)


def test_left_eye_is_mirrored_in_the_array():
    """A structure lateral of the left eye lands at small x in the array, as for the right eye."""
    image = make_image(np.zeros((10, 40, 40), np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    array = sitk.GetArrayFromImage(image)
    array[:, :, 35:] = 200  # large LPS x = patient left = lateral for the left eye
    image = make_image(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    left = P.image_to_grid(image, P.model_grid(image, "left", (1.0, 1.0, 1.0), context_mm=(0, 0, 0)), 48, 400)
    right = P.image_to_grid(image, P.model_grid(image, "right", (1.0, 1.0, 1.0), context_mm=(0, 0, 0)), 48, 400)
    assert left[:, :, :5].mean() > 0.85 and left[:, :, 5:].max() < 0.5
    assert right[:, :, 35:].mean() > 0.85


@pytest.mark.parametrize("orientation", list(ROTATIONS))
def test_scores_go_back_onto_the_crop_grid(orientation):
    crop, centre = _blob_crop(ROTATIONS[orientation])
    grid = P.model_grid(crop, "right", (0.5, 0.5, 1.0), multiple=8)
    volume = P.image_to_grid(crop, grid, 48, 400)
    scores = np.stack([1.0 - volume, volume])  # channel 1 = "blob"
    back = P.scores_to_crop(scores, grid, crop)
    assert back.shape == (2,) + crop.GetSize()[::-1] and back.dtype == np.float32
    original = sitk.GetArrayFromImage(crop) > 0
    recovered = back[1] > back[0]
    dice = 2 * (original & recovered).sum() / (original.sum() + recovered.sum())
    assert dice > 0.9


@pytest.mark.parametrize("side", ["right", "left"])
def test_shifted_grid_moves_by_voxel_fractions_along_its_own_axes(side):
    crop, _ = _blob_crop(ROTATIONS["oblique"])
    grid = P.model_grid(crop, side, (0.5, 0.5, 1.0), multiple=8)
    assert P.shifted_grid(grid, (0.0, 0.0, 0.0)) is grid
    for offset in P.grid_offsets(4)[1:]:
        moved = P.shifted_grid(grid, offset)
        assert moved.GetSize() == grid.GetSize() and moved.GetSpacing() == grid.GetSpacing()
        assert moved.GetDirection() == grid.GetDirection()
        # index i of the moved grid is the continuous index i + offset of the original one
        for index in ((0, 0, 0), (3, 5, 2)):
            expected = grid.TransformContinuousIndexToPhysicalPoint([i + o for i, o in zip(index, offset)])
            np.testing.assert_allclose(moved.TransformIndexToPhysicalPoint(index), expected, atol=1e-9)
    assert grid.GetOrigin() == P.model_grid(crop, side, (0.5, 0.5, 1.0), multiple=8).GetOrigin()  # untouched


def test_grid_offsets_start_with_the_grid_itself_and_reject_other_counts():
    for shifts in (1, 2, 4):
        offsets = P.grid_offsets(shifts)
        assert len(offsets) == shifts and offsets[0] == (0.0, 0.0, 0.0) and len(set(offsets)) == shifts
    with pytest.raises(OrbitSegError, match="grid shifts must be one of"):
        P.grid_offsets(3)
    with pytest.raises(OrbitSegError, match="grid shifts must be one of"):
        InferenceOptions(grid_shifts=3)  # refused where the options are made, before any study runs


def test_fixed_inplane_size_stretches_spacing():
    crop, _ = _blob_crop(np.eye(3))
    grid = P.model_grid(crop, "right", (0.5, 0.5, 1.0), multiple=4, inplane_size=(64, 64))
    assert grid.GetSize()[:2] == (64, 64) and grid.GetSize()[2] % 4 == 0


def test_labels_to_grid_nearest_neighbour():
    labels = np.zeros((10, 20, 20), np.uint8)
    labels[2:8, 5:15, 5:15] = 4
    image = make_image(labels, (0.5, 0.5, 1.0))
    out = P.labels_to_grid(image, P.model_grid(image, "right", (0.25, 0.25, 0.5)))
    assert set(np.unique(out)) == {0, 4}
    assert abs(int((out == 4).sum()) * 0.25 * 0.25 * 0.5 - int((labels == 4).sum()) * 0.25) < 0.25 * 0.25 * 0.5 * 2000


@pytest.mark.parametrize("orientation", sorted(ROTATIONS))
def test_label_fractions_are_partial_volumes_on_the_model_grid(orientation):
    """A box of label 4 on a 1 mm CT grid, seen from a 0.5 mm model grid: inside 1, outside 0, half way
    on the points between its boundary voxels and the background; the fractions keep the box's volume
    and agree with the nearest labels in every orientation."""
    labels = np.zeros((12, 20, 20), np.uint8)
    labels[3:9, 4:16, 4:16] = 4
    image = make_image(labels, (1.0, 1.0, 1.0), origin=(2.0, -3.0, 5.0), direction=ROTATIONS[orientation])
    grid = P.model_grid(image, "left", (0.5, 0.5, 0.5))
    fractions = P.label_fractions(image, grid, [4, 2])
    assert fractions.shape == (2,) + grid.GetSize()[::-1] and fractions.dtype == np.float32
    assert not fractions[1].any() and 0.0 <= fractions.min() and fractions.max() <= 1.0
    assert abs(float(fractions[0].sum()) * 0.5 ** 3 - 6 * 12 * 12) < 0.03 * 6 * 12 * 12
    nearest = P.labels_to_grid(image, grid) == 4
    decided = ~np.isclose(fractions[0], 0.5)  # half-way points are ties for the nearest label
    assert np.mean((fractions[0] > 0.5)[decided] == nearest[decided]) > 0.99
    if orientation != "oblique":  # axis-aligned: grid points fall on voxel centres and half way between
        assert np.isclose(fractions[0].max(), 1.0) and np.any(np.isclose(fractions[0], 0.5))
        assert np.all(np.isclose(fractions[0], 0.0) | np.isclose(fractions[0], 1.0) | np.isclose(fractions[0], 0.5)
                      | np.isclose(fractions[0], 0.25) | np.isclose(fractions[0], 0.125))


def test_label_fractions_outside_the_labels_are_zero():
    labels = make_image(np.full((4, 6, 6), 3, np.uint8), (1.0, 1.0, 1.0), origin=(100.0, 100.0, 100.0))
    grid = P.model_grid(make_image(np.zeros((4, 6, 6), np.uint8), (1.0, 1.0, 1.0)), "right", (0.5, 0.5, 0.5))
    fractions = P.label_fractions(labels, grid, [3])
    assert fractions.shape == (1,) + grid.GetSize()[::-1] and not fractions.any()
