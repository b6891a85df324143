"""Reading and writing images with exact geometry (SimpleITK), and grid helpers.

Conventions used across OrbitSeg:
- An image is a :class:`SimpleITK.Image`; its geometry (size, spacing, origin, direction) is in LPS mm.
- ``sitk.GetArrayFromImage`` gives arrays indexed ``[k, j, i]`` (slice, row, column).
- Nothing here converts whole volumes to float64.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .dicomseries import read_dicom_series
from .errors import OrbitSegError

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(IMAGE_SUFFIXES + (".seg.nrrd",), key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read a 3D scalar CT from a NIfTI/NRRD/MHA file or a DICOM series folder.

    Geometry is kept exactly as stored; a DICOM series with gantry tilt or uneven slice steps is
    resampled onto a regular grid (:mod:`dicomseries`), and says so in its metadata. Raises :class:`OrbitSegError` naming the file and the problem
    for a missing or unreadable file, a 2D/4D image, a vector/RGB image or non-finite voxels.
    """
    path = Path(path)
    if not path.exists():
        raise OrbitSegError(f"{path}: file not found")
    try:
        image = read_dicom_series(path) if path.is_dir() else sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line for line in first if "Exception" not in line and line.strip()), "unreadable")
        raise OrbitSegError(f"{path}: cannot read image ({detail.strip()[:200]})") from None
    check_ct(image, path)
    return image


def check_ct(image: sitk.Image, source: str | os.PathLike = "image") -> None:
    """Refuse images OrbitSeg cannot segment, with a message naming ``source`` and the problem."""
    if image.GetDimension() != 3:
        raise OrbitSegError(f"{source}: a {image.GetDimension()}D image; OrbitSeg needs a 3D CT volume")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise OrbitSegError(
            f"{source}: a vector/RGB image with {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "OrbitSeg needs a scalar CT in Hounsfield units")
    if min(image.GetSize()) < 2:
        raise OrbitSegError(f"{source}: size {image.GetSize()} is a single slice (2D); OrbitSeg needs a 3D CT volume")
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        array = sitk.GetArrayViewFromImage(image)
        if not np.isfinite(array).all():
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise OrbitSegError(f"{source}: {bad} voxels are NaN or infinite")


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` (same suffix); rename it onto ``path`` on success.

    A crash or exception leaves no half-written file at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_suffix(path), dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide outputs from other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write an image atomically (format from the suffix); returns the path."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return Path(path)


def ijk_to_lps(image: sitk.Image) -> np.ndarray:
    """4×4 matrix mapping voxel index (i, j, k, 1) to LPS mm."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction * np.array(image.GetSpacing(), dtype=float)
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def axial_axis(image: sitk.Image) -> int:
    """Index axis (0=i, 1=j, 2=k) whose direction is closest to superior–inferior."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    return int(np.argmax(np.abs(direction[2, :])))


def voxel_volume_mm3(image: sitk.Image) -> float:
    """Volume of one voxel in mm³."""
    return float(np.prod(image.GetSpacing()))


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-4) -> bool:
    """True when both images share size, spacing, origin and direction (within ``tolerance`` mm/cosine)."""
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance))


def grid_description(image: sitk.Image) -> str:
    """One-line human description of a grid, for error messages."""
    return (f"size {image.GetSize()}, spacing {tuple(round(s, 4) for s in image.GetSpacing())} mm, "
            f"origin {tuple(round(o, 3) for o in image.GetOrigin())}")


def image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """An image from a ``[k, j, i]`` array with the reference's exact geometry."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image
