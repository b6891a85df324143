"""The one segmentation pipeline behind the Slicer module, the command line and batch mode.

:func:`segment_image` works in memory (a CT image in, a labelmap on the CT's grid and volume rows
out); :func:`run_segmentation` adds reading the CT (and reference) and writing the outputs:

- ``DIR/segmentation.seg.nrrd``: one segment per side and structure, on the CT's voxel grid;
- ``DIR/labels.nii.gz``: the same as a labelmap (OrbitSeg label values);
- ``DIR/uncertainty.nii.gz``: the model's per-voxel uncertainty (uint8 percent, :func:`qa.uncertainty_map`);
- ``DIR/volumes.csv``: one row per side and structure with its QA flags (plus reference volume and
  overlap metrics);
- ``DIR/agreement.csv``: volume agreement per structure, when a reference was given;
- ``DIR/run.json``: model, device, scan, VOI, QA findings and timings of the run.

Every input is checked (:func:`qa.check_input`) and the orbits found before any model work, so a
refused input costs no model time and prints nothing before its one-line error. A scan outside the
acquisition range of the model in use (its card's :attr:`~models.ModelCard.acquisition_range`) is
segmented and flagged ``input`` (:func:`qa.input_findings`).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import __version__, qa, structures
from .errors import CancelledError, OrbitSegError
from .imageio import atomic_path, image_like, read_image, write_image
from .inference import InferenceOptions, select_device
from .metrics import compare_labelmaps, volumes_cm3
from .model_store import DEFAULT_MODEL, LoadedModel, load_model, resolve_model
from .postprocess import clean_classes, scores_to_classes
from .preprocess import grid_offsets, image_to_grid, model_grid, scores_to_crop, shifted_grid
from .protocol import (AGREEMENT_NAME, LABELS_NAME, OUTPUT_NAMES, RUN_NAME, SEGMENTATION_NAME, UNCERTAINTY_NAME,
                       VOLUMES_NAME)
from .segio import read_reference, write_labelmap, write_seg_nrrd
from .tables import AGREEMENT_COLUMNS, REFERENCE_COLUMNS, VOLUME_COLUMNS, agreement_rows, volume_rows, write_csv
from .voi import VOI, crop, paste, suggest_voi, validate_voi


ProgressFn = Callable[[float, str], None]
"""``progress(fraction 0..1, stage message)``."""


@dataclass
class SegmentationResult:
    """Everything one run produced.

    ``labelmap``: uint8 image on the input CT's exact grid (OrbitSeg label values);
    ``uncertainty``: uint8 image on the same grid (percent, 0 outside the eye boxes);
    ``rows``: volume rows (see :func:`tables.volume_rows`) with the QA columns (:func:`qa.annotate_rows`);
    ``findings``: every QA finding; ``acquisition``: the scan as :func:`qa.acquisition` records it;
    ``device``: ``cpu`` or ``cuda:N``, ``device_note`` the sentence on how it was chosen;
    ``options``: how the model was run; ``timings``: seconds per stage.
    """

    labelmap: sitk.Image
    uncertainty: sitk.Image
    sides: tuple[str, ...]
    voi: VOI
    rows: list[dict]
    findings: list[qa.Finding]
    acquisition: dict
    model_name: str
    model_card: dict
    device: str
    device_note: str
    options: InferenceOptions
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def implausible(self) -> list[qa.Finding]:
        """The findings that mark a structure's result as a failure."""
        return [f for f in self.findings if f.flag == "implausible"]

    @property
    def has_reference(self) -> bool:
        return bool(self.rows) and "iou" in self.rows[0]


