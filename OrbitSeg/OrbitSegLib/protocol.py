"""The protocol between a parent process (the Slicer panels) and the ``orbitseg`` command line.

This module is the one owner of everything both sides must agree on:

- the **output names** a run writes (:data:`OUTPUT_NAMES`, :data:`BATCH_OUTPUTS`, :data:`TRAINING_LOG_NAME`);
- the **job descriptions**, :class:`SegmentationJob` and :class:`TrainingJob`, whose ``arguments()``
  are the ``orbitseg`` argv (``Testing/test_protocol.py`` parses them with ``cli.build_parser``), and
  :func:`cli_command`, the full command line that runs them with another Python (``PythonSlicer``);
- the **progress lines** (``--progress json``): one JSON object per stderr line,
  ``{"progress": 0.42, "message": "Segmenting the right eye (OD)"}`` (batch adds ``done``, ``failed``,
  ``skipped``, ``total``), written by :func:`progress_line` and read by :func:`parse_progress`;
- the **error line**: a failure ends with ``orbitseg: error: <one line>`` (:func:`error_line`) and a
  non-zero exit status; :func:`error_message` reads the reason back.

No Slicer, Qt or torch imports: the panels, the command line and the tests all import it.
"""
from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import OrbitSegError

# --- output names -----------------------------------------------------------------------------------

SEGMENTATION_NAME = "segmentation.seg.nrrd"
LABELS_NAME = "labels.nii.gz"
UNCERTAINTY_NAME = "uncertainty.nii.gz"
VOLUMES_NAME = "volumes.csv"
AGREEMENT_NAME = "agreement.csv"
RUN_NAME = "run.json"
OUTPUT_NAMES = (SEGMENTATION_NAME, LABELS_NAME, UNCERTAINTY_NAME, VOLUMES_NAME, AGREEMENT_NAME, RUN_NAME)
"""The files ``orbitseg segment`` (``pipeline.write_outputs``) writes into its output folder
(``agreement.csv`` only with a reference)."""

OVERLAY_NAME = "overlay.png"
MARKER_NAME = "batch.json"
"""Per-study files of a batch, beside :data:`OUTPUT_NAMES`: the overlay and the completion marker (written last)."""
WIDE_VOLUMES_NAME = "volumes_wide.csv"
ERRORS_NAME = "errors.csv"
REPORT_NAME = "report.html"
BATCH_LOG_NAME = "batch.log"
BATCH_OUTPUTS = (VOLUMES_NAME, WIDE_VOLUMES_NAME, AGREEMENT_NAME, ERRORS_NAME, REPORT_NAME, BATCH_LOG_NAME)
"""Files ``orbitseg batch`` writes into its output folder (no study id may take these names)."""

TRAINING_LOG_NAME = "training_log.csv"
"""``orbitseg train``'s log: a row per fold and epoch (:data:`TRAINING_LOG_COLUMNS`, then ``lr``, ``seconds``)."""
TRAINING_LOG_COLUMNS = ("fold", "epoch", "train_loss", "val_loss", "val_dice")
TRAINING_CACHE_NAME = "prepared"
"""The folder of a training job's prepared studies (``--cache``), so that a resumed run starts at once."""

# --- errors -----------------------------------------------------------------------------------------

ERROR_PREFIX = "orbitseg: error:"


def error_line(message: str) -> str:
    """The last stderr line of a failed run, e.g. ``orbitseg: error: model 'x' not found``."""
    return f"{ERROR_PREFIX} {message}"


def error_message(stderr_lines: list[str], exit_code: int) -> str:
    """The user-facing reason a run failed: its :func:`error_line`, else the last output lines."""
    for line in reversed(stderr_lines):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX):].strip()
    tail = [line for line in stderr_lines if line.strip() and parse_progress(line) is None][-3:]
    detail = " / ".join(line.strip() for line in tail)
    return f"the OrbitSeg process exited with status {exit_code}" + (f": {detail}" if detail else "")


# --- progress ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Progress:
    """One progress report: ``fraction`` 0..1 and the stage ``message``."""

    fraction: float
    message: str


