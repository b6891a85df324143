"""Corrected results as training cases: what the model proposed, which segments the radiologist
changed, and saving the CT with those segments into a site folder (:mod:`OrbitSegLib.site_cases`).

When a model's result is put into a segmentation node (:meth:`.logic.SegmentationLogic.load_job_results`
and :meth:`~.logic.SegmentationLogic.segment`), :func:`remember_result` stores on the node, as the JSON
attribute :data:`RESULT_ATTRIBUTE` (saved with the scene), the model, the date, and a fingerprint of
each segment's voxels on the CT's grid. :func:`save_training_case` exports every segment onto the CT's
grid again, so the comparison does not depend on how Segment Editor stores the segments (shared or
separate layers, extents, label values): a segment counts as corrected when a single voxel differs,
and a correction undone counts as none.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from OrbitSegLib import site_cases, structures
from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.imageio import ijk_to_lps, write_image
from OrbitSegLib.segio import write_seg_nrrd

from . import segments
from .geometry import node_name, volume_to_image

RESULT_ATTRIBUTE = "OrbitSeg.Result"
"""Segmentation node attribute: JSON ``{"model", "model_path", "model_description", "model_created",
"segmented", "fingerprints": {segment id: fingerprint}}`` of the result the model proposed."""


@dataclass(frozen=True)
class SavedCase:
    """A case saved into a site folder: its id and folder, the segment names it holds and the ones
    corrected (both in label order), and how many cases the site folder lists now."""

    case: str
    folder: Path
    segments: list[str]
    corrected: list[str]
    site_cases: int

    def message(self) -> str:
        """One line for the panel's status."""
        what = f"corrected: {', '.join(self.corrected)}" if self.corrected else "nothing corrected"
        unchanged = len(self.segments) - len(self.corrected)
        plural = "" if self.site_cases == 1 else "s"
        return (f"Saved training case {self.case} ({what}" + (f"; {unchanged} unchanged segments too" if unchanged else "")
                + f") into {self.folder.parent}: {self.site_cases} case{plural} there now.")


def fingerprint(mask: np.ndarray) -> str:
    """A digest of a binary mask ``[k, j, i]``: its shape and which voxels are set."""
    digest = hashlib.sha256(repr(tuple(mask.shape)).encode())
    digest.update(np.packbits(np.asarray(mask, bool), axis=None).tobytes())
    return digest.hexdigest()[:32]