class _Stages:
    """Accumulates seconds per named stage and reports progress."""

    def __init__(self, progress: ProgressFn | None, cancel: Callable[[], bool] | None):
        self.timings: dict[str, float] = {}
        self._progress = progress
        self._cancel = cancel

    @contextmanager
    def stage(self, name: str, fraction: float, message: str | None):
        """Time the block as ``name``; report ``message`` at ``fraction`` first (``None``: silently). An
        :class:`OrbitSegError` raised inside carries ``name`` as its ``stage``."""
        if self._cancel is not None and self._cancel():
            raise CancelledError("segmentation cancelled")
        if self._progress is not None and message is not None:
            self._progress(fraction, message)
        start = time.perf_counter()
        try:
            yield
        except OrbitSegError as exc:
            exc.stage = exc.stage or name
            raise
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def segment_image(image: sitk.Image, model: LoadedModel | str | os.PathLike = DEFAULT_MODEL, *,
                  voi: VOI | None = None, start_slice: int | None = None, end_slice: int | None = None,
                  side: str = "both", reference: sitk.Image | None = None, device: str = "auto",
                  options: InferenceOptions = InferenceOptions(), progress: ProgressFn | None = None,
                  cancel: Callable[[], bool] | None = None) -> SegmentationResult:
    """Segment both (or one) orbits of a CT image.

    ``voi`` defaults to :func:`voi.suggest_voi`; ``start_slice``/``end_slice`` (0-based, inclusive)
    override its axial range. ``model`` is a loaded model or a name/path (loaded on ``device`` with
    ``options``; a loaded model keeps the options it was loaded with). With ``options.grid_shifts`` > 1
    each eye is segmented on that many shifted model grids and the scores averaged on the CT grid.
    With ``reference`` (a labelmap on the CT's grid or a crop of it, placed by
    :func:`references.reference_on_grid`) the rows carry overlap metrics. ``cancel`` is
    polled between steps and raises :class:`CancelledError`. The scan-level ``input`` findings are
    measured against the acquisition range of ``model``'s card.
    """
    stages = _Stages(progress, cancel)
    sides = structures.sides_for(side)
    # refusals first, silently: nothing is printed before their one line
    with stages.stage("check input", 0.0, None):
        qa.check_input(image)
    with stages.stage("find orbits", 0.0, None):
        if voi is None:
            voi = suggest_voi(image)
        voi = validate_voi(image, voi.with_slices(start_slice, end_slice), sides)
    if not isinstance(model, LoadedModel):
        with stages.stage("load model", 0.0, None):  # silent too: a bad model or option is a refusal
            model = load_model(resolve_model(model), select_device(device), options)
    card = model.card
    scan_findings = qa.input_findings(image, card.acquisition_range)
    offsets = grid_offsets(model.predictor.options.grid_shifts)
    full = np.zeros(image.GetSize()[::-1], dtype=np.uint8)
    doubt = np.zeros_like(full)
    evidence = []
    for n, eye in enumerate(sides):
        share = 0.1 + 0.8 * n / len(sides)
        label = f"{eye} eye ({structures.SIDE_ABBREVIATION[eye]})"
        lo, hi = voi.eye_box(eye)
        with stages.stage("resample", share, f"Preparing the {label}"):
            region = crop(image, lo, hi)
            grid = model_grid(region, eye, card.spacing, card.size_multiple, card.inplane_size)
        native = None
        per_grid = 1.0 / (len(offsets) * len(sides))  # one grid's share of the progress bar's eye budget
        for k, offset in enumerate(offsets):
            part = share + 0.6 * k * per_grid
            of = f" (grid {k + 1} of {len(offsets)})" if len(offsets) > 1 else ""
            with stages.stage("resample", part, f"Preparing the {label}{of}"):
                shifted = shifted_grid(grid, offset)
                volume = image_to_grid(image, shifted, *card.window)
            with stages.stage("model", part + 0.1 * per_grid, f"Segmenting the {label} with {model.name}{of}"):
                scores = model.predictor.predict(volume, cancel)
            with stages.stage("resample", part + 0.5 * per_grid, f"Resampling the {label} to the CT grid{of}"):
                back = scores_to_crop(scores, shifted, region)
                del scores
                native = back if native is None else np.add(native, back, out=native)
        if len(offsets) > 1:
            native /= np.float32(len(offsets))
        with stages.stage("postprocess", share + 0.7 / len(sides), f"Cleaning up the {label}"):
            raw = scores_to_classes(native)
            classes = clean_classes(raw)
            evidence.append(qa.eye_evidence(eye, lo, hi, raw, classes, native))
            paste(doubt, qa.uncertainty_map(native), lo)
            del native, raw
            labels = np.where(classes > 0, classes + np.uint8(structures.SIDE_OFFSET[eye]), 0).astype(np.uint8)
            paste(full, labels, lo)
    with stages.stage("measure", 0.95, "Measuring volumes and checking the result"):
        labelmap = image_like(full, image)
        comparison = compare_labelmaps(labelmap, reference, sides) if reference is not None else None
        rows = volume_rows(volumes_cm3(labelmap), sides, comparison)
        findings = qa.assess(labelmap, rows, evidence, scan_findings)
        qa.annotate_rows(rows, findings, evidence)
    if progress is not None:
        progress(1.0, "Done")
    return SegmentationResult(labelmap, image_like(doubt, image), sides, voi, rows, findings, qa.acquisition(image),
                              model.name, card.to_dict(), model.device.name, model.device.note,
                              model.predictor.options, stages.timings)


