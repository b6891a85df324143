"""The OrbitSeg Training panel's run: start ``orbitseg train``, follow its log in a table and a live loss
chart, and add the finished model (or, after Cancel or a failure, the last good checkpoint) to
OrbitSeg's models.

:class:`TrainingRunSection` is a mixin of the OrbitSeg Training module's widget (a
:class:`~.panel.PanelWidget` whose logic has ``job(parameterNode)`` and whose parameter node has
``modelName``, ``logTable`` and ``lossChart``).
"""
from __future__ import annotations

from pathlib import Path

import qt

import slicer


class TrainingRunSection:
    _job = None
    _candidate = None
    """The model (or checkpoint) 'Add to OrbitSeg models' adds."""
    _timer = None

    def setupTrainingRun(self) -> None:
        self.ui.registerButton.connect("clicked(bool)", self.onRegister)
        self._timer = qt.QTimer()
        self._timer.setInterval(2000)
        self._timer.connect("timeout()", self.refreshLog)

    def startTraining(self) -> None:
        from OrbitSegMRMLLib import trainingchart

        p = self._parameterNode
        self._job = self.logic.job(p)
        self._job.out_dir.mkdir(parents=True, exist_ok=True)
        self._candidate = None
        self.ui.logTextEdit.clear()
        p.logTable, p.lossChart = trainingchart.log_nodes(slicer.mrmlScene, p.logTable, p.lossChart)
        slicer.modules.plots.logic().ShowChartInLayout(p.lossChart)
        self.startProcess(self._job.arguments(), self.onFinished)
        self._timer.start()

    def refreshLog(self) -> None:
        from OrbitSegMRMLLib import trainingchart

        p = self._parameterNode
        if self._job is not None and p is not None and p.logTable is not None:
            trainingchart.refresh_log_table(self._job.log_path, p.logTable)

    def onFinished(self, exitCode: int, cancelled: bool, errorMessage: str) -> None:
        from OrbitSegLib import protocol

        self._timer.stop()
        self.refreshLog()
        self.processEnded()
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
        from OrbitSegLib.model_store import register_model, user_model_dir

        name = self._parameterNode.modelName
        target = user_model_dir() / f"{name}.pt"
        if target.exists() and not overwrite:
            if not slicer.util.confirmOkCancelDisplay(f"A model named '{name}' exists already. Replace it?"):
                raise RuntimeError("not replaced; choose another model name and press 'Add to OrbitSeg models'")
            overwrite = True
        return register_model(self._candidate, name, overwrite=overwrite)

    def onRegister(self) -> None:
        with slicer.util.tryWithErrorDisplay("The model could not be added to OrbitSeg."):
            target = self.registerCandidate()
            self.setStatus(f"Model '{self._parameterNode.modelName}' added to OrbitSeg's model list ({target}).")
