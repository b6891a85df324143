"""OrbitSeg Training: adapt a model to your site's corrected cases, or train SV-Net or SEQ-UNET on your own
studies (or the phantom), from Slicer.

Adapt runs ``orbitseg adapt`` and Train ``orbitseg train``, each in a background process (``OrbitSegQtLib``,
shared with the OrbitSeg module): progress and a live loss plot while it runs, cancel at any time (every
checkpoint is written atomically, so the last good one is kept), and the finished model is copied into the
user models folder, where the OrbitSeg module's model list finds it. The command line and the log format are in
``OrbitSegLib.protocol``.
"""
from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import slicer
from slicer import vtkMRMLPlotChartNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Decimals, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest

from OrbitSegQtLib import selftests
from OrbitSegQtLib.adaptsection import AdaptSection
from OrbitSegQtLib.panel import Device, PanelWidget
from OrbitSegQtLib.trainingrun import TrainingRunSection

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
Adapt a model to your site: Adapt fine-tunes it on the corrected cases saved with OrbitSeg's 'Save as
training case' (4 or more: one eye is held back and its agreement before and after is shown).
Or train SV-Net or SEQ-UNET for OrbitSeg on a study list (CT + reference segmentation), a folder of case
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
    """The training panel's state. Paths equal to ``Path(".")`` mean "not chosen". ``adaptModelName`` and
    ``adaptDevice`` are the Adapt section's (its site folder is a path history shared with OrbitSeg)."""

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
    adaptModelName: str = "sv-net-site"
    adaptDevice: Device = Device.AUTO


def chosen(path: Path) -> bool:
    return str(path) not in ("", ".")


class OrbitSegTrainingWidget(AdaptSection, TrainingRunSection, PanelWidget):
    uiName = "OrbitSegTraining.ui"
    logPrefix = "OrbitSeg training"

    def createLogic(self):
        return OrbitSegTrainingLogic()

    def setup(self) -> None:
        PanelWidget.setup(self)
        self.ui.paperDefaultsButton.connect("clicked(bool)", self.onPaperDefaults)
        self.setupTrainingRun()
        self.setupAdapt()
        self.initializeParameterNode()

    def enter(self) -> None:
        PanelWidget.enter(self)
        self.refreshAdaptChoices()

    def cleanup(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        PanelWidget.cleanup(self)

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        running = self.isRunning()
        training = running and not self.isAdapting()
        source = p.dataSource
        self.ui.studyListPathLineEdit.enabled = source == DataSource.STUDIES
        self.ui.dataFolderPathLineEdit.enabled = source == DataSource.FOLDER
        self.ui.phantomCasesSpinBox.enabled = source == DataSource.PHANTOM
        self.ui.dataCollapsibleButton.enabled = not running
        self.ui.trainingCollapsibleButton.enabled = not running
        self.ui.applyButton.enabled = training or not running
        self.ui.applyButton.text = "Cancel" if training else "Train"
        self.ui.registerButton.enabled = not running and self._candidate is not None
        self.ui.logTableView.setMRMLTableNode(p.logTable)
        self.updateAdaptSection(running)

    def onPaperDefaults(self) -> None:
        p = self._parameterNode
        p.batchSize, p.learningRate = PAPER_DEFAULTS[p.architecture.value]

    def onApplyButton(self) -> None:
        if self.isRunning():
            self.cancelProcess()
            return
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Training could not start.", waitCursor=True):
            self.startTraining()


class OrbitSegTrainingLogic(ScriptedLoadableModuleLogic):
    """Builds the training job from the panel (the log and chart nodes are ``OrbitSegMRMLLib.trainingchart``)."""

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


class OrbitSegTrainingTest(ScriptedLoadableModuleTest):
    """Trains a tiny SV-Net on phantom cases in the background process and registers it with OrbitSeg
    (``OrbitSegQtLib.selftests``)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_TrainOnPhantomAndRegister()

    def test_TrainOnPhantomAndRegister(self):
        def configure(p, work):
            p.dataSource, p.phantomCases, p.architecture = DataSource.PHANTOM, 3, Architecture.SV_NET
            p.modelName, p.folds, p.epochs, p.batchSize = "selftest-sv-net", 1, 1, 2
            p.device, p.outputFolder = Device.CPU, work / "run"

        selftests.trainOnPhantomAndRegister(self, OrbitSegTrainingLogic(), configure)
