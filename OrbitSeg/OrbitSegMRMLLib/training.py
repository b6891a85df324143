"""Training from Slicer: study lists, the ``orbitseg train`` command line, the live loss plot, model registration.

Everything that depends on the training command's interface is in this file (:class:`TrainingJob`,
:data:`LOG_COLUMNS`, :func:`latest_checkpoint`), so it can follow that interface in one place:

- ``orbitseg train --studies STUDIES.csv | --phantom N --model sv-net|seq-unet --folds K --epochs E
  --batch-size B --lr LR --device D --out DIR --progress json``;
- ``DIR/training_log.csv`` gains a row (``epoch, fold, train_loss, val_loss, val_dice, seconds``)
  after every epoch; ``DIR/*.pt`` are checkpoints, each written atomically, so stopping the
  process at any time leaves the last good one.
"""
from __future__ import annotations

import csv
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from OrbitSegLib.errors import OrbitSegError

LOG_NAME = "training_log.csv"
LOG_COLUMNS = ("epoch", "fold", "train_loss", "val_loss", "val_dice", "seconds")
PLOTTED = (("train_loss", "Training loss"), ("val_loss", "Validation loss"), ("val_dice", "Validation Dice"))
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
REFERENCE_WORDS = ("reference", "seg", "segmentation", "label", "labels", "mask")
IMAGE_WORDS = ("ct", "image", "img", "0000")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class TrainingJob:
    """One ``orbitseg train`` run. Exactly one of ``studies`` (a study list) and ``phantom_cases`` is set."""

    out_dir: Path
    architecture: str
    folds: int
    epochs: int
    batch_size: int
    learning_rate: float
    device: str = "auto"
    studies: Path | None = None
    phantom_cases: int | None = None

    def __post_init__(self):
        if (self.studies is None) == (self.phantom_cases is None):
            raise OrbitSegError("choose the training data: a study list, a folder, or phantom cases")

    def arguments(self) -> list[str]:
        data = ["--studies", str(self.studies)] if self.studies is not None else ["--phantom", str(int(self.phantom_cases))]
        return ["train", *data, "--model", self.architecture, "--folds", str(int(self.folds)),
                "--epochs", str(int(self.epochs)), "--batch-size", str(int(self.batch_size)),
                "--lr", f"{self.learning_rate:g}", "--device", self.device, "--out", str(self.out_dir),
                "--progress", "json"]

    @property
    def log_path(self) -> Path:
        return self.out_dir / LOG_NAME


def _strip_suffix(name: str) -> tuple[str, str] | None:
    lower = name.lower()
    if lower.endswith(".seg.nrrd"):
        return name[: -len(".seg.nrrd")], "reference"
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)], "volume"
    return None


def _split_role(stem: str) -> tuple[str, str | None]:
    """``("case01", "reference")`` for ``case01-reference``, ``("case01", "image")`` for ``case01_CT``."""
    match = re.match(r"^(.*?)[-_. ]([A-Za-z0-9]+)$", stem)
    if match:
        word = match.group(2).lower()
        if word in REFERENCE_WORDS:
            return match.group(1), "reference"
        if word in IMAGE_WORDS:
            return match.group(1), "image"
    return stem, None


def studies_from_folder(folder: str | os.PathLike) -> list[dict]:
    """Pair CT and reference files in a folder into study rows ``{"id", "image", "reference"}``.

    A reference is a ``.seg.nrrd`` file or a volume whose name ends in ``-reference``, ``_seg``,
    ``-label`` (and similar); an image is any other volume (optionally ending in ``-CT``, ``_0000``).
    Files pair by the name left after removing those endings: ``case01-CT.nrrd`` +
    ``case01-reference.seg.nrrd``, or ``p7.nii.gz`` + ``p7_seg.nii.gz``. Unpaired files are an error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise OrbitSegError(f"{folder}: training data folder not found")
    images: dict[str, Path] = {}
    references: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        parsed = _strip_suffix(path.name) if path.is_file() else None
        if parsed is None:
            continue
        stem, kind = parsed
        study, role = _split_role(stem)
        if kind == "reference" and role is None:
            role = "reference"
        target = references if role == "reference" else images
        if study in target:
            raise OrbitSegError(f"{folder}: two files for study {study!r}: {target[study].name} and {path.name}")
        target[study] = path
    unpaired = sorted(set(images) ^ set(references))
    if unpaired:
        names = ", ".join((images.get(s) or references[s]).name for s in unpaired[:6])
        raise OrbitSegError(f"{folder}: {len(unpaired)} file(s) without a CT/reference partner: {names}")
    if not images:
        raise OrbitSegError(f"{folder}: no CT + reference pairs found (e.g. case01-CT.nrrd + case01-reference.seg.nrrd)")
    return [{"id": s, "image": str(images[s]), "reference": str(references[s])} for s in sorted(images)]


def write_study_list(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write study rows as a study list CSV (``id, image, reference``)."""
    from OrbitSegLib.tables import write_csv

    return write_csv(rows, path, ("id", "image", "reference"))


