"""OrbitSeg Training: train SV-Net or SEQ-UNET on your own studies (or the phantom) from Slicer.

Training runs ``orbitseg train`` in a background process (the same ``OrbitSegProcess`` as the
OrbitSeg module): progress and a live loss plot while it runs, cancel at any time (every checkpoint
is written atomically, so the last good one is kept), and the finished model is copied into the user
models folder, where the OrbitSeg module's model list finds it. The command line and the log format
are in ``OrbitSegLib.protocol``.
"""
from __future__ import annotations

import enum
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated

import qt
import vtk

import slicer
from slicer import vtkMRMLPlotChartNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Decimals, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from OrbitSeg import Device, OrbitSegLogic, OrbitSegProcess

PAPER_DEFAULTS = {"sv-net": (4, 1e-4), "seq-unet": (32, 5e-5)}
"""Batch size and learning rate of each paper."""


class OrbitSegTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "OrbitSeg Training"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["OrbitSeg"]
        self.parent.contributors = ["OrbitSeg contributors"]
        self.parent.helpText = """
Train SV-Net or SEQ-UNET for OrbitSeg on a study list (CT + reference segmentation), a folder of case
folders, or synthetic phantom cases. Training runs in the background with a live loss plot; Cancel keeps
the last good checkpoint, and training again into the same output folder resumes. The finished model
appears in the OrbitSeg module's model list. A reference may leave structures out: each eye trains on
the structures its reference has, and the others keep what the starting model gives them.
"""
        self.parent.acknowledgementText = "Part of the OrbitSeg extension."


class DataSource(enum.Enum):
    STUDIES = "studies"
    FOLDER = "folder"
    PHANTOM = "phantom"

    def label(self):
        return {"STUDIES": "Study list (CSV)", "FOLDER": "Folder of case folders", "PHANTOM": "Phantom (synthetic)"}[self.name]


class Architecture(enum.Enum):
    SV_NET = "sv-net"
    SEQ_UNET = "seq-unet"

    def label(self):
        return {"SV_NET": "SV-Net (3D)", "SEQ_UNET": "SEQ-UNET (2D + ConvLSTM)"}[self.name]


@parameterNodeWrapper
class OrbitSegTrainingParameterNode:
    """The training panel's state. Paths equal to ``Path(".")`` mean "not chosen"."""

    dataSource: DataSource = DataSource.PHANTOM
    studyList: Path
    dataFolder: Path
    phantomCases: Annotated[int, WithinRange(2, 100000)] = 40
    architecture: Architecture = Architecture.SV_NET
    modelName: str = "my-sv-net"
    initialModel: str = ""
    folds: Annotated[int, WithinRange(1, 20)] = 5
    ensembleFolds: bool = False
    epochs: Annotated[int, WithinRange(1, 100000)] = 100
    batchSize: Annotated[int, WithinRange(1, 1024)] = 4
    learningRate: Annotated[float, WithinRange(1e-6, 1.0), Decimals(6)] = 1e-4
    device: Device = Device.AUTO
    outputFolder: Path = Path.home() / "OrbitSeg" / "training"
    restart: bool = False
    softTargets: bool = False
    logTable: vtkMRMLTableNode
    lossChart: vtkMRMLPlotChartNode


def chosen(path: Path) -> bool:
    return str(path) not in ("", ".")


class OrbitSegTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._process = None
        self._job = None
        self._candidate = None
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/OrbitSegTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = OrbitSegTrainingLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.paperDefaultsButton.connect("clicked(bool)", self.onPaperDefaults)
        self.ui.registerButton.connect("clicked(bool)", self.onRegister)
        self._timer = qt.QTimer()
        self._timer.setInterval(2000)
        self._timer.connect("timeout()", self.refreshLog)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._process is not None:
            self._process.cancel()
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

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

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
            self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        running = self._process is not None and self._process.isRunning()
        source = p.dataSource
        self.ui.studyListPathLineEdit.enabled = source == DataSource.STUDIES
        self.ui.dataFolderPathLineEdit.enabled = source == DataSource.FOLDER
        self.ui.phantomCasesSpinBox.enabled = source == DataSource.PHANTOM
        self.ui.dataCollapsibleButton.enabled = not running
        self.ui.trainingCollapsibleButton.enabled = not running
        self.ui.applyButton.enabled = True
        self.ui.applyButton.text = "Cancel" if running else "Train"
        self.ui.registerButton.enabled = not running and self._candidate is not None
        self.ui.logTableView.setMRMLTableNode(p.logTable)

    def onPaperDefaults(self) -> None:
        p = self._parameterNode
        p.batchSize, p.learningRate = PAPER_DEFAULTS[p.architecture.value]

    # --- running ---

    def onApplyButton(self) -> None:
        if self._process is not None and self._process.isRunning():
            self._process.cancel()
            return
        try:
            if not OrbitSegLogic().installDependencies():
                return
        except Exception as exc:
            slicer.util.errorDisplay(f"OrbitSeg needs Python packages that could not be installed:\n\n{exc}")
            return
        with slicer.util.tryWithErrorDisplay("Training could not start.", waitCursor=True):
            self.startTraining()

    def startTraining(self) -> None:
        p = self._parameterNode
        self._job = self.logic.job(p)
        self._job.out_dir.mkdir(parents=True, exist_ok=True)
        self._candidate = None
        self.ui.logTextEdit.clear()
        p.logTable, p.lossChart = self.logic.logNodes(p.logTable, p.lossChart)
        slicer.modules.plots.logic().ShowChartInLayout(p.lossChart)
        self._process = OrbitSegProcess(self.onProgress, self.log, self.onFinished)
        self.ui.progressBar.value = 0
        self.ui.progressBar.visible = True
        self.setStatus("Starting…")
        self._process.start(self._job.arguments())
        self._timer.start()
        self.updateGUIFromParameterNode()

    def refreshLog(self) -> None:
        p = self._parameterNode
        if self._job is not None and p is not None and p.logTable is not None:
            self.logic.refreshLog(self._job, p.logTable)

    def onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.setStatus(message)

    def onFinished(self, exitCode: int, cancelled: bool, errorMessage: str) -> None:
        from OrbitSegLib import protocol

        self._timer.stop()
        self.refreshLog()
        self.ui.progressBar.visible = False
        self._process = None
        job = self._job
        try:
            if exitCode == 0 and not cancelled and job.model_path.is_file():
                self._candidate = job.model_path
                with slicer.util.tryWithErrorDisplay("The trained model could not be added to OrbitSeg."):
                    target = self.registerCandidate()
                    self.setStatus(f"Training finished. Model '{job.name}' is in OrbitSeg's model list ({target}).")
            else:
                self._candidate = protocol.best_checkpoint_so_far(job.out_dir)
                kept = (f" The last good checkpoint is kept: {self._candidate}. Press 'Add to OrbitSeg models' to use"
                        " it, or train again into the same folder to resume.") if self._candidate else ""
                if cancelled:
                    self.setStatus("Training cancelled." + kept)
                else:
                    self.setStatus(f"Training failed: {errorMessage}.{kept}", error=True)
                    slicer.util.errorDisplay(f"Training failed:\n\n{errorMessage}", windowTitle="OrbitSeg Training",
                                             detailedText=self.ui.logTextEdit.plainText)
        finally:  # a model that could not be added leaves the panel ready, with 'Add to OrbitSeg models' on
            self.updateGUIFromParameterNode()

    def registerCandidate(self, overwrite: bool = False) -> Path:
        from OrbitSegLib.model_store import user_model_dir

        name = self._parameterNode.modelName
        target = user_model_dir() / f"{name}.pt"
        if target.exists() and not overwrite:
            if not slicer.util.confirmOkCancelDisplay(f"A model named '{name}' exists already. Replace it?"):
                raise RuntimeError("not replaced; choose another model name and press 'Add to OrbitSeg models'")
            overwrite = True
        return self.logic.register(self._candidate, name, overwrite=overwrite)

    def onRegister(self) -> None:
        with slicer.util.tryWithErrorDisplay("The model could not be added to OrbitSeg."):
            target = self.registerCandidate()
            self.setStatus(f"Model '{self._parameterNode.modelName}' added to OrbitSeg's model list ({target}).")

    def setStatus(self, text: str, error: bool = False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.styleSheet = "color: #c00000" if error else ""
        slicer.util.showStatusMessage(text, 5000)

    def log(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)
        logging.info(f"OrbitSeg training: {line}")


class OrbitSegTrainingLogic(ScriptedLoadableModuleLogic):
    """Builds the training job from the panel, keeps the log table and loss chart up to date, registers models."""

    def getParameterNode(self):
        return OrbitSegTrainingParameterNode(super().getParameterNode())

    @staticmethod
    def job(p):
        from OrbitSegLib.protocol import TrainingJob

        data = {DataSource.STUDIES: str(p.studyList) if chosen(p.studyList) else "",
                DataSource.FOLDER: str(p.dataFolder) if chosen(p.dataFolder) else "",
                DataSource.PHANTOM: str(p.phantomCases)}[p.dataSource]
        if not chosen(p.outputFolder):
            raise ValueError("Choose an output folder.")
        return TrainingJob(Path(p.outputFolder), p.modelName.strip(), p.architecture.value, p.dataSource.value, data,
                           p.folds, p.epochs, p.batchSize, p.learningRate, p.device.value, p.restart,
                           p.initialModel.strip(), p.ensembleFolds, p.softTargets)

    @staticmethod
    def logNodes(table=None, chart=None):
        """The log table and loss chart nodes (created when missing), wired together."""
        from OrbitSegMRMLLib import trainingchart

        scene = slicer.mrmlScene
        table = table or scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName("OrbitSeg training log"))
        chart = chart or scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName("OrbitSeg training"))
        trainingchart.update_log_table(table, [])
        return table, trainingchart.loss_chart(table, chart)

    @staticmethod
    def refreshLog(job, table) -> int:
        """Reload the job's training log into the table (the chart follows); returns the number of rows."""
        from OrbitSegLib.protocol import read_training_log
        from OrbitSegMRMLLib.trainingchart import update_log_table

        rows = read_training_log(job.log_path)
        if rows and len(rows) != table.GetNumberOfRows():
            update_log_table(table, rows)
        return len(rows)

    @staticmethod
    def register(checkpoint, name, overwrite=False) -> Path:
        from OrbitSegLib.model_store import register_model

        return register_model(checkpoint, name, overwrite=overwrite)


