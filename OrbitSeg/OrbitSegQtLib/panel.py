"""What both OrbitSeg panels share: the widget lifecycle around a parameter node, status and log lines,
and one background ``orbitseg`` process with a progress bar and Cancel.

A module's widget subclasses :class:`PanelWidget`, sets :attr:`PanelWidget.uiName` and implements
:meth:`PanelWidget.createLogic`, :meth:`PanelWidget.updateGUIFromParameterNode` and
:meth:`PanelWidget.onApplyButton`. The ``.ui`` file must have ``applyButton``, ``progressBar``,
``statusLabel`` and ``logTextEdit`` widgets.
"""
from __future__ import annotations

import enum
import logging

import vtk

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from . import environment
from .process import BackgroundProcess


class Device(enum.Enum):
    """The compute device a panel asks the background process for (``--device``)."""

    AUTO = "auto"
    GPU = "cuda"
    CPU = "cpu"

    def label(self):
        return {"AUTO": "Auto (GPU if available)", "GPU": "GPU (CUDA)", "CPU": "CPU"}[self.name]


class PanelWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """A module panel bound to its parameter node that runs one background process at a time."""

    uiName = ""
    """The module's ``.ui`` file name in ``Resources/UI``."""
    logPrefix = "OrbitSeg"

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._process = None

    def createLogic(self):
        raise NotImplementedError

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.uiName}"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.createLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        problem = environment.slicerVersionProblem()
        if problem:
            self.setStatus(problem, error=True)

    def onReload(self) -> None:
        """Reload OrbitSeg's libraries too, so that edited library code runs without restarting Slicer."""
        from . import unloadLibraries

        unloadLibraries()
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        self.cancelProcess()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        self.cancelProcess()
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
            self.onParameterNodeSet()
            self.updateGUIFromParameterNode()

    def onParameterNodeSet(self) -> None:
        """Called when a parameter node has been connected (before the panel is updated from it)."""

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        raise NotImplementedError

    # --- the background process -------------------------------------------------------------------

    def isRunning(self) -> bool:
        return self._process is not None and self._process.isRunning()

    def startProcess(self, arguments: list[str], onFinished) -> BackgroundProcess:
        """Run ``orbitseg <arguments>`` in the background with the panel's progress bar and status line."""
        self._process = BackgroundProcess(self.onProgress, self.log, onFinished)
        self.ui.progressBar.value = 0
        self.ui.progressBar.visible = True
        self.setStatus("Starting…")
        self._process.start(arguments)
        self.updateGUIFromParameterNode()
        return self._process

    def processEnded(self) -> None:
        """Forget the finished process (call first in the ``onFinished`` handler)."""
        self.ui.progressBar.visible = False
        self._process = None

    def cancelProcess(self) -> None:
        if self._process is not None:
            self._process.cancel()

    def ensureDependencies(self) -> bool:
        """Install OrbitSeg's Python packages after asking; False (after saying why) when they are not there."""
        try:
            return environment.installDependencies()
        except Exception as exc:
            slicer.util.errorDisplay(f"OrbitSeg needs Python packages that could not be installed:\n\n{exc}",
                                     windowTitle=self.logPrefix)
            return False

    # --- status ------------------------------------------------------------------------------------

    def onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.setStatus(message)

    def setStatus(self, text: str, error: bool = False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.styleSheet = "color: #c00000" if error else ""
        slicer.util.showStatusMessage(text, 5000)

    def log(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)
        logging.info(f"{self.logPrefix}: {line}")
