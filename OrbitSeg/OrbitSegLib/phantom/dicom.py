"""A CT as a scanner with a tilted gantry writes it: a DICOM series of tilted slices stacked along the table.

With the gantry tilted by ``tilt`` degrees about the patient's left-right axis, each slice plane is
tilted (ImageOrientationPatient's column vector is ``(0, cos t, -sin t)``) while the table moves the
slices along the patient's superior-inferior axis, so the stack is sheared: its slices are not
stacked along their own normal. Gaps between slices can be made uneven too. Tests and benchmarks use
this to check that :func:`dicomseries.read_dicom_series` puts every voxel back where it was.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

UID_ROOT = "1.2.826.0.1.3680043.10.1482."
"""OrbitSeg's UID prefix for the series it writes (a private test root)."""


def tilted_slice_positions(image: sitk.Image, slice_mm: float, steps: Sequence[float] | None = None,
                           reach_mm: float = 0.0) -> np.ndarray:
    """Table positions (mm along LPS +z, from the image's lowest physical z) of the slices covering ``image``
    and ``reach_mm`` above it (a tilted plane dips that far below its table position at its posterior
    end): every ``slice_mm``, or at the cumulative sums of ``steps``."""
    size = np.array(image.GetSize())
    corners = [image.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
               for corner in np.array(np.meshgrid(*[[0, n - 1] for n in size])).T.reshape(-1, 3)]
    z = np.array(corners)[:, 2]
    if steps is None:
        return np.arange(z.min(), z.max() + reach_mm + 1e-6, slice_mm)
    return z.min() + np.concatenate([[0.0], np.cumsum(steps)])


def write_tilted_series(image: sitk.Image, folder: str | os.PathLike, tilt_deg: float, slice_mm: float,
                        pixel_mm: float | None = None, steps: Sequence[float] | None = None,
                        fill_hu: float = -1024.0) -> Path:
    """Sample ``image`` (a CT in HU) as slices of a gantry tilted by ``tilt_deg`` and write them as a
    DICOM series (int16 HU, one file per slice) into ``folder`` (replaced). Slices lie every
    ``slice_mm`` along the table (or at the given uneven ``steps``, mm), with ``pixel_mm`` pixels
    (default: the image's in-plane spacing) covering the image's in-plane extent. Returns ``folder``."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tilt = np.radians(tilt_deg)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(tilt), -np.sin(tilt)])
    normal = np.cross(row, col)
    pixel = float(pixel_mm or image.GetSpacing()[0])
    size, spacing, origin = np.array(image.GetSize()), np.array(image.GetSpacing()), np.array(image.GetOrigin())
    extent = size * spacing
    columns, rows = int(np.ceil(extent[0] / pixel)), int(np.ceil(extent[1] / np.cos(tilt) / pixel))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = f"{UID_ROOT}{abs(hash((tilt_deg, slice_mm, pixel))) % 10 ** 8}"
    reach = rows * pixel * np.sin(tilt)  # so the stack covers the whole image, as a scan of the whole head does
    for k, z in enumerate(tilted_slice_positions(image, slice_mm, steps, reach)):
        position = np.array([origin[0], origin[1], z])
        plane = sitk.Resample(image, [columns, rows, 1], sitk.Transform(), sitk.sitkLinear, position.tolist(),
                              [pixel, pixel, 1.0], np.column_stack([row, col, normal]).ravel().tolist(), fill_hu,
                              sitk.sitkFloat32)
        values = np.rint(sitk.GetArrayFromImage(plane)).astype(np.int16)
        slice_image = sitk.GetImageFromArray(values)
        slice_image.SetSpacing((pixel, pixel, 1.0))
        tags = {"0008|0060": "CT", "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{series}.{k + 1}",
                "0020|000d": f"{series}.0", "0020|000e": f"{series}.1", "0020|0013": str(k + 1),
                "0020|0032": "\\".join(f"{v:.4f}" for v in position),
                "0020|0037": "\\".join(f"{v:.6f}" for v in np.concatenate([row, col])),
                "0028|0030": f"{pixel:.4f}\\{pixel:.4f}", "0018|0050": f"{slice_mm:.3f}",
                "0018|1120": f"{tilt_deg:.1f}", "0028|1052": "0", "0028|1053": "1"}
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k + 1:04d}.dcm"))
        writer.Execute(slice_image)
    return folder
