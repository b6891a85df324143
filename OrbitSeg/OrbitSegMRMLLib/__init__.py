"""MRML-facing logic of the OrbitSeg Slicer modules.

This package connects Slicer's scene (volume, segmentation, table, markups and plot nodes) to the
pure-Python core :mod:`OrbitSegLib`. It imports ``slicer`` (MRML and VTK) but never ``qt``, ``ctk``
or the application object, so everything here also runs headless with the ``slicer-core`` wheel and is
tested under pytest (``Testing/test_slicer_logic.py``). The Qt side (``OrbitSegPanelLib``, ``OrbitSeg.py``
and ``OrbitSegTraining.py``) only reads the panels, starts background processes and calls into this package;
what the panels and the command line must agree on is :mod:`OrbitSegLib.protocol`.

Modules:
- :mod:`.geometry`: volume node <-> SimpleITK image with exact geometry; slice offsets <-> indices.
- :mod:`.segments`: OrbitSeg labelmap <-> segmentation node (names, colours, terminology, geometry).
- :mod:`.tablenodes`: result rows -> table nodes, and showing a table in the layout.
- :mod:`.roi`: per-eye VOI boxes <-> markups ROI nodes.
- :mod:`.trainingchart`: the training log as a table node and a live loss chart.
- :mod:`.trainingcase`: what the model proposed, which segments were corrected, and saving a corrected
  result as a training case in a site folder.
- :mod:`.logic`: :class:`~.logic.SegmentationLogic`, the facade the OrbitSeg module uses.
"""
