"""OrbitSeg: segment the globe, the four rectus muscles and the optic nerve of both eyes on orbital CT.

The panel (``Resources/UI/OrbitSeg.ui``) is bound to a ``@parameterNodeWrapper`` parameter node.
Segmentation runs in a background process (Slicer's Python running ``OrbitSegLib.cli``), so the
application stays responsive, shows progress and can cancel. What both panels share (the process,
the panel base class, dependencies, the volume-of-interest and training-case sections, self-tests) is in
``OrbitSegQtLib``; everything that touches the scene is in ``OrbitSegMRMLLib`` (no Qt, tested
headless); everything that computes is in ``OrbitSegLib``.
"""
from __future__ import annotations

import enum
import shutil
import time
from pathlib import Path
from typing import Annotated

import slicer
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Minimum, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest

from OrbitSegQtLib import environment, selftests
from OrbitSegQtLib.modelsection import ModelSection
from OrbitSegQtLib.panel import Device, PanelWidget
from OrbitSegQtLib.sampledata import registerSampleData
from OrbitSegQtLib.trainingcasesection import TrainingCaseSection
from OrbitSegQtLib.voisection import VolumeOfInterestSection


class OrbitSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "OrbitSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["OrbitSeg contributors"]
        self.parent.helpText = """
Segments, for each eye (OD = right, OS = left), the globe, the superior, inferior, medial and lateral
rectus muscles and the optic nerve on orbital CT, and measures their volumes in cm3 (for example in
thyroid-associated ophthalmopathy). Models: SV-Net (3D) and SEQ-UNET (2D + ConvLSTM).
Choose the CT, press Auto-detect (or set the start and end slices), pick a model and press Segment.
Needs 3D Slicer 5.6 or newer. See the <a href="https://github.com/OrbitSeg/SlicerOrbitSeg#readme">documentation</a>.
"""
        self.parent.acknowledgementText = """
OrbitSeg implements SV-Net (arXiv 2007.02091, 2020) and SEQ-UNET (JoVE 2022, doi 10.3791/64500).
The bundled models are trained on a synthetic phantom; they are not clinically validated.
"""
        slicer.app.connect("startupCompleted()", registerSampleData)


class Side(enum.Enum):
    BOTH = "both"
    RIGHT = "right"
    LEFT = "left"

    def label(self):
        return {"BOTH": "Both eyes", "RIGHT": "Right eye (OD)", "LEFT": "Left eye (OS)"}[self.name]


