"""The OrbitSeg panel's model list: bundled and user models with their cards, and a model the scene
names that is not installed here kept visible as "(not found)" instead of silently switched.

:class:`ModelSection` is a mixin of the OrbitSeg module's widget (a :class:`~.panel.PanelWidget` whose
parameter node has ``modelName``).
"""
from __future__ import annotations

import html
import logging

import qt

from . import environment


class ModelSection:
    _modelChoices = ()
    _dependenciesMissing = False

    def setupModelList(self) -> None:
        self.ui.refreshModelsButton.connect("clicked(bool)", self.refreshModels)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)

    def refreshModels(self) -> None:
        """Fill the model list (bundled and user models) with their cards as tooltips. A model the scene
        names that is not installed here stays selected as "(not found)" instead of silently switching."""
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        self._modelChoices = []
        try:
            self._dependenciesMissing = bool(environment.missingDependencies())
            if self._dependenciesMissing:
                combo.addItem("(install the Python packages first: press Segment)")
                return
            from OrbitSegLib import model_cards

            self._modelChoices = model_cards.model_choices()
            for index, choice in enumerate(self._modelChoices):
                combo.addItem(f"{choice.name} ({choice.origin})" if choice.origin != "bundled" else choice.name)
                combo.setItemData(index, model_cards.card_tooltip(choice), qt.Qt.ToolTipRole)
            wanted = self._parameterNode.modelName if self._parameterNode else ""
            names = [c.name for c in self._modelChoices]
            if wanted in names:
                combo.currentIndex = names.index(wanted)
            elif wanted:
                combo.addItem(f"{wanted} (not found)")
                combo.currentIndex = len(names)
            elif not names:
                combo.addItem("(no models found)")
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
        p = self._parameterNode
        if choice is not None:
            from OrbitSegLib import model_cards

            self.ui.modelCardBrowser.setHtml(model_cards.card_html(choice))
            self.ui.modelComboBox.toolTip = model_cards.card_tooltip(choice)
            if p and p.modelName != choice.name:
                p.modelName = choice.name
        elif p and p.modelName and not self._dependenciesMissing:
            self.ui.modelCardBrowser.setHtml(
                f"<p>This scene asks for the model <b>{html.escape(p.modelName)}</b>, which is not installed here. "
                "Choose another model, or add it to OrbitSeg's models and press Refresh.</p>")
        else:
            self.ui.modelCardBrowser.setHtml("")
        self.updateGUIFromParameterNode()