def read_training_log(path: str | os.PathLike) -> list[dict]:
    """Complete rows of a training log as numbers, each with ``step`` (its 0-based position).

    Rows that are incomplete (a file being written) are skipped; a missing file gives no rows.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            raw = list(csv.DictReader(handle))
    except FileNotFoundError:
        return []
    rows = []
    for item in raw:
        if any(item.get(name) is None for name in LOG_COLUMNS):  # a row cut short while being written
            continue
        try:
            row = {"epoch": int(float(item["epoch"])), "fold": int(float(item["fold"]))}
            for name in LOG_COLUMNS[2:]:
                text = item[name].strip()
                row[name] = float(text) if text else math.nan
        except (KeyError, TypeError, ValueError):
            continue
        rows.append({"step": len(rows), **row})
    return rows


def update_log_table(table_node, rows: list[dict]):
    """Show training log rows in a table node (the plot series read it)."""
    from .tablenodes import rows_to_table_node

    return rows_to_table_node(rows, table_node, ("step",) + LOG_COLUMNS)


def loss_chart(table_node, chart_node):
    """Make ``chart_node`` plot the losses and validation Dice of ``table_node`` against ``step``.

    Creates the plot series nodes once (in the table's scene) and returns the chart node.
    """
    import slicer

    scene = table_node.GetScene()
    existing = {chart_node.GetNthPlotSeriesNode(i).GetYColumnName(): chart_node.GetNthPlotSeriesNode(i)
                for i in range(chart_node.GetNumberOfPlotSeriesNodes())}
    for column, title in PLOTTED:
        series = existing.get(column)
        if series is None:
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{chart_node.GetName()} {title}")
            chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("step")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        series.SetUniqueColor()
    chart_node.SetTitle("OrbitSeg training (all folds, one point per epoch)")
    chart_node.SetXAxisTitle("epoch (counted over all folds)")
    chart_node.SetYAxisTitle("loss / Dice")
    return chart_node


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The most recently written ``*.pt`` checkpoint in a training output folder, or ``None``."""
    candidates = [p for p in Path(out_dir).glob("*.pt") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns) if candidates else None


def register_model(checkpoint: str | os.PathLike, name: str, overwrite: bool = False) -> Path:
    """Copy a checked checkpoint into the user models folder as ``<name>.pt``; returns the new path.

    The checkpoint's model card is validated first. ``name`` must be a plain file name and must not
    hide a bundled model; an existing user model of that name is replaced only with ``overwrite``.
    """
    from OrbitSegLib.imageio import atomic_path
    from OrbitSegLib.model_store import MODEL_SUFFIX, bundled_model_dirs, user_model_dir
    from OrbitSegLib.models.checkpoint import read_card

    if not MODEL_NAME.match(name or ""):
        raise OrbitSegError(f"model name {name!r} is not a plain name (letters, digits, '.', '_', '-')")
    if any((folder / f"{name}{MODEL_SUFFIX}").is_file() for folder in bundled_model_dirs()):
        raise OrbitSegError(f"model name {name!r} is taken by a bundled model; choose another name")
    read_card(checkpoint)
    target = user_model_dir() / f"{name}{MODEL_SUFFIX}"
    if target.exists() and not overwrite:
        raise OrbitSegError(f"a model named {name!r} already exists in {target.parent}")
    with atomic_path(target) as tmp:
        shutil.copyfile(checkpoint, tmp)
    return target
