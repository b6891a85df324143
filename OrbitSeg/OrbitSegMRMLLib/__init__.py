"""MRML-facing logic of the OrbitSeg Slicer modules.

This package connects Slicer's scene (volume, segmentation, table, markups and plot nodes) to the
pure-Python core :mod:`OrbitSegLib`. It imports ``slicer`` (MRML and VTK) but never ``qt``, ``ctk``
or the application object, so everything here also runs headless with the ``slicer-core`` wheel and is
tested under pytest (``Testing/test_slicer_logic.py``). The Qt widgets in ``OrbitSeg.py`` and
``OrbitSegTraining.py`` only read the panel, start background processes and call into this package.

Modules:
- :mod:`.geometry`: volume node <-> SimpleITK image with exact geometry; slice offsets <-> indices.
- :mod:`.segments`: OrbitSeg labelmap <-> segmentation node (names, colours, terminology, geometry).
- :mod:`.tablenodes`: result rows -> table nodes, and showing a table in the layout.
- :mod:`.roi`: per-eye VOI boxes <-> markups ROI nodes.
- :mod:`.jobs`: command lines of the background ``OrbitSegLib.cli`` process and its progress lines (no Slicer).
- :mod:`.training`: training data lists, the training log as table and plot nodes, model registration.
- :mod:`.dependencies`: which Python requirements are missing (no Slicer).
- :mod:`.logic`: :class:`~.logic.SegmentationLogic`, the facade the OrbitSeg module uses.
"""