def _now() -> str:
    """The local time as ISO 8601 with its UTC offset, to the second."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def remember_result(segmentation_node, labelmap: sitk.Image, sides, *, model: str, model_path: str = "",
                    model_card: dict | None = None) -> dict:
    """Record on ``segmentation_node`` what a model proposed (:data:`RESULT_ATTRIBUTE`): the model (name,
    file, its card's description and creation date), now as the date it segmented, and the fingerprint of
    every structure of ``sides`` in ``labelmap`` (uint8 OrbitSeg label values on the CT's grid, the
    labelmap the node was given). Returns the record."""
    array = sitk.GetArrayViewFromImage(labelmap)
    card = model_card or {}
    record = {"model": model, "model_path": str(model_path), "model_description": card.get("description", ""),
              "model_created": card.get("created", ""), "segmented": _now(),
              "fingerprints": {segments.segment_id(side, key): fingerprint(array == value)
                               for value, side, key in structures.label_table() if side in sides}}
    segmentation_node.SetAttribute(RESULT_ATTRIBUTE, json.dumps(record))
    return record


def remembered_result(segmentation_node) -> dict | None:
    """The record :func:`remember_result` left on a segmentation node, or ``None`` (no node, no OrbitSeg
    result, or an unreadable record)."""
    text = segmentation_node.GetAttribute(RESULT_ATTRIBUTE) if segmentation_node is not None else None
    try:
        record = json.loads(text) if text else None
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("fingerprints"), dict) else None


def _ct_digest(image: sitk.Image) -> str:
    """Eight hex digits identifying a CT by its voxels and grid: the same scan saved again gets the same
    case id, two scans that share a name do not."""
    digest = hashlib.sha256(ijk_to_lps(image).tobytes())
    digest.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(image)))
    return digest.hexdigest()[:8]


def save_training_case(volume_node, segmentation_node, site_folder: str | os.PathLike, *,
                       include_unchanged: bool = False) -> SavedCase:
    """Save a CT and its corrected OrbitSeg segmentation into a site folder as a training case.

    The segments that differ from what the model proposed (:func:`remember_result`) are the corrected
    ones; only they are saved unless ``include_unchanged`` (then every segment that names an OrbitSeg
    structure is). Writes ``<case>/ct.nrrd`` (the CT's voxels and exact grid, LPS), ``<case>/reference.seg.nrrd``
    (the saved segments on that grid, named as OrbitSeg names them; where saved segments overlap, the later
    structure in label order keeps the voxel) and the provenance through :func:`site_cases.add_case`. The case
    id is the CT's name and a digest of its voxels, so saving the same CT again replaces its case.

    :class:`OrbitSegError`, with nothing written, when the node holds no OrbitSeg result, was made on
    another CT, or (without ``include_unchanged``) no segment was corrected.
    """
    record = remembered_result(segmentation_node)
    if record is None:
        raise OrbitSegError(f"{node_name(segmentation_node)} holds no OrbitSeg result to compare the corrections "
                            "with: segment the CT with OrbitSeg, correct that segmentation, then save it")
    made_on = segmentation_node.GetNodeReference(segmentation_node.GetReferenceImageGeometryReferenceRole())
    if made_on is not None and volume_node is not None and made_on.GetID() != volume_node.GetID():
        raise OrbitSegError(f"{node_name(segmentation_node)} was made on the CT {node_name(made_on)}, not on "
                            f"{node_name(volume_node)}: choose that CT as the input")
    ct = volume_to_image(volume_node)
    labels = np.zeros(sitk.GetArrayViewFromImage(ct).shape, np.uint8)
    corrected, saved = [], []
    matched, _ = segments.match_segments(segmentation_node)
    for sid, side, key in sorted(matched, key=lambda m: structures.label_value(m[1], m[2])):
        mask = segments.segment_mask(segmentation_node, sid, volume_node)  # one at a time: a CT-sized array each
        changed = record["fingerprints"].get(segments.segment_id(side, key)) != fingerprint(mask)
        if changed:
            corrected.append((side, key))
        if changed or include_unchanged:
            labels[mask] = structures.label_value(side, key)
            saved.append((side, key))
    if not saved:
        raise OrbitSegError(f"no segment of {node_name(segmentation_node)} differs from what {record['model']} "
                            "proposed: correct the segments in Segment Editor first, or include the unchanged "
                            "segments to save the result as it is")
    reference = sitk.GetImageFromArray(labels)
    reference.CopyInformation(ct)

    case = f"{site_cases.case_id(volume_node.GetName())}-{_ct_digest(ct)}"
    folder = site_cases.case_dir(site_folder, case)
    write_image(ct, folder / site_cases.CT_NAME)
    write_seg_nrrd(reference, folder / site_cases.REFERENCE_NAME, only=set(saved))
    saved_names = [structures.segment_name(side, key) for side, key in saved]
    corrected_names = [structures.segment_name(side, key) for side, key in corrected]
    site_cases.add_case(site_folder, case, {
        "ct": volume_node.GetName(), "model": record["model"], "model_path": record.get("model_path", ""),
        "model_description": record.get("model_description", ""), "model_created": record.get("model_created", ""),
        "segmented": record.get("segmented", ""), "saved": _now(), "corrected": corrected_names,
        "segments": saved_names, "include_unchanged": include_unchanged})
    return SavedCase(case, folder, saved_names, corrected_names, len(site_cases.read_cases(site_folder)))
