"""The OrbitSeg panel's volume-of-interest controls: Auto-detect, per-eye boxes (markups ROIs) that the
user can move, start/end slices that follow the boxes (and the boxes the slices), slices taken from
the red view, and Reset.

:class:`VolumeOfInterestSection` is a mixin of the OrbitSeg module's widget (a :class:`~.panel.PanelWidget`
whose parameter node has ``inputVolume``, ``startSlice``, ``endSlice``, ``rightEyeBox`` and ``leftEyeBox``).
"""
from __future__ import annotations

import logging

import vtk

import slicer


class VolumeOfInterestSection:
    _updatingBoxes = False

    def setupVolumeOfInterest(self) -> None:
        self.ui.autoDetectButton.connect("clicked(bool)", self.onAutoDetect)
        self.ui.resetVoiButton.connect("clicked(bool)", self.onResetVoi)
        self.ui.startFromSliceButton.connect("clicked(bool)", lambda: self.onSliceFromView("startSlice"))
        self.ui.endFromSliceButton.connect("clicked(bool)", lambda: self.onSliceFromView("endSlice"))
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputVolumeChanged)

    def eyeBoxes(self) -> dict:
        p = self._parameterNode
        return {side: roi for side, roi in (("right", p.rightEyeBox), ("left", p.leftEyeBox)) if roi is not None}

    def syncBoxesToSlices(self) -> None:
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

    def observeEyeBoxes(self) -> None:
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
                self.observeEyeBoxes()
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
