"""Command lines for the background ``OrbitSegLib.cli`` process, and reading what it reports.

The Slicer modules never run a network in Slicer's own process: they start Slicer's Python
(``PythonSlicer``) on the OrbitSeg command line, read its JSON progress lines from stderr, and load
its output files when it exits. This module builds those command lines and parses the output; it
imports neither Slicer nor Qt, so it is tested directly.

Progress protocol (``--progress json``): one JSON object per stderr line,
``{"progress": 0.42, "message": "Segmenting the right eye (OD)"}``; a failure ends with the line
``orbitseg: error: <one line>`` and a non-zero exit status.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

BOOTSTRAP = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
             "from OrbitSegLib.cli import main; sys.exit(main())")
"""``python -c`` program: put the folder holding ``OrbitSegLib`` on the path, then run its CLI."""

ERROR_PREFIX = "orbitseg: error:"


def library_parent() -> Path:
    """The folder that holds the ``OrbitSegLib`` package (the module folder, in a checkout or installed)."""
    import OrbitSegLib

    return Path(OrbitSegLib.__file__).resolve().parent.parent


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
        return self.out_dir / "labels.nii.gz"

    @property
    def run_path(self) -> Path:
        return self.out_dir / "run.json"

    def read_run(self) -> dict:
        """The run record (model, device note, VOI, timings) the CLI wrote; ``{}`` when missing."""
        try:
            return json.loads(self.run_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}


@dataclass(frozen=True)
class Progress:
    fraction: float
    message: str


def parse_progress(line: str) -> Progress | None:
    """A progress report from one stderr line, or ``None`` for any other line."""
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


def error_message(stderr_lines: list[str], exit_code: int) -> str:
    """The user-facing reason a run failed: its ``orbitseg: error:`` line, else the last output lines."""
    for line in reversed(stderr_lines):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX):].strip()
    tail = [line for line in stderr_lines if line.strip() and parse_progress(line) is None][-3:]
    detail = " / ".join(line.strip() for line in tail)
    return f"the OrbitSeg process exited with status {exit_code}" + (f": {detail}" if detail else "")


def cpu_fallback(requested_device: str, device: str) -> bool:
    """True when the user asked for ``auto`` and the run did not get a GPU (``device``: ``run.json``'s
    ``device`` value, ``cpu`` or ``cuda:N``)."""
    return requested_device == "auto" and not device.startswith("cuda")
