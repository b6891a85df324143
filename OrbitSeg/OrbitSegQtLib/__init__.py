"""The Qt side shared by the OrbitSeg and OrbitSeg Training module panels.

- :mod:`.panel`: :class:`~.panel.PanelWidget`, the panels' base class (parameter-node lifecycle,
  status, log, one background process with progress and Cancel), and the shared ``Device`` choice;
- :mod:`.process`: :class:`~.process.BackgroundProcess`, Slicer's Python running ``orbitseg`` in a
  ``qt.QProcess`` (the protocol is :mod:`OrbitSegLib.protocol`), and finding ``PythonSlicer``;
- :mod:`.processtree`: stopping a process with all its children, with or without psutil (no Qt);
- :mod:`.environment`: the minimum Slicer version, installing OrbitSeg's Python packages, and the
  compute device (asked in a background process);
- :mod:`.voisection`: the OrbitSeg panel's volume-of-interest controls (eye boxes, start/end slices);
- :mod:`.modelsection`: the OrbitSeg panel's model list and card (a scene's missing model kept as "not found");
- :mod:`.trainingcasesection`: the OrbitSeg panel's Save as training case (into a site folder);
- :mod:`.trainingrun`: the OrbitSeg Training panel's runs (train, adapt), live log and model registration;
- :mod:`.adaptsection`: the OrbitSeg Training panel's Adapt section (a model adapted to a site folder's cases);
- :mod:`.sampledata`: the sample case in Slicer's Sample Data module;
- :mod:`.selftests`: the modules' self-tests (run from Slicer's Reload & Test).

The scene logic without Qt is :mod:`OrbitSegMRMLLib`; the computation is :mod:`OrbitSegLib`.
"""

PACKAGES = ("OrbitSegLib", "OrbitSegMRMLLib", "OrbitSegQtLib")
"""OrbitSeg's libraries, which a module's Reload reads afresh."""


def unloadLibraries() -> list[str]:
    """Forget every loaded module of OrbitSeg's libraries, so that the next import (the reloaded
    module's) reads the files as they are now; returns the names forgotten."""
    import sys

    names = [name for name in sys.modules if name.split(".")[0] in PACKAGES]
    for name in names:
        del sys.modules[name]
    return names
