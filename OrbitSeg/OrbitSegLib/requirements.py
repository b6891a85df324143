"""What OrbitSeg needs from 3D Slicer and its Python, and how to install what is missing safely.

Slicer ships Python with numpy, SciPy and its own SimpleITK; PyTorch comes from the SlicerPyTorch
extension (which picks a build matching the GPU). The rest (MONAI, scikit-image, slicerio, ...) is
listed in ``OrbitSeg/Resources/requirements.txt`` and installed with Slicer's pip after the user
agrees. ``requirements.txt`` asks for what the code needs, not the newest versions, so that Slicer's
own packages satisfy it; the install pins numpy, SciPy and torch at the versions present (unless one
of them is itself too old and listed to install), so pip can never swap them for others (the NumPy 1/2
and CPU-only-torch breakages users report with other extensions). No Slicer imports: tested headless.
"""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

PINNED = ("numpy", "scipy", "torch")
"""Packages that stay at the version Slicer (or SlicerPyTorch) installed unless OrbitSeg needs a newer one."""
MINIMUM_TORCH = "2.1"
MINIMUM_SLICER = (5, 6)
"""Oldest Slicer the panels support: the parameter-node wrapper with enum and path widgets, PyTorchUtils'
``installTorch(torchVersionRequirement=...)``, and Python 3.9 with SciPy >= 1.9."""


def slicer_version_problem(major: int, minor: int) -> str:
    """Why this Slicer is too old for OrbitSeg (one sentence), or ``""`` when it is recent enough."""
    if (major, minor) >= MINIMUM_SLICER:
        return ""
    need = ".".join(str(v) for v in MINIMUM_SLICER)
    return (f"OrbitSeg needs 3D Slicer {need} or newer; this is Slicer {major}.{minor}. Install a current "
            "Slicer from download.slicer.org and OrbitSeg from its Extensions Manager.")


def read_requirements(path: str | os.PathLike) -> list[str]:
    """Requirement lines of a requirements file (comments and blank lines dropped)."""
    lines = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            Requirement(line)  # InvalidRequirement for a malformed line
            lines.append(line)
    return lines


def installed_version(name: str) -> str | None:
    """Installed version of a distribution, or ``None``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def unmet(requirements: list[str]) -> list[str]:
    """The requirements that are not installed, or installed at a version outside their specifier."""
    missing = []
    for line in requirements:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            missing.append(line)
            continue
        version = installed_version(requirement.name)
        if version is None or (requirement.specifier and not requirement.specifier.contains(version, prereleases=True)):
            missing.append(line)
    return missing


def install_arguments(requirements: list[str]) -> list[str]:
    """pip install arguments for ``requirements`` that keep numpy, SciPy and torch at their installed
    versions (one that ``requirements`` itself asks to install is left free)."""
    wanted = {Requirement(line).name.lower() for line in requirements}
    pins = [f"{name}=={version}" for name in PINNED if name not in wanted and (version := installed_version(name))]
    return list(requirements) + pins
