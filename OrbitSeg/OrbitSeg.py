"""OrbitSeg: segment the globe, the four rectus muscles and the optic nerve of both eyes on orbital CT.

The panel (``Resources/UI/OrbitSeg.ui``) is bound to a ``@parameterNodeWrapper`` parameter node.
Segmentation runs in a background process (Slicer's Python running ``OrbitSegLib.cli``), so the
application stays responsive, shows progress and can cancel; everything that touches the scene is
in ``OrbitSegMRMLLib`` (no Qt, tested headless), everything that computes is in ``OrbitSegLib``.
"""
from __future__ import annotations

import enum
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import qt
import vtk

import slicer
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Minimum, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MINIMUM_TORCH = "2.1"
SAMPLE_CATEGORY = "OrbitSeg"


#
# OrbitSeg
#


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
See the <a href="https://github.com/OrbitSeg/SlicerOrbitSeg#readme">documentation</a>.
"""
        self.parent.acknowledgementText = """
OrbitSeg implements SV-Net (arXiv 2007.02091, 2020) and SEQ-UNET (JoVE 2022, doi 10.3791/64500).
The bundled models are trained on a synthetic phantom; they are not clinically validated.
"""
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Sample data
#


def registerSampleData():
    """Register the bundled phantom case (CT + reference segmentation) with the Sample Data module."""
    import SampleData
    from OrbitSegLib.sample import SAMPLE_NAME, bundled_sample_dirs, sample_files

    iconPath = os.path.join(os.path.dirname(__file__), "Resources", "Icons", "OrbitSeg.png")
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


#
# Parameter node
#


class Side(enum.Enum):
    BOTH = "both"
    RIGHT = "right"
    LEFT = "left"

    def label(self):
        return {"BOTH": "Both eyes", "RIGHT": "Right eye (OD)", "LEFT": "Left eye (OS)"}[self.name]


class Device(enum.Enum):
    AUTO = "auto"
    GPU = "cuda"
    CPU = "cpu"

    def label(self):
        return {"AUTO": "Auto (GPU if available)", "GPU": "GPU (CUDA)", "CPU": "CPU"}[self.name]


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


#
# Background process
#


def pythonExecutable() -> str:
    """Slicer's Python launcher (``PythonSlicer``), which runs with Slicer's packages and environment."""
    return shutil.which("PythonSlicer") or sys.executable


class OrbitSegProcess:
    """Runs ``orbitseg <arguments>`` in Slicer's Python as a ``qt.QProcess``.

    ``onProgress(fraction, message)`` gets the JSON progress lines, ``onLog(line)`` every other
    output line, ``onFinished(exitCode, cancelled, errorMessage)`` the end (``errorMessage`` is empty
    on success). :meth:`cancel` kills the process and its children (``PythonSlicer`` is a launcher
    that starts the real interpreter as a child).
    """

    def __init__(self, onProgress, onLog, onFinished):
        from OrbitSegLib import protocol

        self.jobs = protocol
        self.onProgress, self.onLog, self.onFinished = onProgress, onLog, onFinished
        self.process = None
        self.cancelled = False
        self.done = False
        self.exitCode = None
        self._stderr = protocol.LineSplitter()
        self._stdout = protocol.LineSplitter()

    def start(self, arguments: list[str]) -> None:
        command = self.jobs.cli_command(pythonExecutable(), arguments)
        self.onLog("$ " + " ".join(command[:2] + ["<bootstrap>"] + command[3:]))
        self.process = qt.QProcess()
        environment = qt.QProcessEnvironment.systemEnvironment()
        environment.insert("PYTHONUNBUFFERED", "1")
        self.process.setProcessEnvironment(environment)
        self.process.connect("readyReadStandardError()", self._readStandardError)
        self.process.connect("readyReadStandardOutput()", self._readStandardOutput)
        self.process.connect("finished(int,QProcess::ExitStatus)", self._onFinished)
        self.process.connect("errorOccurred(QProcess::ProcessError)", self._onError)
        self.process.setProgram(command[0])
        self.process.setArguments(command[1:])
        self.process.start()

    def isRunning(self) -> bool:
        return self.process is not None and not self.done

    def cancel(self) -> None:
        if not self.isRunning():
            return
        self.cancelled = True
        self.onLog("Cancelling: stopping the OrbitSeg process")
        try:
            import psutil

            parent = psutil.Process(int(self.process.processId()))
            for child in parent.children(recursive=True):
                child.kill()
        except Exception as exc:  # psutil missing or the process already gone
            logging.debug(f"OrbitSeg: could not stop child processes: {exc}")
        self.process.kill()

    def waitForFinished(self, timeoutSeconds: float = 3600.0) -> bool:
        """Block (processing events) until the process ended; used by self-tests and scripts."""
        deadline = time.time() + timeoutSeconds
        while self.isRunning() and time.time() < deadline:
            self.process.waitForFinished(200)
            slicer.app.processEvents()
        return not self.isRunning()

    @staticmethod
    def _text(data) -> str:
        raw = data.data()
        return raw if isinstance(raw, str) else bytes(raw).decode("utf-8", errors="replace")

    def _readStandardError(self):
        for line in self._stderr.feed(self._text(self.process.readAllStandardError())):
            self._handleLine(line)

    def _readStandardOutput(self):
        for line in self._stdout.feed(self._text(self.process.readAllStandardOutput())):
            self.onLog(line)

    def _handleLine(self, line: str) -> None:
        progress = self.jobs.parse_progress(line)
        if progress is not None:
            self.onProgress(progress.fraction, progress.message)
        elif line.strip():
            self.onLog(line)

    def _onError(self, error):
        if error == qt.QProcess.FailedToStart and not self.done:
            self._finish(-1, f"could not start {pythonExecutable()} ({self.process.errorString()})")

    def _onFinished(self, exitCode, exitStatus):
        self._readStandardError()
        self._readStandardOutput()
        for line in self._stderr.flush():
            self._handleLine(line)
        for line in self._stdout.flush():
            self.onLog(line)
        crashed = exitStatus == qt.QProcess.CrashExit
        code = exitCode if not crashed else -1
        message = "" if code == 0 and not self.cancelled else self.jobs.error_message(self._stderr.lines, code)
        self._finish(code, message)

    def _finish(self, code: int, message: str) -> None:
        if self.done:
            return
        self.done, self.exitCode = True, code
        self.onFinished(code, self.cancelled, "" if self.cancelled else message)


#
# OrbitSegWidget
#


class OrbitSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The OrbitSeg panel."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._process = None
        self._job = None
        self._jobVolume = None
        self._startTime = 0.0
        self._updatingBoxes = False
        self._modelChoices = []
        self._dependenciesMissing = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/OrbitSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = OrbitSegLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.autoDetectButton.connect("clicked(bool)", self.onAutoDetect)
        self.ui.resetVoiButton.connect("clicked(bool)", self.onResetVoi)
        self.ui.startFromSliceButton.connect("clicked(bool)", lambda: self.onSliceFromView("startSlice"))
        self.ui.endFromSliceButton.connect("clicked(bool)", lambda: self.onSliceFromView("endSlice"))
        self.ui.refreshModelsButton.connect("clicked(bool)", self.refreshModels)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputVolumeChanged)

        self.initializeParameterNode()
        self.refreshModels()

    def cleanup(self) -> None:
        if self._process is not None:
            self._process.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.refreshModels()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        if self._process is not None:
            self._process.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and not firstVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
            self._observeEyeBoxes()
            self.updateGUIFromParameterNode()

    # --- panel state ---------------------------------------------------------------------------------

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        running = self._process is not None and self._process.isRunning()
        volume = p.inputVolume
        self.ui.applyButton.enabled = running or (volume is not None and (bool(self._modelChoices)
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
        self.updateDeviceNote()
        self._syncBoxesToSlices()

    def eyeBoxes(self) -> dict:
        p = self._parameterNode
        return {side: roi for side, roi in (("right", p.rightEyeBox), ("left", p.leftEyeBox)) if roi is not None}

    def _syncBoxesToSlices(self) -> None:
        """Give the eye boxes the panel's start/end slices (when both are set)."""
        p = self._parameterNode
        boxes = self.eyeBoxes()
        if self._updatingBoxes or not boxes or p.inputVolume is None or p.startSlice < 0 or p.endSlice < p.startSlice:
            return
        from OrbitSegMRMLLib import roi
        from OrbitSegMRMLLib.geometry import axial_axis

        self._updatingBoxes = True
        try:
            axis = axial_axis(p.inputVolume)
            for box in boxes.values():
                lo, hi = roi.roi_to_index_box(p.inputVolume, box)
                if (lo[axis], hi[axis]) != (p.startSlice, p.endSlice):
                    roi.set_roi_slices(p.inputVolume, box, p.startSlice, p.endSlice)
        except Exception as exc:  # a box the user broke (e.g. moved off the volume): keep it as it is
            logging.debug(f"OrbitSeg: could not update the eye boxes: {exc}")
        finally:
            self._updatingBoxes = False

    def _observeEyeBoxes(self) -> None:
        for box in self.eyeBoxes().values():
            if not self.hasObserver(box, vtk.vtkCommand.ModifiedEvent, self.onEyeBoxModified):
                self.addObserver(box, vtk.vtkCommand.ModifiedEvent, self.onEyeBoxModified)

    def onEyeBoxModified(self, caller=None, event=None) -> None:
        """The user moved or resized a box: the start/end slices follow the boxes' axial extent."""
        p = self._parameterNode
        if self._updatingBoxes or p is None or p.inputVolume is None or not self.eyeBoxes():
            return
        from OrbitSegMRMLLib import roi

        self._updatingBoxes = True
        try:
            voi = roi.voi_from_rois(p.inputVolume, self.eyeBoxes())
            p.startSlice, p.endSlice = max(0, voi.start_slice), max(0, voi.end_slice)
        except Exception as exc:
            logging.debug(f"OrbitSeg: could not read the eye boxes: {exc}")
        finally:
            self._updatingBoxes = False

    def onInputVolumeChanged(self, node) -> None:
        """A new CT: boxes made for another volume no longer apply."""
        p = self._parameterNode
        if p is None:
            return
        boxes = self.eyeBoxes()
        if boxes and any(box.GetAttribute("OrbitSeg.VolumeID") != (node.GetID() if node else None)
                         for box in boxes.values()):
            self._removeEyeBoxes()
            p.startSlice, p.endSlice = -1, -1

    def _removeEyeBoxes(self) -> None:
        p = self._parameterNode
        for name in ("rightEyeBox", "leftEyeBox"):
            box = getattr(p, name)
            if box is not None:
                self.removeObserver(box, vtk.vtkCommand.ModifiedEvent, self.onEyeBoxModified)
                setattr(p, name, None)
                slicer.mrmlScene.RemoveNode(box)

    # --- models and device -----------------------------------------------------------------------------

    def refreshModels(self) -> None:
        """Fill the model list (bundled and user models) with their cards as tooltips."""
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        self._modelChoices = []
        try:
            self._dependenciesMissing = bool(self.logic.missingDependencies())
            if self._dependenciesMissing:
                combo.addItem("(install the Python packages first: press Segment)")
                self.ui.modelCardBrowser.setHtml("")
                return
            from OrbitSegLib import model_cards as modelinfo

            self._modelChoices = [c for c in modelinfo.model_choices()]
            for index, choice in enumerate(self._modelChoices):
                combo.addItem(f"{choice.name} ({choice.origin})" if choice.origin != "bundled" else choice.name)
                combo.setItemData(index, modelinfo.card_tooltip(choice), qt.Qt.ToolTipRole)
            if not self._modelChoices:
                combo.addItem("(no models found)")
            wanted = self._parameterNode.modelName if self._parameterNode else ""
            names = [c.name for c in self._modelChoices]
            combo.currentIndex = names.index(wanted) if wanted in names else 0
        except Exception as exc:
            logging.error(f"OrbitSeg: could not list the models: {exc}")
            combo.addItem("(models could not be listed: see the log)")
        finally:
            combo.blockSignals(wasBlocked)
            self.onModelChanged(combo.currentIndex)

    def selectedModel(self):
        index = self.ui.modelComboBox.currentIndex
        return self._modelChoices[index] if 0 <= index < len(self._modelChoices) else None

    def onModelChanged(self, index) -> None:
        choice = self.selectedModel()
        if choice is None:
            self.ui.modelCardBrowser.setHtml("")
        else:
            from OrbitSegLib import model_cards as modelinfo

            self.ui.modelCardBrowser.setHtml(modelinfo.card_html(choice))
            self.ui.modelComboBox.toolTip = modelinfo.card_tooltip(choice)
            if self._parameterNode and self._parameterNode.modelName != choice.name:
                self._parameterNode.modelName = choice.name
        self.updateGUIFromParameterNode()

    def updateDeviceNote(self) -> None:
        p = self._parameterNode
        note = self.logic.deviceNote(p.device.value) if p is not None else ""
        self.ui.deviceNoteLabel.text = note
        self.ui.deviceNoteLabel.styleSheet = "color: #c06000" if note.startswith("No CUDA GPU") else ""

    # --- volume of interest ----------------------------------------------------------------------------

    def onAutoDetect(self) -> None:
        p = self._parameterNode
        if p.inputVolume is None:
            slicer.util.errorDisplay("Select an input CT first.")
            return
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("OrbitSeg could not find the orbits.", waitCursor=True):
            sceneLogic = self.logic.sceneLogic()
            voi = sceneLogic.suggest_voi(p.inputVolume)
            self._updatingBoxes = True
            try:
                boxes = sceneLogic.show_voi(p.inputVolume, voi, {"right": p.rightEyeBox, "left": p.leftEyeBox})
                for box in boxes.values():
                    box.SetAttribute("OrbitSeg.VolumeID", p.inputVolume.GetID())
                p.rightEyeBox, p.leftEyeBox = boxes.get("right"), boxes.get("left")
                self._observeEyeBoxes()
                p.startSlice, p.endSlice = voi.start_slice, voi.end_slice
            finally:
                self._updatingBoxes = False
            slicer.util.setSliceViewerLayers(background=p.inputVolume)
            self.setStatus(f"Orbits found: slices {voi.start_slice}–{voi.end_slice}. Adjust the eye boxes in the "
                           "views if needed, then press Segment.")

    def onResetVoi(self) -> None:
        self._removeEyeBoxes()
        self._parameterNode.startSlice, self._parameterNode.endSlice = -1, -1
        self.setStatus("The volume of interest will be found automatically.")

    def onSliceFromView(self, field: str) -> None:
        p = self._parameterNode
        if p.inputVolume is None:
            slicer.util.errorDisplay("Select an input CT first.")
            return
        sliceNode = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")
        if sliceNode is None:
            slicer.util.errorDisplay("There is no red slice view in this layout.")
            return
        with slicer.util.tryWithErrorDisplay("Could not read the red slice view."):
            from OrbitSegMRMLLib.geometry import axial_slice_count, slice_index_from_slice_to_ras

            index = slice_index_from_slice_to_ras(p.inputVolume, sliceNode.GetSliceToRAS())
            last = axial_slice_count(p.inputVolume) - 1
            if not 0 <= index <= last:
                raise ValueError(f"The red view shows slice {index}, outside the CT (slices 0–{last}).")
            setattr(p, field, index)

    # --- running ---------------------------------------------------------------------------------------

    def ensureDependencies(self) -> bool:
        try:
            return self.logic.installDependencies()
        except Exception as exc:
            slicer.util.errorDisplay(f"OrbitSeg needs Python packages that could not be installed:\n\n{exc}",
                                     windowTitle="OrbitSeg")
            return False

    def onApplyButton(self) -> None:
        if self._process is not None and self._process.isRunning():
            self._process.cancel()
            return
        if not self.ensureDependencies():
            return
        if not self._modelChoices:
            self.refreshModels()
        with slicer.util.tryWithErrorDisplay("OrbitSeg could not start.", waitCursor=True):
            self.startSegmentation()

    def startSegmentation(self) -> None:
        p = self._parameterNode
        choice = self.selectedModel()
        if p.inputVolume is None:
            raise ValueError("Select an input CT.")
        if choice is None or choice.problem:
            raise ValueError(f"The selected model cannot be used: {choice.problem if choice else 'no model found'}")
        sceneLogic = self.logic.sceneLogic()
        voi = sceneLogic.voi_from_rois(p.inputVolume, self.eyeBoxes()) if self.eyeBoxes() else None
        start = p.startSlice if p.startSlice >= 0 else None
        end = p.endSlice if p.endSlice >= 0 else None
        jobDir = Path(slicer.app.temporaryPath) / "OrbitSeg" / time.strftime("%Y%m%d-%H%M%S")
        self.ui.logTextEdit.clear()
        gridShifts = 2 if p.averageShiftedGrids else 1
        self.log(f"Input: {p.inputVolume.GetName()}; model {choice.name} ({choice.path}); device {p.device.value}"
                 + ("; averaging two shifted grids" if gridShifts > 1 else ""))
        self._job = sceneLogic.prepare_job(p.inputVolume, jobDir, str(choice.path), side=p.side.value,
                                           device=p.device.value, voi=voi, start=start, end=end,
                                           grid_shifts=gridShifts)
        self._jobVolume = p.inputVolume
        self._startTime = time.time()
        self._process = OrbitSegProcess(self.onProgress, self.log, self.onFinished)
        self.ui.progressBar.value = 0
        self.ui.progressBar.visible = True
        self.setStatus("Starting…")
        self._process.start(self._job.arguments())
        self.updateGUIFromParameterNode()

    def onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.setStatus(message)

    def onFinished(self, exitCode: int, cancelled: bool, errorMessage: str) -> None:
        job, volume = self._job, self._jobVolume
        self.ui.progressBar.visible = False
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
            self._process = None
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

    def setStatus(self, text: str, error: bool = False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.styleSheet = "color: #c00000" if error else ""
        slicer.util.showStatusMessage(text, 5000)

    def log(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)
        logging.info(f"OrbitSeg: {line}")


#
# OrbitSegLogic
#


class OrbitSegLogic(ScriptedLoadableModuleLogic):
    """Dependencies, the device note and the scene logic (``OrbitSegMRMLLib.logic.SegmentationLogic``).

    Usable without the panel, e.g. from the Python console::

        logic = slicer.util.getModuleLogic("OrbitSeg")  # or OrbitSeg.OrbitSegLogic()
        shown = logic.sceneLogic().segment(volumeNode, "sv-net", segNode, tableNode, device="cpu")
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._cudaNote = None

    def getParameterNode(self):
        return OrbitSegParameterNode(super().getParameterNode())

    def sceneLogic(self):
        from OrbitSegMRMLLib.logic import SegmentationLogic

        return SegmentationLogic(slicer.mrmlScene, slicer.app.applicationLogic())

    # --- dependencies ---

    @staticmethod
    def requirementsPath() -> str:
        return os.path.join(os.path.dirname(__file__), "Resources", "requirements.txt")

    @staticmethod
    def torchInstalled() -> bool:
        """Whether PyTorch is installed at OrbitSeg's minimum version or newer (from the package metadata,
        so without importing torch; an older torch counts as missing and is upgraded by the PyTorch extension)."""
        from OrbitSegLib.requirements import unmet

        return not unmet([f"torch>={MINIMUM_TORCH}"])

    def missingDependencies(self) -> list[str]:
        """Requirements not (or not suitably) installed; ``torch`` first when it is missing."""
        from OrbitSegLib.requirements import read_requirements, unmet

        missing = unmet(read_requirements(self.requirementsPath()))
        return (["torch"] if not self.torchInstalled() else []) + missing

    def installDependencies(self) -> bool:
        """Make sure OrbitSeg's Python packages are there, installing them after asking the user.

        Returns False when the user declines. Never installs anything while Slicer runs tests
        (self-tests): missing packages are an error then.
        """
        missing = self.missingDependencies()
        if not missing:
            return True
        if slicer.app.testingEnabled():
            raise RuntimeError(f"missing Python packages {', '.join(missing)}; self-tests never install packages")
        if not slicer.util.confirmOkCancelDisplay(
                "OrbitSeg needs Python packages that are not installed yet. They are downloaded and installed into "
                "Slicer's Python now (this needs a network connection and may take several minutes).",
                "OrbitSeg: install Python packages", detailedText="\n".join(missing)):
            return False
        from OrbitSegLib.requirements import install_arguments

        with slicer.util.WaitCursor():
            if "torch" in missing:
                try:
                    import PyTorchUtils
                except ModuleNotFoundError:
                    raise RuntimeError("PyTorch is missing and the PyTorch extension is not installed: install "
                                       "'PyTorch' from the Extensions Manager, restart Slicer and try again") from None
                torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                    askConfirmation=False, torchVersionRequirement=f">={MINIMUM_TORCH}")
                if torch is None:
                    raise RuntimeError("PyTorch could not be installed (see the PyTorch Utils module)")
            others = [r for r in missing if r != "torch"]
            if others:
                slicer.util.pip_install(install_arguments(others))
        still = self.missingDependencies()
        if still:
            raise RuntimeError(f"still missing after the installation: {', '.join(still)}. Restart Slicer and try again.")
        return True

    def deviceNote(self, device: str) -> str:
        """A line for the panel about the chosen device (checked once, in this process)."""
        if device == "cpu":
            return "Runs on the CPU (slower than a GPU)."
        if self._cudaNote is None:
            if not self.torchInstalled():
                return ""
            import torch

            self._cudaNote = (f"GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else
                              f"No CUDA GPU available (torch {torch.__version__}"
                              f"{' built without CUDA' if not torch.version.cuda else ''}): runs on the CPU, which is slower.")
        if device == "cuda" and self._cudaNote.startswith("No CUDA GPU"):
            return "No CUDA GPU available: choose Auto or CPU."
        return self._cudaNote


#
# OrbitSegTest
#


class OrbitSegTest(ScriptedLoadableModuleTest):
    """Loads the sample case, runs the bundled model on the CPU in the background process, checks the results."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SampleCaseWithBundledModel()
        self.setUp()
        self.test_PanelVolumeOfInterest()

    def test_SampleCaseWithBundledModel(self):
        import SampleData
        from OrbitSegLib import structures
        from OrbitSegLib.model_store import available_models, bundled_model_dirs
        from OrbitSegLib.sample import SAMPLE_NAME
        from OrbitSegMRMLLib import segments, tablenodes

        logic = OrbitSegLogic()
        self.assertEqual(logic.missingDependencies(), [], "OrbitSeg's Python packages are not installed")
        registerSampleData()
        self.assertIsNotNone(SampleData.SampleDataLogic().sourceForSampleName(SAMPLE_NAME))
        self.delayDisplay("Loading the sample case")
        volume, reference = loadSampleCase()

        bundled = {p.resolve() for p in bundled_model_dirs()}
        models = {name: path for name, path in available_models().items() if path.resolve().parent in bundled}
        self.assertIn("sv-net", models, "the bundled SV-Net model is missing")
        sceneLogic = logic.sceneLogic()
        job = sceneLogic.prepare_job(volume, Path(slicer.app.temporaryPath) / "OrbitSegTest", str(models["sv-net"]),
                                     device="cpu")
        messages = []
        process = OrbitSegProcess(lambda f, m: messages.append((f, m)), logging.info, lambda *args: None)
        self.delayDisplay("Segmenting with the bundled SV-Net on the CPU (background process)")
        process.start(job.arguments())
        self.assertTrue(process.waitForFinished(1800), "the OrbitSeg process did not finish")
        self.assertEqual(process.exitCode, 0, "\n".join(process._stderr.lines[-20:]))
        self.assertEqual(messages[-1][0], 1.0)

        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "OrbitSeg")
        table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "OrbitSeg volumes")
        agreement = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "OrbitSeg agreement")
        shown = sceneLogic.load_job_results(job, volume, segmentation, table, reference_node=reference,
                                            comparison_table_node=agreement)
        self.assertTrue(shown.device_note.startswith("CPU"))
        seg = segmentation.GetSegmentation()
        self.assertEqual(seg.GetNumberOfSegments(), 12)
        self.assertEqual(segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()), volume)
        for _, side, key in structures.label_table():
            segment = seg.GetSegment(segments.segment_id(side, key))
            self.assertEqual(segment.GetName(), structures.segment_name(side, key))
            tag = vtk.reference("")
            self.assertTrue(segment.GetTag(segment.GetTerminologyEntryTagName(), tag))
            self.assertEqual(str(tag), structures.terminology_string(side, key))
        rows = tablenodes.table_node_rows(table)
        self.assertEqual(len(rows), 12)
        for row in rows:
            self.assertGreater(row["volume_cm3"], 0.05, f"{row['segment']} is (nearly) empty")
        for row in (r for r in rows if r["structure"] == "globe"):
            self.assertTrue(4.0 < row["volume_cm3"] < 12.0, f"{row['segment']}: {row['volume_cm3']:.2f} cm3")
        for row in tablenodes.table_node_rows(agreement):
            if row["structure"] == "globe":
                self.assertGreater(row["dice"], 0.8, f"{row['segment']} Dice {row['dice']:.3f}")
        self.delayDisplay("Sample case segmented and measured")

    def test_PanelVolumeOfInterest(self):
        from OrbitSegLib.sample import SAMPLE_NAME
        from OrbitSegMRMLLib import geometry

        volume, _ = loadSampleCase()
        widget = slicer.modules.orbitseg.widgetRepresentation().self()
        slicer.util.selectModule("OrbitSeg")
        parameters = widget.logic.getParameterNode()
        parameters.inputVolume = volume
        widget.onAutoDetect()
        self.assertIsNotNone(parameters.rightEyeBox)
        self.assertIsNotNone(parameters.leftEyeBox)
        self.assertGreaterEqual(parameters.startSlice, 0)
        self.assertGreater(parameters.endSlice, parameters.startSlice)
        # the red view's slice becomes the start slice
        sliceNode = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")
        sliceNode.SetOrientationToAxial()
        wanted = parameters.startSlice + 2
        sliceNode.SetSliceOffset(geometry.slice_offset_from_index(volume, wanted))
        widget.onSliceFromView("startSlice")
        self.assertEqual(parameters.startSlice, wanted)
        widget.onResetVoi()
        self.assertIsNone(parameters.rightEyeBox)
        self.assertEqual((parameters.startSlice, parameters.endSlice), (-1, -1))
        self.delayDisplay(f"Volume of interest controls work on {SAMPLE_NAME}")
