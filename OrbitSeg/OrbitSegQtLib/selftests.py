"""The OrbitSeg modules' self-tests (Slicer's Reload & Test, ``slicer_add_python_unittest``).

Each function takes the running ``ScriptedLoadableModuleTest`` (for its assertions and messages) and
the module's logic; the module files' test classes call them.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import vtk

import slicer

from . import environment
from .process import BackgroundProcess
from .sampledata import loadSampleCase, registerSampleData


def sampleCaseWithBundledModel(test, logic) -> None:
    """Loads the sample case, runs the bundled model on the CPU in the background process, checks the results."""
    import SampleData
    from OrbitSegLib import structures
    from OrbitSegLib.model_store import available_models, bundled_model_dirs
    from OrbitSegLib.sample import SAMPLE_NAME
    from OrbitSegMRMLLib import segments, tablenodes

    test.assertEqual(environment.missingDependencies(), [], "OrbitSeg's Python packages are not installed")
    registerSampleData()
    test.assertIsNotNone(SampleData.SampleDataLogic().sourceForSampleName(SAMPLE_NAME))
    test.delayDisplay("Loading the sample case")
    volume, reference = loadSampleCase()

    bundled = {p.resolve() for p in bundled_model_dirs()}
    models = {name: path for name, path in available_models().items() if path.resolve().parent in bundled}
    test.assertIn("sv-net", models, "the bundled SV-Net model is missing")
    sceneLogic = logic.sceneLogic()
    job = sceneLogic.prepare_job(volume, Path(slicer.app.temporaryPath) / "OrbitSegTest", str(models["sv-net"]),
                                 device="cpu")
    messages = []
    process = BackgroundProcess(lambda f, m: messages.append((f, m)), logging.info, lambda *args: None)
    test.delayDisplay("Segmenting with the bundled SV-Net on the CPU (background process)")
    process.start(job.arguments())
    test.assertTrue(process.waitForFinished(1800), "the OrbitSeg process did not finish")
    test.assertEqual(process.exitCode, 0, "\n".join(process.stderr.lines[-20:]))
    test.assertEqual(messages[-1][0], 1.0)

    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "OrbitSeg")
    table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "OrbitSeg volumes")
    agreement = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "OrbitSeg agreement")
    shown = sceneLogic.load_job_results(job, volume, segmentation, table, reference_node=reference,
                                        comparison_table_node=agreement)
    test.assertTrue(shown.device_note.startswith("CPU"))
    seg = segmentation.GetSegmentation()
    test.assertEqual(seg.GetNumberOfSegments(), 12)
    test.assertEqual(segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()), volume)
    for _, side, key in structures.label_table():
        segment = seg.GetSegment(segments.segment_id(side, key))
        test.assertEqual(segment.GetName(), structures.segment_name(side, key))
        tag = vtk.reference("")
        test.assertTrue(segment.GetTag(segment.GetTerminologyEntryTagName(), tag))
        test.assertEqual(str(tag), structures.terminology_string(side, key))
    rows = tablenodes.table_node_rows(table)
    test.assertEqual(len(rows), 12)
    for row in rows:
        test.assertGreater(row["volume_cm3"], 0.05, f"{row['segment']} is (nearly) empty")
    for row in (r for r in rows if r["structure"] == "globe"):
        test.assertTrue(4.0 < row["volume_cm3"] < 12.0, f"{row['segment']}: {row['volume_cm3']:.2f} cm3")
    for row in tablenodes.table_node_rows(agreement):
        if row["structure"] == "globe":
            test.assertGreater(row["dice"], 0.8, f"{row['segment']} Dice {row['dice']:.3f}")
    test.delayDisplay("Sample case segmented and measured")


def panelVolumeOfInterest(test) -> None:
    """Auto-detect, the slice from the red view and Reset on the OrbitSeg panel."""
    from OrbitSegLib.sample import SAMPLE_NAME
    from OrbitSegMRMLLib import geometry

    volume, _ = loadSampleCase()
    widget = slicer.modules.orbitseg.widgetRepresentation().self()
    slicer.util.selectModule("OrbitSeg")
    parameters = widget.logic.getParameterNode()
    parameters.inputVolume = volume
    widget.onAutoDetect()
    test.assertIsNotNone(parameters.rightEyeBox)
    test.assertIsNotNone(parameters.leftEyeBox)
    test.assertGreaterEqual(parameters.startSlice, 0)
    test.assertGreater(parameters.endSlice, parameters.startSlice)
    # the red view's slice becomes the start slice
    sliceNode = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")
    sliceNode.SetOrientationToAxial()
    wanted = parameters.startSlice + 2
    sliceNode.SetSliceOffset(geometry.slice_offset_from_index(volume, wanted))
    widget.onSliceFromView("startSlice")
    test.assertEqual(parameters.startSlice, wanted)
    widget.onResetVoi()
    test.assertIsNone(parameters.rightEyeBox)
    test.assertEqual((parameters.startSlice, parameters.endSlice), (-1, -1))
    test.delayDisplay(f"Volume of interest controls work on {SAMPLE_NAME}")


def trainOnPhantomAndRegister(test, logic, configure) -> None:
    """Trains a tiny SV-Net on 3 phantom cases in the background process and registers it with OrbitSeg.

    ``configure(parameterNode, workFolder)`` sets the training panel's parameters for that run.
    """
    from OrbitSegLib.model_store import available_models, register_model
    from OrbitSegMRMLLib import tablenodes, trainingchart

    test.assertEqual(environment.missingDependencies(), [], "OrbitSeg's Python packages are not installed")
    work = Path(tempfile.mkdtemp(prefix="OrbitSegTrainingTest-"))
    previous = os.environ.get("ORBITSEG_USER_MODELS")
    os.environ["ORBITSEG_USER_MODELS"] = str(work / "models")
    try:
        p = logic.getParameterNode()
        configure(p, work)
        job = logic.job(p)
        table, chart = trainingchart.log_nodes(slicer.mrmlScene)
        process = BackgroundProcess(lambda f, m: None, logging.info, lambda *args: None)
        test.delayDisplay("Training a tiny SV-Net on 3 phantom cases (1 epoch, CPU)")
        started = time.time()
        process.start(job.arguments())
        test.assertTrue(process.waitForFinished(3600), "training did not finish")
        test.assertEqual(process.exitCode, 0, "\n".join(process.stderr.lines[-20:]))
        test.assertEqual(len(list(job.cache_dir.glob("*.npz"))), 3)  # kept for a resumed run
        test.assertGreaterEqual(trainingchart.refresh_log_table(job.log_path, table), 1)
        rows = tablenodes.table_node_rows(table)
        test.assertEqual([r["fold"] for r in rows], [0])  # one fold, one epoch
        test.assertEqual(chart.GetNumberOfPlotSeriesNodes(), 3)
        target = register_model(job.model_path, p.modelName)
        test.assertEqual(available_models()[p.modelName], target)
        test.delayDisplay(f"Trained and registered in {time.time() - started:.0f} s")
    finally:
        if previous is None:
            os.environ.pop("ORBITSEG_USER_MODELS", None)
        else:
            os.environ["ORBITSEG_USER_MODELS"] = previous
