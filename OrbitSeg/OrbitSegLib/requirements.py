"""Which of OrbitSeg's Python requirements are missing in Slicer's Python, and how to install them safely.

Slicer ships numpy and its own SimpleITK; PyTorch comes from the SlicerPyTorch extension (which picks
a build matching the GPU). The rest (MONAI, SciPy, scikit-image, slicerio, ...) is listed in
``OrbitSeg/Resources/requirements.txt`` and installed with Slicer's pip after the user agrees. The
install pins the numpy and torch already present, so pip can never swap them (the NumPy 1/2 and
CPU-only-torch breakages users report with other extensions).
"""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

PINNED = ("numpy", "torch")
"""Packages that must stay at the version Slicer (or SlicerPyTorch) installed."""


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
    """pip install arguments for ``requirements`` that keep numpy and torch at their installed versions."""
    pins = [f"{name}=={version}" for name in PINNED if (version := installed_version(name))]
    return list(requirements) + pins
