"""The panels' environment: the Slicer version, OrbitSeg's Python packages, and the compute device.

The device is asked once per Slicer session in a background process (``orbitseg device``), never in
Slicer's own process: importing torch there and asking it about CUDA would create a CUDA context in
the application, holding GPU memory for as long as Slicer runs.
"""
from __future__ import annotations

import os

import slicer
from OrbitSegLib import protocol, requirements

from .process import BackgroundProcess


def slicerVersionProblem() -> str:
    """Why this Slicer is too old for OrbitSeg, or ``""``."""
    return requirements.slicer_version_problem(slicer.app.majorVersion, slicer.app.minorVersion)


def requirementsPath() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", "requirements.txt")


def torchInstalled() -> bool:
    """Whether PyTorch is installed at OrbitSeg's minimum version or newer (from the package metadata,
    so without importing torch; an older torch counts as missing and is upgraded by the PyTorch extension)."""
    return not requirements.unmet([f"torch>={requirements.MINIMUM_TORCH}"])


def missingDependencies() -> list[str]:
    """Requirements not (or not suitably) installed; ``torch`` first when it is missing."""
    missing = requirements.unmet(requirements.read_requirements(requirementsPath()))
    return (["torch"] if not torchInstalled() else []) + missing


def installDependencies() -> bool:
    """Make sure OrbitSeg's Python packages are there, installing them after asking the user.

    Returns False when the user declines. Raises on a Slicer older than OrbitSeg supports, and while
    Slicer runs tests (self-tests never install packages).
    """
    problem = slicerVersionProblem()
    if problem:
        raise RuntimeError(problem)
    missing = missingDependencies()
    if not missing:
        return True
    if slicer.app.testingEnabled():
        raise RuntimeError(f"missing Python packages {', '.join(missing)}; self-tests never install packages")
    if not slicer.util.confirmOkCancelDisplay(
            "OrbitSeg needs Python packages that are not installed yet. They are downloaded and installed into "
            "Slicer's Python now (this needs a network connection and may take several minutes).",
            "OrbitSeg: install Python packages", detailedText="\n".join(missing)):
        return False
    with slicer.util.WaitCursor():
        if "torch" in missing:
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                raise RuntimeError("PyTorch is missing and the PyTorch extension is not installed: install "
                                   "'PyTorch' from the Extensions Manager, restart Slicer and try again") from None
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=f">={requirements.MINIMUM_TORCH}")
            if torch is None:
                raise RuntimeError("PyTorch could not be installed (see the PyTorch Utils module)")
        others = [r for r in missing if r != "torch"]
        if others:
            slicer.util.pip_install(requirements.install_arguments(others))
    still = missingDependencies()
    if still:
        raise RuntimeError(f"still missing after the installation: {', '.join(still)}. Restart Slicer and try again.")
    return True


_device = {"note": None, "probe": None, "listeners": []}
"""This session's answer of ``orbitseg device`` (``note``), the process asking it, and who waits for it."""


def deviceNote(device: str, onKnown=None) -> str:
    """A line for the panel about ``device`` (``auto``, ``cuda`` or ``cpu``).

    The first call starts the background question (when torch is installed) and returns a "checking"
    line; ``onKnown()`` is called when the answer is in, and later calls return it.
    """
    if device == "cpu":
        return "Runs on the CPU (slower than a GPU)."
    note = _device["note"]
    if note is None:
        if onKnown is not None and onKnown not in _device["listeners"]:
            _device["listeners"].append(onKnown)
        if _device["probe"] is None and torchInstalled():
            _device["probe"] = BackgroundProcess(lambda fraction, message: None, lambda line: None, _deviceKnown)
            _device["probe"].start(protocol.DeviceQuery().arguments())
        return "Checking for a CUDA GPU in a background process…" if _device["probe"] is not None else ""
    if device == "cuda" and not note.startswith("GPU"):
        return "No CUDA GPU available: choose Auto or CPU."
    return note


def _deviceKnown(exitCode: int, cancelled: bool, errorMessage: str) -> None:
    probe = _device["probe"]
    lines = [line.strip() for line in probe.stdout.lines if line.strip()]
    if exitCode == 0 and lines:
        _device["note"] = lines[-1]
    else:
        _device["note"] = f"Could not check for a GPU: {errorMessage or 'cancelled'}"
    listeners, _device["listeners"] = _device["listeners"], []
    for listener in listeners:
        listener()
