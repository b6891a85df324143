"""Volume nodes <-> SimpleITK images with exact geometry, and axial slice offsets <-> slice indices.

Slicer stores a volume's geometry as an IJK-to-RAS matrix; OrbitSeg's core works in LPS. The two
differ by a sign flip of the first two world axes (``RAS_TO_LPS``), so converting is exact for any
orientation: axis-aligned, flipped, or oblique. Both index their voxel arrays ``[k, j, i]``.

A volume under a parent transform keeps its own (local) grid: the core works on that grid and the
results are placed under the same parent transform. Points and planes given in world coordinates
(e.g. a slice view's position) are brought into the volume's local frame first; only linear parent
transforms are supported for that.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import slicer.util
import vtk

from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.imageio import ijk_to_lps

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Maps RAS to LPS coordinates (and back: the matrix is its own inverse)."""


def node_name(node) -> str:
    """A node's name for messages (``"(none)"`` for ``None``)."""
    return node.GetName() if node is not None else "(none)"


def ijk_to_ras(volume_node) -> np.ndarray:
    """The volume's 4×4 IJK-to-RAS matrix (its local frame, without parent transforms)."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def volume_to_image(volume_node) -> sitk.Image:
    """A SimpleITK copy of a scalar volume node's voxels with its exact geometry (LPS).

    The voxel type is kept (no conversion to float). Raises :class:`OrbitSegError` for a missing
    node, a node without voxels, or a vector (e.g. RGB) volume.
    """
    if volume_node is None:
        raise OrbitSegError("no input volume selected")
    if volume_node.GetImageData() is None:
        raise OrbitSegError(f"volume {node_name(volume_node)} has no voxels")
    array = slicer.util.arrayFromVolume(volume_node)
    if array.ndim != 3:
        raise OrbitSegError(f"volume {node_name(volume_node)} has {array.shape[-1]} components per voxel "
                            "(vector/RGB); OrbitSeg needs a scalar CT in Hounsfield units")
    image = sitk.GetImageFromArray(array)
    set_image_geometry(image, ijk_to_ras(volume_node))
    return image


def same_grid(image: sitk.Image, volume_node, tolerance: float = 1e-4) -> bool:
    """True when ``image`` lies exactly on the volume node's voxel grid (size, spacing, origin, direction)."""
    dims = tuple(int(d) for d in volume_node.GetImageData().GetDimensions())
    matrix = RAS_TO_LPS @ ijk_to_ras(volume_node)
    return image.GetSize() == dims and np.allclose(ijk_to_lps(image), matrix, atol=tolerance)


def set_image_geometry(image: sitk.Image, matrix_ijk_to_ras: np.ndarray) -> None:
    """Give ``image`` the grid of an IJK-to-RAS matrix (spacing, direction and origin in LPS)."""
    matrix_lps = RAS_TO_LPS @ np.asarray(matrix_ijk_to_ras, float)
    spacing = np.linalg.norm(matrix_lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((matrix_lps[:3, :3] / spacing).flatten().tolist())
    image.SetOrigin(matrix_lps[:3, 3].tolist())


def image_to_volume_node(image: sitk.Image, volume_node):
    """Put a SimpleITK image's voxels and exact geometry into ``volume_node``; returns the node."""
    volume_node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(RAS_TO_LPS @ ijk_to_lps(image)))
    slicer.util.updateVolumeFromArray(volume_node, sitk.GetArrayViewFromImage(image))
    return volume_node


def axial_axis(volume_node) -> int:
    """Index axis (0=i, 1=j, 2=k) closest to superior–inferior (same rule as ``imageio.axial_axis``)."""
    matrix = ijk_to_ras(volume_node)[:3, :3]
    directions = matrix / np.linalg.norm(matrix, axis=0)
    return int(np.argmax(np.abs(directions[2, :])))


def world_to_local(node) -> np.ndarray:
    """4×4 matrix from world RAS to the node's local RAS (identity without a parent transform)."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise OrbitSegError(f"{node_name(node)} is under the non-linear transform {node_name(parent)}; "
                            "harden the transform first")
    matrix = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformFromWorld(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def slice_position_at_plane(volume_node, plane_point_ras, plane_normal_ras) -> float:
    """Continuous axial index where a plane (world RAS) crosses the volume's centre line.

    The centre line runs along the volume's axial index axis through the middle of the other two
    axes, so the answer is exact for slice views aligned with the volume and for plain axial views.
    Raises :class:`OrbitSegError` for a plane tilted more than 60° from the volume's slices (a
    sagittal or coronal view).
    """
    to_local = world_to_local(volume_node)
    point = (to_local @ np.append(np.asarray(plane_point_ras, float), 1.0))[:3]
    normal = np.linalg.inv(to_local[:3, :3]).T @ np.asarray(plane_normal_ras, float)
    axis = axial_axis(volume_node)
    matrix = ijk_to_ras(volume_node)
    centre = (np.array(volume_node.GetImageData().GetDimensions(), float) - 1.0) / 2.0
    centre[axis] = 0.0
    start = (matrix @ np.append(centre, 1.0))[:3]
    step = matrix[:3, axis]
    along = float(normal @ step)
    if abs(along) < 0.5 * np.linalg.norm(normal) * np.linalg.norm(step):
        raise OrbitSegError("the slice view is not axial (tilted more than 60 degrees from the volume's slices); "
                            "use the axial (red) view")
    return float(normal @ (point - start)) / along


def slice_index_at_plane(volume_node, plane_point_ras, plane_normal_ras) -> int:
    """Nearest axial slice index of a plane (see :func:`slice_position_at_plane`), not clipped."""
    return int(np.floor(slice_position_at_plane(volume_node, plane_point_ras, plane_normal_ras) + 0.5))


def slice_index_from_slice_to_ras(volume_node, slice_to_ras) -> int:
    """Axial slice index shown by a slice view, from its SliceToRAS matrix (4×4 array or vtkMatrix4x4)."""
    if isinstance(slice_to_ras, vtk.vtkMatrix4x4):
        slice_to_ras = slicer.util.arrayFromVTKMatrix(slice_to_ras)
    matrix = np.asarray(slice_to_ras, float)
    return slice_index_at_plane(volume_node, matrix[:3, 3], matrix[:3, 2])


def slice_index_from_offset(volume_node, offset_mm: float) -> int:
    """Axial slice index at an axial slice offset (the S coordinate in mm of an axial view)."""
    return slice_index_at_plane(volume_node, (0.0, 0.0, float(offset_mm)), (0.0, 0.0, 1.0))


def slice_offset_from_index(volume_node, index: int) -> float:
    """Axial slice offset (world S in mm) of a slice index, on the volume's centre line."""
    axis = axial_axis(volume_node)
    centre = (np.array(volume_node.GetImageData().GetDimensions(), float) - 1.0) / 2.0
    centre[axis] = float(index)
    local = ijk_to_ras(volume_node) @ np.append(centre, 1.0)
    world = np.linalg.inv(world_to_local(volume_node)) @ local
    return float(world[2])


def axial_slice_count(volume_node) -> int:
    """Number of slices along the volume's axial index axis."""
    return int(volume_node.GetImageData().GetDimensions()[axial_axis(volume_node)])
