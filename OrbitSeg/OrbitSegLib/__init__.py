"""OrbitSeg core: orbital CT segmentation and volumetry without any Slicer dependency."""

__version__ = "0.1.0"
