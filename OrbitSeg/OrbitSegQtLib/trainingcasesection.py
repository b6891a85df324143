"""The OrbitSeg panel's Training cases section: save the input CT and the corrected OrbitSeg segmentation
into a site folder (:func:`OrbitSegMRMLLib.trainingcase.save_training_case`) for OrbitSeg Training's Adapt.

The site folder is the ``ctkPathLineEdit`` history under the setting key ``OrbitSeg/SiteFolder``, which the
Training panel's Adapt section shares. :class:`TrainingCaseSection` is a mixin of the OrbitSeg module's
widget (a :class:`~.panel.PanelWidget` with :class:`~.modelsection.ModelSection`, whose parameter node has
``inputVolume`` and ``outputSegmentation``).
"""
from __future__ import annotations

import slicer


class TrainingCaseSection:
    def setupTrainingCases(self) -> None:
        self.ui.saveTrainingCaseButton.connect("clicked(bool)", self.onSaveTrainingCase)

    def updateTrainingCases(self, running: bool) -> None:
        """Save is on when the output segmentation holds an OrbitSeg result (and no run is going)."""
        p = self._parameterNode
        result = None
        if not running and not self._dependenciesMissing and p.inputVolume is not None:
            from OrbitSegMRMLLib.trainingcase import remembered_result

            result = remembered_result(p.outputSegmentation)
        button = self.ui.saveTrainingCaseButton
        button.enabled = result is not None
        button.toolTip = (f"Save {p.inputVolume.GetName()} and the segments you corrected in "
                          f"{p.outputSegmentation.GetName()} (made by {result['model']}) into the site folder"
                          if result is not None else "Segment a CT first: the segments you then correct can be saved")

    def onSaveTrainingCase(self) -> None:
        p = self._parameterNode
        folder = self.ui.siteFolderPathLineEdit.currentPath.strip()
        with slicer.util.tryWithErrorDisplay("The training case could not be saved.", waitCursor=True):
            if not folder:
                raise ValueError("Choose the site folder that collects your corrected cases first.")
            from OrbitSegMRMLLib.trainingcase import save_training_case

            try:
                saved = save_training_case(p.inputVolume, p.outputSegmentation, folder,
                                           include_unchanged=self.ui.includeUnchangedCheckBox.checked)
            except Exception as exc:
                self.setStatus(f"Not saved: {exc}", error=True)
                raise
            self.ui.siteFolderPathLineEdit.addCurrentPathToHistory()
            self.setStatus(saved.message())
            self.log(saved.message())
