"""The OrbitSeg module's scene logic: volume node -> core pipeline -> segmentation and table nodes.

:class:`SegmentationLogic` is what the OrbitSeg panel calls. It never touches Qt; the panel runs the
core in a background process (:meth:`SegmentationLogic.prepare_job` writes its inputs,
:meth:`SegmentationLogic.load_job_results` loads its outputs), and :meth:`SegmentationLogic.segment`
runs the same core pipeline in this process (for scripts, the Python console and tests). Both remember
on the segmentation node what the model proposed (:func:`.trainingcase.remember_result`), so that a
corrected result can be saved as a training case.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from OrbitSegLib import qa, structures
from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.imageio import atomic_path, read_image, write_image
from OrbitSegLib.metrics import compare_labelmaps, volumes_cm3
from OrbitSegLib.protocol import SegmentationJob
from OrbitSegLib.tables import read_csv, volume_rows
from OrbitSegLib.voi import VOI, suggest_voi

from . import roi, segments, tablenodes, trainingcase
from .geometry import volume_to_image


@dataclass
class ShownResult:
    """What a run put into the scene: volume rows (with their QA columns), comparison rows (with a
    reference), the QA findings and run facts (``device``: ``cpu`` or ``cuda:N``)."""

    rows: list[dict]
    comparison_rows: list[dict] = field(default_factory=list)
    ignored_reference_segments: list[str] = field(default_factory=list)
    findings: list[qa.Finding] = field(default_factory=list)
    model_name: str = ""
    device: str = ""
    device_note: str = ""
    voi: VOI | None = None
    timings: dict = field(default_factory=dict)

    def qa_lines(self) -> list[str]:
        """The findings a radiologist must see before reading the volumes (every flag but
        ``outside-normal``, which the table shows as a finding), one line each with its reason."""
        return [f"{structures.segment_name(f.side, f.structure) if f.side else 'Scan'}: {f.flag}: {f.reason}"
                for f in self.findings if f.flag != "outside-normal"]


class SegmentationLogic:
    """Scene operations of the OrbitSeg module, on a given scene (and application logic, for layouts)."""

    def __init__(self, scene, app_logic=None):
        self.scene = scene
        self.app_logic = app_logic

    # --- volume of interest ---------------------------------------------------------------------

    def suggest_voi(self, volume_node) -> VOI:
        """The core's automatic start/end slices and eye boxes for a volume node."""
        return suggest_voi(volume_to_image(volume_node))

    def show_voi(self, volume_node, voi: VOI, rois: dict | None = None) -> dict:
        """Show each eye box of ``voi`` as an ROI; reuses ``rois[side]`` nodes, creates missing ones."""
        rois = dict(rois or {})
        for side in voi.boxes:
            if rois.get(side) is None:
                rois[side] = self.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", roi.ROI_NAMES[side])
            roi.style_roi(rois[side], side)
        return roi.voi_to_rois(volume_node, voi, {side: rois[side] for side in voi.boxes})

    def voi_from_rois(self, volume_node, rois: dict, start: int | None = None, end: int | None = None) -> VOI:
        """The VOI the user set: eye boxes from the ROIs, start/end slices from the panel (or the ROIs)."""
        return roi.voi_from_rois(volume_node, {s: r for s, r in rois.items() if r is not None}, start, end)

    # --- background process -----------------------------------------------------------------------

    def prepare_job(self, volume_node, job_dir: str | os.PathLike, model: str, *, side: str = "both",
                    device: str = "auto", voi: VOI | None = None, start: int | None = None,
                    end: int | None = None, grid_shifts: int = 1) -> SegmentationJob:
        """Write the job's inputs (the CT with its exact geometry, the VOI) into ``job_dir``."""
        job_dir = Path(job_dir)
        job_dir.mkdir(parents=True, exist_ok=True)
        ct_path = write_image(volume_to_image(volume_node), job_dir / "input.nrrd", compress=False)
        voi_path = None
        if voi is not None:
            voi_path = job_dir / "voi.json"
            with atomic_path(voi_path) as tmp:
                tmp.write_text(json.dumps(voi.to_dict()), encoding="utf-8")
        return SegmentationJob(ct_path, job_dir / "output", str(model), side, device, voi_path, start, end,
                               grid_shifts)

    def load_job_results(self, job: SegmentationJob, volume_node, segmentation_node, volume_table_node, *,
                         reference_node=None, comparison_table_node=None, closed_surface: bool = True) -> ShownResult:
        """Load a finished job's labelmap into the segmentation and table nodes."""
        if not job.labels_path.is_file():
            raise OrbitSegError(f"the OrbitSeg process wrote no result ({job.labels_path} is missing)")
        run = job.read_run()
        sides = tuple(run.get("sides") or structures.sides_for(job.side))
        rows = _typed_rows(read_csv(job.volumes_path))
        labelmap = read_image(job.labels_path)
        shown = self.show_result(labelmap, sides, volume_node, segmentation_node, volume_table_node,
                                 reference_node=reference_node, comparison_table_node=comparison_table_node,
                                 closed_surface=closed_surface, rows=rows)
        shown.findings = [qa.Finding(**f) for f in run.get("qa", [])]
        shown.model_name = run.get("model", job.model)
        trainingcase.remember_result(segmentation_node, labelmap, sides, model=shown.model_name, model_path=job.model,
                                     model_card=run.get("model_card"))
        shown.device, shown.device_note = run.get("device", ""), run.get("device_note", "")
        shown.voi = VOI.from_dict(run["voi"]) if run.get("voi") else None
        shown.timings = run.get("timings_s", {})
        return shown

    # --- results ------------------------------------------------------------------------------------

    def show_result(self, labelmap: sitk.Image, sides, volume_node, segmentation_node, volume_table_node, *,
                    reference_node=None, comparison_table_node=None, closed_surface: bool = True,
                    rows: list[dict] | None = None) -> ShownResult:
        """Put a result labelmap into the segmentation node and its volume rows (default: measured from
        the labelmap, without QA) into the table node."""
        segments.labelmap_to_segmentation_node(labelmap, sides, segmentation_node, volume_node,
                                               closed_surface=closed_surface)
        rows = rows if rows is not None else volume_rows(volumes_cm3(labelmap), sides)
        tablenodes.volume_table(rows, volume_table_node)
        shown = ShownResult(rows)
        if reference_node is not None and comparison_table_node is not None:
            shown.comparison_rows, shown.ignored_reference_segments = self.compare(
                labelmap, sides, reference_node, volume_node, comparison_table_node)
        return shown

    def compare(self, labelmap: sitk.Image, sides, reference_node, volume_node, table_node) -> tuple[list[dict], list[str]]:
        """Per-structure agreement of a result labelmap with a reference segmentation node.

        Fills ``table_node`` with volumes, differences, IoU, Dice, VS, sensitivity and specificity;
        returns the rows and the names of reference segments that name no OrbitSeg structure.
        """
        reference, ignored = segments.segmentation_node_to_labelmap(reference_node, volume_node)
        rows = volume_rows(volumes_cm3(labelmap), sides, compare_labelmaps(labelmap, reference, sides))
        tablenodes.comparison_table(rows, table_node)
        return rows, ignored

    def compare_nodes(self, segmentation_node, reference_node, volume_node, table_node) -> tuple[list[dict], list[str]]:
        """:meth:`compare` for an OrbitSeg segmentation node already in the scene (e.g. after the run)."""
        labelmap, _ = segments.segmentation_node_to_labelmap(segmentation_node, volume_node)
        matched, _ = segments.match_segments(segmentation_node)
        sides = tuple(s for s in structures.SIDES if any(side == s for _, side, _ in matched))
        return self.compare(labelmap, sides, reference_node, volume_node, table_node)

    def show_table(self, table_node) -> None:
        """Show a table node in the layout's table view."""
        tablenodes.show_table_in_layout(self.app_logic, table_node)

    # --- in-process run ---------------------------------------------------------------------------

    def segment(self, volume_node, model, segmentation_node, volume_table_node, *, voi: VOI | None = None,
                start: int | None = None, end: int | None = None, side: str = "both", device: str = "auto",
                reference_node=None, comparison_table_node=None, closed_surface: bool = True,
                progress=None, cancel=None) -> ShownResult:
        """Run the core pipeline in this process on a volume node and show the result.

        ``model``: a loaded model (``model_store.LoadedModel``), a name or a ``.pt`` path. Blocks
        until done; the panel uses the background process instead.
        """
        from OrbitSegLib.pipeline import segment_image

        result = segment_image(volume_to_image(volume_node), model, voi=voi, start_slice=start, end_slice=end,
                               side=side, device=device, progress=progress, cancel=cancel)
        shown = self.show_result(result.labelmap, result.sides, volume_node, segmentation_node, volume_table_node,
                                 reference_node=reference_node, comparison_table_node=comparison_table_node,
                                 closed_surface=closed_surface, rows=result.rows)
        shown.findings, shown.model_name, shown.voi = result.findings, result.model_name, result.voi
        shown.device, shown.device_note = result.device, result.device_note
        shown.timings = result.timings
        trainingcase.remember_result(segmentation_node, result.labelmap, result.sides, model=result.model_name,
                                     model_path=str(getattr(model, "path", model)), model_card=result.model_card)
        return shown


def _typed_rows(rows: list[dict]) -> list[dict]:
    """``volumes.csv`` rows (strings) with their numbers as numbers, as :func:`tables.volume_rows` makes them."""
    def number(value: str) -> float:
        return float(value) if value not in ("", None) else float("nan")
    return [{**r, "label_value": int(r["label_value"]), "volume_cm3": float(r["volume_cm3"]),
             "uncertainty": number(r.get("uncertainty"))} for r in rows]