def progress_line(fraction: float, message: str, **counts: int) -> str:
    """One JSON progress line (without the newline); ``counts`` are extra integer fields (batch)."""
    return json.dumps({"progress": round(fraction, 4), "message": message, **counts})


def parse_progress(line: str) -> Progress | None:
    """A progress report from one stderr line, or ``None`` for any other line (fraction clamped to 0..1)."""
    line = line.strip()
    if not (line.startswith("{") and line.endswith("}")):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or "progress" not in data:
        return None
    try:
        fraction = min(max(float(data["progress"]), 0.0), 1.0)
    except (TypeError, ValueError):
        return None
    return Progress(fraction, str(data.get("message", "")))


@dataclass
class LineSplitter:
    """Turns chunks of process output into complete lines (a chunk may end mid-line)."""

    pending: str = ""
    lines: list[str] = field(default_factory=list)

    def feed(self, text: str) -> list[str]:
        """Add a chunk; returns the lines it completed (without line endings)."""
        self.pending += text.replace("\r\n", "\n").replace("\r", "\n")
        *complete, self.pending = self.pending.split("\n")
        self.lines.extend(complete)
        return complete

    def flush(self) -> list[str]:
        """The last unterminated line, if any (call when the process has ended)."""
        rest, self.pending = self.pending, ""
        if rest:
            self.lines.append(rest)
            return [rest]
        return []


# --- command lines ----------------------------------------------------------------------------------

BOOTSTRAP = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
             "from OrbitSegLib.cli import main; sys.exit(main())")
"""``python -c`` program: put the folder holding ``OrbitSegLib`` on the path, then run its CLI."""


def library_parent() -> Path:
    """The folder that holds the ``OrbitSegLib`` package (the module folder, in a checkout or installed)."""
    return Path(__file__).resolve().parent.parent


def cli_command(python: str | os.PathLike, arguments: list[str], library: str | os.PathLike | None = None) -> list[str]:
    """The full command line running ``orbitseg <arguments>`` with ``python``."""
    return [str(python), "-c", BOOTSTRAP, str(library or library_parent()), *[str(a) for a in arguments]]


@dataclass(frozen=True)
class SegmentationJob:
    """One ``orbitseg segment`` run: inputs written by the Slicer logic, outputs in ``out_dir``.

    ``start``/``end``: user slices (None: from the VOI or automatic); ``voi_path``: a VOI JSON file
    with both eye boxes (None: the CLI suggests the VOI itself); ``grid_shifts``: model grids averaged
    (``--grid-shifts``; 1 = off).
    """

    ct_path: Path
    out_dir: Path
    model: str
    side: str = "both"
    device: str = "auto"
    voi_path: Path | None = None
    start: int | None = None
    end: int | None = None
    grid_shifts: int = 1

    def arguments(self) -> list[str]:
        args = ["segment", str(self.ct_path), "--out", str(self.out_dir), "--model", self.model,
                "--side", self.side, "--device", self.device, "--progress", "json"]
        if self.voi_path is not None:
            args += ["--voi", str(self.voi_path)]
        if self.start is not None:
            args += ["--start", str(int(self.start))]
        if self.end is not None:
            args += ["--end", str(int(self.end))]
        if self.grid_shifts != 1:
            args += ["--grid-shifts", str(int(self.grid_shifts))]
        return args

    @property
    def labels_path(self) -> Path:
        return self.out_dir / LABELS_NAME

    @property
    def run_path(self) -> Path:
        return self.out_dir / RUN_NAME

    @property
    def volumes_path(self) -> Path:
        return self.out_dir / VOLUMES_NAME

    def read_run(self) -> dict:
        """The run record (model, device note, VOI, timings) the CLI wrote; ``{}`` when missing."""
        try:
            return json.loads(self.run_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}


