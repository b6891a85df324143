"""Training from Slicer: the ``orbitseg train`` command line, the live loss plot, model registration.

Everything that depends on the training command's interface is in this file, so it follows that
interface in one place (see ``OrbitSegLib.training.loop`` and ``orbitseg train --help``):

- ``orbitseg train --studies LIST | --folder DIR | --phantom N --model sv-net|seq-unet --name NAME
  --folds K --epochs E --batch-size B --lr LR --device D --out DIR [--init MODEL] [--ensemble]
  [--soft-targets] [--restart] [--workers N] --cache DIR/prepared --progress json``;
- ``DIR/training_log.csv`` gains a row per fold and epoch (``fold, epoch, train_loss, val_loss,
  val_dice, lr, seconds``); ``DIR/fold<i>/best.pt`` and ``last.pt`` are written atomically after
  every epoch (so stopping the process at any time keeps the last good checkpoint) and
  ``DIR/<name>.pt`` is the final model. Rerunning the same command resumes, and reads the prepared
  studies back from ``DIR/prepared`` instead of preparing them again.
"""
from __future__ import annotations

import csv
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from OrbitSegLib.errors import OrbitSegError

LOG_NAME = "training_log.csv"
REQUIRED_LOG_COLUMNS = ("fold", "epoch", "train_loss", "val_loss", "val_dice")
PLOTTED = (("train_loss", "Training loss"), ("val_loss", "Validation loss"), ("val_dice", "Validation Dice"))
DATA_SOURCES = ("studies", "folder", "phantom")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def default_prepare_workers() -> int:
    """Processes a panel job prepares its studies in: one per CPU core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class TrainingJob:
    """One ``orbitseg train`` run on one data ``source``: a study list, a folder of case folders, or phantom cases."""

    out_dir: Path
    name: str
    architecture: str
    source: str
    data: str
    folds: int
    epochs: int
    batch_size: int
    learning_rate: float
    device: str = "auto"
    restart: bool = False
    init: str = ""
    """Model (name or ``.pt`` path) whose weights the run starts from; empty: random weights."""
    ensemble: bool = False
    """Save the average of all folds' best models as the final model (needs at least 2 folds)."""
    soft_targets: bool = False
    """Train on partial-volume targets instead of the nearest reference labels."""
    prepare_workers: int = field(default_factory=default_prepare_workers)
    """Processes preparing the studies before the first epoch (``--workers``; the data are the same)."""

    def __post_init__(self):
        if self.source not in DATA_SOURCES:
            raise OrbitSegError(f"unknown training data source {self.source!r}; use one of {', '.join(DATA_SOURCES)}")
        if not str(self.data).strip():
            raise OrbitSegError({"studies": "choose a study list (CSV with id, image, reference columns)",
                                 "folder": "choose a folder of case folders (each with ct.* and reference.seg.nrrd)",
                                 "phantom": "give the number of phantom cases"}[self.source])
        check_model_name(self.name)
        if self.ensemble and self.folds < 2:
            raise OrbitSegError("averaging the folds needs at least 2 folds")
        if self.prepare_workers < 1:
            raise OrbitSegError(f"workers must be at least 1, got {self.prepare_workers}")

    def arguments(self) -> list[str]:
        args = ["train", f"--{self.source}", str(self.data), "--model", self.architecture, "--name", self.name,
                "--folds", str(int(self.folds)), "--epochs", str(int(self.epochs)),
                "--batch-size", str(int(self.batch_size)), "--lr", f"{self.learning_rate:g}",
                "--device", self.device, "--out", str(self.out_dir), "--workers", str(int(self.prepare_workers)),
                "--cache", str(self.cache_dir), "--progress", "json"]
        args += ["--init", self.init.strip()] if self.init.strip() else []
        return (args + (["--ensemble"] if self.ensemble else []) + (["--soft-targets"] if self.soft_targets else [])
                + (["--restart"] if self.restart else []))

    @property
    def cache_dir(self) -> Path:
        """Where the run keeps its prepared studies, so that a resumed run starts training at once (the
        cache is keyed by each study's files and modification times, so edited references are prepared
        again)."""
        return self.out_dir / "prepared"

    @property
    def log_path(self) -> Path:
        return self.out_dir / LOG_NAME

    @property
    def model_path(self) -> Path:
        """The final model the run writes when it completes."""
        return self.out_dir / f"{self.name}.pt"


def read_training_log(path: str | os.PathLike) -> list[dict]:
    """Complete rows of a training log as numbers, each with ``step`` (its 0-based position).

    Every column of the log is kept (as float; ``fold`` and ``epoch`` as int). Rows cut short while
    the file is being written are skipped; a missing file or one without the required columns
    (``fold, epoch, train_loss, val_loss, val_dice``) gives no rows.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            raw = list(reader)
            columns = list(reader.fieldnames or [])
    except FileNotFoundError:
        return []
    if not set(REQUIRED_LOG_COLUMNS) <= set(columns):
        return []
    rows = []
    for item in raw:
        if any(item.get(name) is None for name in columns):
            continue
        try:
            row = {"step": len(rows), "fold": int(float(item["fold"])), "epoch": int(float(item["epoch"]))}
            for name in columns:
                if name not in row:
                    text = item[name].strip()
                    row[name] = float(text) if text else math.nan
        except ValueError:
            continue
        rows.append(row)
    return rows


def update_log_table(table_node, rows: list[dict]):
    """Show training log rows in a table node (the plot series read it)."""
    from .tablenodes import rows_to_table_node

    return rows_to_table_node(rows, table_node)


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


def best_checkpoint_so_far(out_dir: str | os.PathLike) -> Path | None:
    """The most recent fold's ``best.pt`` (else ``last.pt``) in a training folder, or ``None``.

    What a cancelled run leaves: every checkpoint is complete, the newest best one is offered.
    """
    out = Path(out_dir)
    for pattern in ("fold*/best.pt", "fold*/last.pt"):
        candidates = [p for p in out.glob(pattern) if p.is_file()]
        if candidates:
            return max(candidates, key=lambda p: p.stat().st_mtime_ns)
    return None


def check_model_name(name: str) -> None:
    """Raise :class:`OrbitSegError` unless ``name`` can name a user model: a plain file name that does
    not hide a bundled model (checked before training starts, not only when the model is added)."""
    from OrbitSegLib.model_store import MODEL_SUFFIX, bundled_model_dirs

    if not MODEL_NAME.match(name or ""):
        raise OrbitSegError(f"model name {name!r} is not a plain name (letters, digits, '.', '_', '-')")
    if any((folder / f"{name}{MODEL_SUFFIX}").is_file() for folder in bundled_model_dirs()):
        raise OrbitSegError(f"model name {name!r} is taken by a bundled model; choose another name")


def register_model(checkpoint: str | os.PathLike, name: str, overwrite: bool = False) -> Path:
    """Copy a checked checkpoint into the user models folder as ``<name>.pt``; returns the new path.

    The checkpoint's model card is validated first. ``name`` must be a plain file name and must not
    hide a bundled model; an existing user model of that name is replaced only with ``overwrite``.
    """
    from OrbitSegLib.imageio import atomic_path
    from OrbitSegLib.model_store import MODEL_SUFFIX, user_model_dir
    from OrbitSegLib.models.checkpoint import read_card

    check_model_name(name)
    read_card(checkpoint)
    target = user_model_dir() / f"{name}{MODEL_SUFFIX}"
    if target.exists() and not overwrite:
        raise OrbitSegError(f"a model named {name!r} already exists in {target.parent}")
    with atomic_path(target) as tmp:
        shutil.copyfile(checkpoint, tmp)
    return target
