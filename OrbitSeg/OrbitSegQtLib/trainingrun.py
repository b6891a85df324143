"""The OrbitSeg Training panel's runs: start ``orbitseg train`` (or ``orbitseg adapt``, :mod:`.adaptsection`),
follow its log in a table and a live loss chart, and add the finished model (or, after Cancel or a
failure, the last good checkpoint) to OrbitSeg's models.

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
    """The running (or last) job: a ``TrainingJob`` or an ``AdaptJob``; both have ``arguments()``,
    ``work_dir``, ``log_path`` and ``model_path``."""
    _what = "Training"
    _nameParameter = "modelName"
    """The parameter-node field naming the model the job's result is added as."""
    _overwrite = False
    _showOutput = None
    _candidate = None
    """The model (or checkpoint) 'Add to OrbitSeg models' adds."""
    _timer = None

    def setupTrainingRun(self) -> None:
        self.ui.registerButton.connect("clicked(bool)", self.onRegister)
        self._timer = qt.QTimer()
        self._timer.setInterval(2000)
        self._timer.connect("timeout()", self.refreshLog)

    def startTraining(self) -> None:
        self.startRun(self.logic.job(self._parameterNode), "Training", "modelName")

    def startRun(self, job, what: str, nameParameter: str, *, overwrite: bool = False, showOutput=None) -> None:
        """Run ``job`` in the background with the live log. When it finishes, its model is added to OrbitSeg's
        models under the name in the parameter ``nameParameter``, replacing a model of that name with
        ``overwrite`` (else after asking), and ``showOutput(lines)`` gets the lines the command printed
        (stdout). ``what`` names the run in messages ("Training")."""
        from OrbitSegMRMLLib import trainingchart

        p = self._parameterNode
        self._job, self._what, self._nameParameter = job, what, nameParameter
        self._overwrite, self._showOutput = overwrite, showOutput
        job.work_dir.mkdir(parents=True, exist_ok=True)
        self._candidate = None
        self.ui.logTextEdit.clear()
        p.logTable, p.lossChart = trainingchart.log_nodes(slicer.mrmlScene, p.logTable, p.lossChart)
        slicer.modules.plots.logic().ShowChartInLayout(p.lossChart)
        self.startProcess(job.arguments(), self.onFinished)
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
        printed = [line for line in self._process.stdout.lines if line.strip()]
        self.processEnded()
        job, what = self._job, self._what
        try:
            if exitCode == 0 and not cancelled and job.model_path.is_file():
                self._candidate = job.model_path
                if self._showOutput is not None:
                    self._showOutput(printed)
                with slicer.util.tryWithErrorDisplay(f"{what} finished, but the model could not be added to OrbitSeg."):
                    target = self.registerCandidate(self._overwrite)
                    self.setStatus(f"{what} finished. Model '{self.runName()}' is in OrbitSeg's model list ({target}).")
            else:
                self._candidate = protocol.best_checkpoint_so_far(job.work_dir)
                kept = (f" The last good checkpoint is kept: {self._candidate}. Press 'Add to OrbitSeg models' to use"
                        " it, or start the same run again to resume.") if self._candidate else ""
                if cancelled:
                    self.setStatus(f"{what} cancelled." + kept)
                else:
                    self.setStatus(f"{what} failed: {errorMessage}.{kept}", error=True)
                    slicer.util.errorDisplay(f"{what} failed:\n\n{errorMessage}", windowTitle="OrbitSeg Training",
                                             detailedText=self.ui.logTextEdit.plainText)
        finally:  # a model that could not be added leaves the panel ready, with 'Add to OrbitSeg models' on
            self.updateGUIFromParameterNode()

    def runName(self) -> str:
        """The name the last run's model is added as (its name field, as it reads now)."""
        return getattr(self._parameterNode, self._nameParameter).strip()

    def registerCandidate(self, overwrite: bool = False) -> Path:
        from OrbitSegLib.model_store import register_model, user_model_dir

        name = self.runName()
        target = user_model_dir() / f"{name}.pt"
        if target.exists() and not overwrite:
            if not slicer.util.confirmOkCancelDisplay(f"A model named '{name}' exists already. Replace it?"):
                raise RuntimeError("not replaced; choose another model name and press 'Add to OrbitSeg models'")
            overwrite = True
        return register_model(self._candidate, name, overwrite=overwrite)

    def onRegister(self) -> None:
        with slicer.util.tryWithErrorDisplay("The model could not be added to OrbitSeg."):
            target = self.registerCandidate()
            self.setStatus(f"Model '{self.runName()}' added to OrbitSeg's model list ({target}).")