def new_job_dir(parent: str | os.PathLike) -> Path:
    """A new, empty job folder in ``parent``, named after the time it was made (``20261204-185021-k3j9_x``):
    unique even for jobs started in the same second."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=parent))


def cpu_fallback(requested_device: str, device: str) -> bool:
    """True when the user asked for ``auto`` and the run did not get a GPU (``device``: ``run.json``'s
    ``device`` value, ``cpu`` or ``cuda:N``)."""
    return requested_device == "auto" and not device.startswith("cuda")


@dataclass(frozen=True)
class DeviceQuery:
    """``orbitseg device``: the device a run with ``--device device`` would get, printed as one stdout
    line (``inference.select_device``'s note, e.g. "GPU: ..." or "No CUDA GPU available ..."); asked
    in a background process so that the asking process never initialises CUDA itself."""

    device: str = "auto"

    def arguments(self) -> list[str]:
        return ["device", "--device", self.device]


DATA_SOURCES = ("studies", "folder", "phantom")


def default_prepare_workers() -> int:
    """Processes a panel job prepares its studies in: one per CPU core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class TrainingJob:
    """One ``orbitseg train`` run on one data ``source``: a study list, a folder of case folders, or phantom cases.

    ``DIR/training_log.csv`` gains a row per fold and epoch; ``DIR/fold<i>/best.pt`` and ``last.pt``
    are written atomically after every epoch (so stopping the process keeps the last good checkpoint)
    and ``DIR/<name>.pt`` is the final model. Rerunning the same job resumes, reading the prepared
    studies back from ``DIR/prepared``.
    """

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
        from .model_store import check_model_name

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
    def work_dir(self) -> Path:
        """The folder of the run's log and checkpoints: ``out_dir`` (as :attr:`AdaptJob.work_dir`)."""
        return self.out_dir

    @property
    def cache_dir(self) -> Path:
        """Where the run keeps its prepared studies (keyed by each study's files and modification times,
        so edited references are prepared again)."""
        return self.out_dir / TRAINING_CACHE_NAME

    @property
    def log_path(self) -> Path:
        return self.out_dir / TRAINING_LOG_NAME

    @property
    def model_path(self) -> Path:
        """The final model the run writes when it completes."""
        return self.out_dir / f"{self.name}.pt"


def adapted_model_path(model_path: str | os.PathLike) -> Path:
    """``orbitseg adapt``'s ``--out`` as a path, checked: it must name a ``.pt`` file."""
    model_path = Path(model_path)
    if model_path.suffix != ".pt":
        raise OrbitSegError(f"the adapted model must be a .pt file, got {model_path}")
    return model_path


def adapt_work_dir(model_path: str | os.PathLike) -> Path:
    """Where ``orbitseg adapt --out MODEL.pt`` keeps its work beside the model: ``MODEL-adapt/`` with the
    checkpoints, :data:`TRAINING_LOG_NAME` and the prepared cases; rerunning the same command resumes there."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}-adapt")


@dataclass(frozen=True)
class AdaptJob:
    """One ``orbitseg adapt`` run: fine-tune ``init`` (a model name or ``.pt`` path) on the corrected cases
    of ``site`` (a site folder, :mod:`site_cases`, or a study list) into ``model_path``, with the
    command's defaults for everything else. Its work folder is :func:`adapt_work_dir`."""

    site: Path
    model_path: Path
    init: str = "sv-net"
    device: str = "auto"

    def __post_init__(self):
        from .model_store import check_model_name

        check_model_name(adapted_model_path(self.model_path).stem)

    def arguments(self) -> list[str]:
        return ["adapt", str(self.site), "--out", str(self.model_path), "--init", self.init,
                "--device", self.device, "--progress", "json"]

    @property
    def work_dir(self) -> Path:
        return adapt_work_dir(self.model_path)

    @property
    def log_path(self) -> Path:
        return self.work_dir / TRAINING_LOG_NAME


def read_training_log(path: str | os.PathLike) -> list[dict]:
    """Complete rows of a training log as numbers, each with ``step`` (its 0-based position).

    Every column of the log is kept (as float; ``fold`` and ``epoch`` as int). Rows cut short while
    the file is being written are skipped; a missing file or one without the columns
    :data:`TRAINING_LOG_COLUMNS` gives no rows.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            raw = list(reader)
            columns = list(reader.fieldnames or [])
    except FileNotFoundError:
        return []
    if not set(TRAINING_LOG_COLUMNS) <= set(columns):
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