@parameterNodeWrapper
class OrbitSegParameterNode:
    """The panel's state, saved with the scene.

    startSlice/endSlice: axial slice indices, -1 = automatic. modelName: name of the chosen model.
    averageShiftedGrids: segment on two model grids half a voxel apart and average (``--grid-shifts 2``).
    rightEyeBox/leftEyeBox: the per-eye VOI boxes (markups ROIs) the user can adjust.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    startSlice: Annotated[int, Minimum(-1)] = -1
    endSlice: Annotated[int, Minimum(-1)] = -1
    side: Side = Side.BOTH
    modelName: str = "sv-net"
    device: Device = Device.AUTO
    averageShiftedGrids: bool = False
    rightEyeBox: vtkMRMLMarkupsROINode
    leftEyeBox: vtkMRMLMarkupsROINode
    outputSegmentation: vtkMRMLSegmentationNode
    volumeTable: vtkMRMLTableNode
    show3D: bool = True
    referenceSegmentation: vtkMRMLSegmentationNode
    agreementTable: vtkMRMLTableNode


class OrbitSegWidget(VolumeOfInterestSection, ModelSection, TrainingCaseSection, PanelWidget):
    """The OrbitSeg panel."""

    uiName = "OrbitSeg.ui"

    def __init__(self, parent=None) -> None:
        PanelWidget.__init__(self, parent)
        self._job = None
        self._jobVolume = None
        self._startTime = 0.0

    def createLogic(self):
        return OrbitSegLogic()

    def setup(self) -> None:
        PanelWidget.setup(self)
        self.setupVolumeOfInterest()
        self.setupModelList()
        self.setupTrainingCases()
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.initializeParameterNode()
        self.refreshModels()

    def enter(self) -> None:
        PanelWidget.enter(self)
        self.refreshModels()

    def initializeParameterNode(self) -> None:
        PanelWidget.initializeParameterNode(self)
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and not firstVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolumeNode

    def onParameterNodeSet(self) -> None:
        self.observeEyeBoxes()

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        running = self.isRunning()
        volume = p.inputVolume
        self.ui.applyButton.enabled = running or (volume is not None and (self.selectedModel() is not None
                                                                          or self._dependenciesMissing))
        self.ui.applyButton.text = "Cancel" if running else "Segment"
        self.ui.applyButton.toolTip = ("Stop the running segmentation" if running else
                                       "Segment the orbits of the input CT" if volume else "Select an input CT first")
        for section in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton, self.ui.outputsCollapsibleButton):
            section.enabled = not running
        self.ui.compareButton.enabled = (not running and p.outputSegmentation is not None
                                         and p.referenceSegmentation is not None and volume is not None)
        if volume is not None and volume.GetImageData() is not None:
            from OrbitSegMRMLLib.geometry import axial_axis, axial_slice_count

            self.ui.sliceRangeLabel.text = (f"Axial slices 0–{axial_slice_count(volume) - 1} "
                                            f"(index axis {'ijk'[axial_axis(volume)]}); 'auto' = found by OrbitSeg.")
        else:
            self.ui.sliceRangeLabel.text = ""
        self.ui.resultsTableView.setMRMLTableNode(p.volumeTable)
        self.updateTrainingCases(running)
        self.updateDeviceNote()
        self.syncBoxesToSlices()

    def updateDeviceNote(self) -> None:
        p = self._parameterNode
        note = environment.deviceNote(p.device.value, self.updateDeviceNote) if p is not None else ""
        self.ui.deviceNoteLabel.text = note
        self.ui.deviceNoteLabel.styleSheet = "color: #c06000" if note.startswith("No CUDA GPU") else ""

    # --- running -----------------------------------------------------------------------------------

    def onApplyButton(self) -> None:
        if self.isRunning():
            self.cancelProcess()
            return
        if not self.ensureDependencies():
            return
        if not self._modelChoices:
            self.refreshModels()
        with slicer.util.tryWithErrorDisplay("OrbitSeg could not start.", waitCursor=True):
            self.startSegmentation()

    def startSegmentation(self) -> None:
        from OrbitSegLib.protocol import new_job_dir

        p = self._parameterNode
        choice = self.selectedModel()
        self.ui.qaLabel.text = ""
        if p.inputVolume is None:
            raise ValueError("Select an input CT.")
        if choice is None or choice.problem:
            raise ValueError("The selected model cannot be used: "
                             + (choice.problem if choice else f"model {p.modelName!r} is not installed"))
        sceneLogic = self.logic.sceneLogic()
        voi = sceneLogic.voi_from_rois(p.inputVolume, self.eyeBoxes()) if self.eyeBoxes() else None
        start = p.startSlice if p.startSlice >= 0 else None
        end = p.endSlice if p.endSlice >= 0 else None
        self.ui.logTextEdit.clear()
        gridShifts = 2 if p.averageShiftedGrids else 1
        self.log(f"Input: {p.inputVolume.GetName()}; model {choice.name} ({choice.path}); device {p.device.value}"
                 + ("; averaging two shifted grids" if gridShifts > 1 else ""))
        self._job = sceneLogic.prepare_job(p.inputVolume, new_job_dir(Path(slicer.app.temporaryPath) / "OrbitSeg"),
                                           str(choice.path), side=p.side.value, device=p.device.value, voi=voi,
                                           start=start, end=end, grid_shifts=gridShifts)
        self._jobVolume = p.inputVolume
        self._startTime = time.time()
        self.startProcess(self._job.arguments(), self.onFinished)

    def onFinished(self, exitCode: int, cancelled: bool, errorMessage: str) -> None:
        job, volume = self._job, self._jobVolume
        self.processEnded()
        try:
            if cancelled:
                self.setStatus("Cancelled.")
            elif exitCode != 0:
                self.setStatus(f"Failed: {errorMessage}", error=True)
                slicer.util.errorDisplay(f"OrbitSeg failed:\n\n{errorMessage}", windowTitle="OrbitSeg",
                                         detailedText=self.ui.logTextEdit.plainText)
            else:
                with slicer.util.tryWithErrorDisplay("OrbitSeg could not load its results.", waitCursor=True):
                    self.loadResults(job, volume)
        finally:
            if job is not None and exitCode == 0 and not cancelled:
                shutil.rmtree(job.ct_path.parent, ignore_errors=True)
            elif job is not None:
                self.log(f"Inputs and outputs of this run are kept in {job.ct_path.parent}")
            self.updateGUIFromParameterNode()

    def loadResults(self, job, volume) -> None:
        p = self._parameterNode
        if p.outputSegmentation is None:
            p.outputSegmentation = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", slicer.mrmlScene.GenerateUniqueName(f"{volume.GetName()} OrbitSeg"))
        if p.volumeTable is None:
            p.volumeTable = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLTableNode", slicer.mrmlScene.GenerateUniqueName(f"{volume.GetName()} OrbitSeg volumes"))
        reference = p.referenceSegmentation
        if reference is not None and p.agreementTable is None:
            p.agreementTable = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLTableNode", slicer.mrmlScene.GenerateUniqueName(f"{volume.GetName()} OrbitSeg agreement"))
        sceneLogic = self.logic.sceneLogic()
        shown = sceneLogic.load_job_results(job, volume, p.outputSegmentation, p.volumeTable,
                                            reference_node=reference, comparison_table_node=p.agreementTable,
                                            closed_surface=p.show3D)
        sceneLogic.show_table(p.volumeTable)
        self.ui.resultsTableView.setMRMLTableNode(p.volumeTable)
        from OrbitSegLib.protocol import cpu_fallback

        seconds = time.time() - self._startTime
        self.ui.deviceNoteLabel.text = f"Last run: {shown.device_note}"
        self.ui.deviceNoteLabel.styleSheet = "color: #c06000" if cpu_fallback(job.device, shown.device) else ""
        total = sum(r["volume_cm3"] for r in shown.rows)
        message = f"Done in {seconds:.0f} s with {shown.model_name}: {len(shown.rows)} segments, {total:.2f} cm³ in total."
        if shown.comparison_rows:
            message += " Agreement with the reference is in the agreement table."
        if shown.ignored_reference_segments:
            message += f" Reference segments not compared: {', '.join(shown.ignored_reference_segments)}."
        self.setStatus(message)
        self.log(message)
        flags = shown.qa_lines()  # failures, doubt and input problems, in orange with their reasons
        self.ui.qaLabel.text = "Check before reading the volumes:\n" + "\n".join(flags) if flags else ""
        for line in flags:
            self.log(f"QA {line}")

    def onCompare(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("OrbitSeg could not compare with the reference.", waitCursor=True):
            if p.agreementTable is None:
                p.agreementTable = slicer.mrmlScene.AddNewNodeByClass(
                    "vtkMRMLTableNode", slicer.mrmlScene.GenerateUniqueName("OrbitSeg agreement"))
            sceneLogic = self.logic.sceneLogic()
            rows, ignored = sceneLogic.compare_nodes(p.outputSegmentation, p.referenceSegmentation, p.inputVolume,
                                                     p.agreementTable)
            sceneLogic.show_table(p.agreementTable)
            self.setStatus(f"Compared {len(rows)} structures with {p.referenceSegmentation.GetName()}"
                           + (f"; not compared: {', '.join(ignored)}" if ignored else "") + ".")


class OrbitSegLogic(ScriptedLoadableModuleLogic):
    """The parameter node and the scene logic (``OrbitSegMRMLLib.logic.SegmentationLogic``).

    Usable without the panel, e.g. from the Python console::

        logic = slicer.util.getModuleLogic("OrbitSeg")  # or OrbitSeg.OrbitSegLogic()
        shown = logic.sceneLogic().segment(volumeNode, "sv-net", segNode, tableNode, device="cpu")
    """

    def getParameterNode(self):
        return OrbitSegParameterNode(super().getParameterNode())

    def sceneLogic(self):
        from OrbitSegMRMLLib.logic import SegmentationLogic

        return SegmentationLogic(slicer.mrmlScene, slicer.app.applicationLogic())


class OrbitSegTest(ScriptedLoadableModuleTest):
    """The sample case through the background process, and the panel's volume-of-interest controls
    (``OrbitSegQtLib.selftests``)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SampleCaseWithBundledModel()
        self.setUp()
        self.test_PanelVolumeOfInterest()

    def test_SampleCaseWithBundledModel(self):
        selftests.sampleCaseWithBundledModel(self, OrbitSegLogic())

    def test_PanelVolumeOfInterest(self):
        selftests.panelVolumeOfInterest(self)