def check_output_folder(out_dir: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (),
                        names: Iterable[str] = OUTPUT_NAMES, what: str = "outputs") -> None:
    """Raise :class:`OrbitSegError` (before any work) when ``out_dir`` is an existing file or cannot be
    created or written to, or when the files ``names`` written into it (``what``, for the message)
    would replace one of ``inputs`` (e.g. ``--out`` on a phantom case folder, whose ``labels.nii.gz`` is
    the reference). Creates the folder."""
    out = Path(out_dir)
    if not str(out_dir).strip():
        raise OrbitSegError("the output folder is empty; give a folder name")
    if out.exists() and not out.is_dir():
        raise OrbitSegError(f"the output folder {out} is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise OrbitSegError(f"cannot write to the output folder {out}: {exc.strerror or exc}; "
                            "choose a folder you can write to") from None
    targets = {(out / name).resolve() for name in names}
    clashes = sorted({str(p) for p in inputs if p is not None and Path(p).resolve() in targets})
    if clashes:
        raise OrbitSegError(f"{out}: choose another output folder: the {what} would replace the input "
                            f"{', '.join(clashes)}")


def write_outputs(result: SegmentationResult, out_dir: str | os.PathLike, source: str = "") -> dict[str, Path]:
    """Write a result's files into ``out_dir`` (each atomically); returns name → path. An
    ``agreement.csv`` left by an earlier run with a reference is removed when this one has none."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "segmentation": write_seg_nrrd(result.labelmap, out / SEGMENTATION_NAME, result.sides),
        "labels": write_labelmap(result.labelmap, out / LABELS_NAME),
        "uncertainty": write_image(result.uncertainty, out / UNCERTAINTY_NAME),
    }
    columns = VOLUME_COLUMNS + (REFERENCE_COLUMNS if result.has_reference else ())
    paths["volumes"] = write_csv(result.rows, out / VOLUMES_NAME, columns)
    if result.has_reference:
        paths["agreement"] = write_csv(agreement_rows(result.rows), out / AGREEMENT_NAME, AGREEMENT_COLUMNS)
    else:
        (out / AGREEMENT_NAME).unlink(missing_ok=True)
    run = {"orbitseg_version": __version__, "source": source, "model": result.model_name,
           "model_card": result.model_card, "device": result.device, "device_note": result.device_note,
           "inference_options": asdict(result.options), "sides": list(result.sides), "acquisition": result.acquisition,
           "voi": result.voi.to_dict(), "qa": [f.to_dict() for f in result.findings],
           "timings_s": {k: round(v, 4) for k, v in result.timings.items()}}
    with atomic_path(out / RUN_NAME) as tmp:
        tmp.write_text(json.dumps(run, indent=2, default=str), encoding="utf-8")
    paths["run"] = out / RUN_NAME
    return paths


def run_segmentation(ct_path: str | os.PathLike, out_dir: str | os.PathLike,
                     model: LoadedModel | str | os.PathLike = DEFAULT_MODEL, *,
                     reference_path: str | os.PathLike | None = None, voi: VOI | None = None,
                     start_slice: int | None = None, end_slice: int | None = None, side: str = "both",
                     device: str = "auto", options: InferenceOptions = InferenceOptions(),
                     progress: ProgressFn | None = None,
                     cancel: Callable[[], bool] | None = None) -> SegmentationResult:
    """Read a CT (and optional reference), segment it, and write the outputs into ``out_dir``
    (checked first: :func:`check_output_folder`)."""
    check_output_folder(out_dir, (ct_path, reference_path))
    start = time.perf_counter()
    image = read_image(ct_path)
    reference = read_reference(reference_path, image) if reference_path else None
    read_time = time.perf_counter() - start
    result = segment_image(image, model, voi=voi, start_slice=start_slice, end_slice=end_slice, side=side,
                           reference=reference, device=device, options=options, progress=progress, cancel=cancel)
    result.timings = {"read": read_time, **result.timings}
    start = time.perf_counter()
    write_outputs(result, out_dir, source=str(ct_path))
    result.timings["write"] = time.perf_counter() - start  # (run.json, written before, lacks this one)
    return result
