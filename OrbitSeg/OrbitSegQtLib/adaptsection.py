"""The OrbitSeg Training panel's Adapt section: fine-tune a model on the corrected cases of a site folder
(saved with the OrbitSeg panel's *Save as training case*) with ``orbitseg adapt`` (``protocol.AdaptJob``),
run as training is (:class:`~.trainingrun.TrainingRunSection`: progress, Cancel, live log), then add the
adapted model to OrbitSeg's models under the chosen name and show the held-back eye's agreement before
and after that the command prints.

The adapted model and its work folder go into the site folder (``site_cases.model_path``); pressing
Adapt again after a Cancel resumes there, after a finished run it starts afresh (the site may have new
cases). The site folder is the ``ctkPathLineEdit`` history under ``OrbitSeg/SiteFolder``, shared with the
OrbitSeg panel. :class:`AdaptSection` is a mixin of the OrbitSeg Training module's widget (a
:class:`~.trainingrun.TrainingRunSection` and :class:`~.panel.PanelWidget` whose parameter node has
``adaptModelName`` and ``adaptDevice``).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import qt

import slicer

from . import environment


class AdaptSection:
    _startModels = ()

    def setupAdapt(self) -> None:
        self.ui.adaptButton.connect("clicked(bool)", self.onAdaptButton)
        self.ui.siteFolderPathLineEdit.connect("currentPathChanged(QString)", self.onSiteFolderChanged)
        self.refreshAdaptChoices()

    def refreshAdaptChoices(self) -> None:
        """The site folders used before (also by the OrbitSeg panel) and the models adapt can start from:
        every usable single-network model, the one chosen before (else the default model) selected."""
        self.ui.siteFolderPathLineEdit.retrieveHistory()
        combo = self.ui.startModelComboBox
        previous = self.startModel()
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        self._startModels = []
        try:
            if environment.missingDependencies():
                combo.addItem("(install the Python packages first: press Adapt)")
                return
            from OrbitSegLib import model_cards
            from OrbitSegLib.model_store import DEFAULT_MODEL

            self._startModels = [c for c in model_cards.model_choices() if not c.problem and c.card.get("members", 1) == 1]
            for index, choice in enumerate(self._startModels):
                combo.addItem(f"{choice.name} ({choice.origin})" if choice.origin != "bundled" else choice.name)
                combo.setItemData(index, model_cards.card_tooltip(choice), qt.Qt.ToolTipRole)
            names = [c.name for c in self._startModels]
            wanted = previous.name if previous is not None else DEFAULT_MODEL
            if wanted in names:
                combo.currentIndex = names.index(wanted)
        except Exception as exc:
            logging.error(f"OrbitSeg Training: could not list the models: {exc}")
            combo.addItem("(models could not be listed: see the log)")
        finally:
            combo.blockSignals(wasBlocked)
        self.onSiteFolderChanged()

    def startModel(self):
        """The chosen starting model (``model_cards.ModelChoice``), or None."""
        index = self.ui.startModelComboBox.currentIndex
        return self._startModels[index] if 0 <= index < len(self._startModels) else None

    def onSiteFolderChanged(self, path: str = "") -> None:
        """Say how many cases the site folder holds."""
        folder = self.ui.siteFolderPathLineEdit.currentPath.strip()
        text = ""
        if folder:
            from OrbitSegLib import site_cases

            cases = site_cases.read_cases(folder)
            text = (f"{len(cases)} training cases saved here." if cases else
                    "No training cases here yet: save corrected results with OrbitSeg's 'Save as training case'.")
        self.ui.siteCasesLabel.text = text

    def isAdapting(self) -> bool:
        from OrbitSegLib.protocol import AdaptJob

        return self.isRunning() and isinstance(self._job, AdaptJob)

    def updateAdaptSection(self, running: bool) -> None:
        adapting = self.isAdapting()
        for widget in (self.ui.siteFolderPathLineEdit, self.ui.startModelComboBox, self.ui.adaptModelNameLineEdit,
                       self.ui.adaptDeviceComboBox):
            widget.enabled = not running
        self.ui.adaptButton.enabled = adapting or not running
        self.ui.adaptButton.text = "Cancel" if adapting else "Adapt"

    def onAdaptButton(self) -> None:
        if self.isRunning():
            self.cancelProcess()
            return
        if not self.ensureDependencies():
            return
        if not self._startModels:
            self.refreshAdaptChoices()
        with slicer.util.tryWithErrorDisplay("Adapting could not start.", waitCursor=True):
            self.startAdapt()

    def startAdapt(self) -> None:
        from OrbitSegLib import site_cases
        from OrbitSegLib.model_store import user_model_dir
        from OrbitSegLib.protocol import AdaptJob, best_checkpoint_so_far

        p = self._parameterNode
        site = self.ui.siteFolderPathLineEdit.currentPath.strip()
        if not site:
            raise ValueError("Choose the site folder that holds your corrected cases.")
        site_cases.study_list(site)  # says what to do when the folder holds no cases
        start = self.startModel()
        if start is None:
            raise ValueError("Choose the model to adapt.")
        name = p.adaptModelName.strip()
        job = AdaptJob(Path(site), site_cases.model_path(site, name), start.name, p.adaptDevice.value)
        overwrite = (user_model_dir() / f"{name}.pt").exists()
        if overwrite and not slicer.util.confirmOkCancelDisplay(
                f"A model named '{name}' exists already. Replace it with the adapted model when adapting finishes?"):
            raise RuntimeError("not started; choose another name for the adapted model")
        if job.model_path.is_file():  # a finished run of that name: adapt afresh, on the cases there are now
            shutil.rmtree(job.work_dir, ignore_errors=True)
            job.model_path.unlink()
        resuming = best_checkpoint_so_far(job.work_dir) is not None
        self.ui.siteFolderPathLineEdit.addCurrentPathToHistory()
        self.ui.adaptSummaryLabel.text = ""
        self.startRun(job, "Adapting", "adaptModelName", overwrite=overwrite, showOutput=self.showAdaptSummary)
        self.log(f"Adapting {start.name} on the cases of {site} into '{name}' ({job.model_path})"
                 + (f"; resuming the stopped run in {job.work_dir}" if resuming else ""))

    def showAdaptSummary(self, lines: list[str]) -> None:
        """What ``orbitseg adapt`` printed: the model, and the held-back eye's mean Dice before and after."""
        self.ui.adaptSummaryLabel.text = "\n".join(lines)
