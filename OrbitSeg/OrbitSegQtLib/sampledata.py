"""The bundled phantom case (CT + reference segmentation) in Slicer's Sample Data module."""
from __future__ import annotations

import os

import slicer

SAMPLE_CATEGORY = "OrbitSeg"


def registerSampleData() -> None:
    """Register the sample case with the Sample Data module (generated from the phantom when not shipped)."""
    import SampleData
    from OrbitSegLib.sample import SAMPLE_NAME, bundled_sample_dirs, sample_files

    iconPath = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", "Icons",
                            "OrbitSeg.png")
    # Slicer 5.12 added titled categories; in earlier versions registering the source creates the category.
    if hasattr(SampleData.SampleDataLogic, "registerCustomSampleDataCategory"):
        SampleData.SampleDataLogic.registerCustomSampleDataCategory(SAMPLE_CATEGORY, title="OrbitSeg")
    files = next((sample_files(folder) for folder in bundled_sample_dirs()
                  if all(p.is_file() for p in sample_files(folder).values())), None)
    if files is not None:
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=SAMPLE_CATEGORY, sampleName=SAMPLE_NAME, thumbnailFileName=iconPath,
            uris=[files["image"].as_uri(), files["reference"].as_uri()],
            fileNames=[files["image"].name, files["reference"].name],
            nodeNames=[f"{SAMPLE_NAME} CT", f"{SAMPLE_NAME} reference"],
            loadFileTypes=["VolumeFile", "SegmentationFile"])
    else:  # not shipped (e.g. a bare checkout): generate it from the phantom when asked for
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=SAMPLE_CATEGORY, sampleName=SAMPLE_NAME, thumbnailFileName=iconPath,
            uris=[SAMPLE_NAME], fileNames=[SAMPLE_NAME], nodeNames=[SAMPLE_NAME],
            customDownloader=lambda source: loadSampleCase())


def loadSampleCase():
    """Load the sample CT and its reference segmentation; returns ``(volumeNode, segmentationNode)``."""
    from OrbitSegLib.sample import SAMPLE_NAME, sample_case

    with slicer.util.WaitCursor():
        files = sample_case()
        volume = slicer.util.loadVolume(str(files["image"]), {"name": f"{SAMPLE_NAME} CT"})
        reference = slicer.util.loadSegmentation(str(files["reference"]), {"name": f"{SAMPLE_NAME} reference"})
    return volume, reference
