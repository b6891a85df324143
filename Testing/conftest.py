"""Shared fixtures: synthetic CT volumes with known geometry, and a deterministic intensity model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from OrbitSegLib import models, structures
from OrbitSegLib.inference import InferenceOptions, Predictor, select_device
from OrbitSegLib.model_store import LoadedModel

ROTATIONS = {
    "lps": np.eye(3),
    "ras": np.diag([-1.0, -1.0, 1.0]),
    "flipped": np.diag([1.0, -1.0, -1.0]),
}


def oblique_direction(degrees: float = 12.0) -> np.ndarray:
    """A rotation about an oblique axis (a few degrees off every axis)."""
    axis = np.array([0.3, 0.5, 0.8])
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


ROTATIONS["oblique"] = oblique_direction()


def make_image(array_kji: np.ndarray, spacing=(0.5, 0.5, 1.0), origin=(0.0, 0.0, 0.0),
               direction: np.ndarray = np.eye(3)) -> sitk.Image:
    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(np.asarray(direction, dtype=float).flatten()))
    return image


def physical_grid(image: sitk.Image) -> np.ndarray:
    """LPS coordinates ``[k, j, i, 3]`` of every voxel centre (float32)."""
    size = image.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in size[::-1]), indexing="ij")
    direction = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    ijk = np.stack([i, j, k], axis=-1)
    return (ijk @ direction.T.astype(np.float32)) + np.array(image.GetOrigin(), dtype=np.float32)


def head_phantom(direction: np.ndarray = np.eye(3), spacing=(0.6, 0.6, 1.2), size=(150, 150, 56),
                 globe_centres=((-31.0, 2.0, 1.0), (31.0, 2.0, 1.0)), blobs=()) -> sitk.Image:
    """A crude head CT (int16 HU): air, a soft-tissue head, orbital fat cones and two globes.

    The grid is centred on the LPS origin with the given direction; ``blobs`` adds
    ``(centre_lps, radius_mm, hu)`` spheres. Good enough for globe detection and geometry tests.
    """
    spacing = np.array(spacing, dtype=float)
    extent = (np.array(size) - 1) * spacing
    origin = -np.asarray(direction) @ (extent / 2.0)
    image = make_image(np.zeros(size[::-1], np.int16), spacing, origin, direction)
    xyz = physical_grid(image)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    hu = np.full(x.shape, -1000, np.float32)
    hu[(x / 62) ** 2 + ((y - 36) / 50) ** 2 + (z / 55) ** 2 < 1] = 35
    for cx, cy, cz in globe_centres:
        hu[((x - cx) / 17) ** 2 + ((y - cy - 14) / 24) ** 2 + ((z - cz) / 16) ** 2 < 1] = -100
        hu[(x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 < 11.8 ** 2] = 10
    for centre, radius, value in blobs:
        c = np.asarray(centre, dtype=np.float32)
        hu[((xyz - c) ** 2).sum(-1) < radius ** 2] = value
    return make_image(hu.astype(np.int16), spacing, origin, direction)


@pytest.fixture(params=list(ROTATIONS))
def direction(request) -> np.ndarray:
    """Each of the LPS, RAS, flipped and oblique directions."""
    return ROTATIONS[request.param]


BLOBS = {"right": (-31.0, 2.0, 1.0), "left": (31.0, 2.0, 1.0)}  # bright balls inside each globe
BLOB_RADIUS = 4.5


class BrightVoxelNet(torch.nn.Module):
    """A fixed 1×1×1 "model": class 1 (globe) where the windowed intensity exceeds 0.7 (≈130 HU)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, structures.NUM_CLASSES, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.fill_(-10.0)
            self.conv.weight[0], self.conv.bias[0] = -40.0, 28.0
            self.conv.weight[1], self.conv.bias[1] = 40.0, -28.0

    def forward(self, x):
        return self.conv(x)


def bright_model(spacing=(0.5, 0.5, 1.0), options: InferenceOptions = InferenceOptions()) -> LoadedModel:
    card = models.make_card(models.create("sv-net", widths=[2, 2, 2, 2, 2]), window=(48, 400), spacing=spacing,
                            input_size=(32, 32, 16))
    predictor = Predictor(BrightVoxelNet(), "sv-net", "sigmoid", select_device("cpu"), options)
    return LoadedModel("bright", Path("bright"), card, predictor)


def blob_phantom(direction=np.eye(3), spacing=(0.6, 0.6, 1.2)):
    blobs = [(c, BLOB_RADIUS, 300) for c in BLOBS.values()]
    return head_phantom(direction, spacing=spacing, blobs=blobs)