class OrbitSegTrainingTest(ScriptedLoadableModuleTest):
    """Trains a tiny SV-Net on phantom cases in the background process and registers it with OrbitSeg."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_TrainOnPhantomAndRegister()

    def test_TrainOnPhantomAndRegister(self):
        from OrbitSegLib.model_store import available_models
        from OrbitSegMRMLLib import tablenodes

        self.assertEqual(OrbitSegLogic().missingDependencies(), [], "OrbitSeg's Python packages are not installed")
        work = Path(tempfile.mkdtemp(prefix="OrbitSegTrainingTest-"))
        previous = os.environ.get("ORBITSEG_USER_MODELS")
        os.environ["ORBITSEG_USER_MODELS"] = str(work / "models")
        try:
            logic = OrbitSegTrainingLogic()
            p = logic.getParameterNode()
            p.dataSource, p.phantomCases, p.architecture = DataSource.PHANTOM, 3, Architecture.SV_NET
            p.modelName, p.folds, p.epochs, p.batchSize = "selftest-sv-net", 1, 1, 2
            p.device, p.outputFolder = Device.CPU, work / "run"
            job = logic.job(p)
            table, chart = logic.logNodes()
            process = OrbitSegProcess(lambda f, m: None, logging.info, lambda *args: None)
            self.delayDisplay("Training a tiny SV-Net on 3 phantom cases (1 epoch, CPU)")
            started = time.time()
            process.start(job.arguments())
            self.assertTrue(process.waitForFinished(3600), "training did not finish")
            self.assertEqual(process.exitCode, 0, "\n".join(process._stderr.lines[-20:]))
            self.assertEqual(len(list(job.cache_dir.glob("*.npz"))), 3)  # kept for a resumed run
            self.assertGreaterEqual(logic.refreshLog(job, table), 1)
            rows = tablenodes.table_node_rows(table)
            self.assertEqual([r["fold"] for r in rows], [0])  # one fold, one epoch
            self.assertEqual(chart.GetNumberOfPlotSeriesNodes(), 3)
            target = logic.register(job.model_path, p.modelName)
            self.assertEqual(available_models()[p.modelName], target)
            self.delayDisplay(f"Trained and registered in {time.time() - started:.0f} s")
        finally:
            if previous is None:
                os.environ.pop("ORBITSEG_USER_MODELS", None)
            else:
                os.environ["ORBITSEG_USER_MODELS"] = previous
