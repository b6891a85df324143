"""Study lists for batch mode: parsing and validation, all problems reported at once.

A study list is a CSV (or TSV, by the ``.tsv``/``.tab`` suffix) with a header row:

- ``id`` (required): a folder name for the study's outputs (letters, digits, ``.``, ``_``, ``+``, ``-``);
- ``image`` (required): CT file or DICOM folder, relative to the list's folder or absolute;
- ``reference`` (optional): reference segmentation (``.seg.nrrd`` or labelmap) on the CT's grid;
- ``start_slice``, ``end_slice`` (optional): 0-based inclusive axial slices, empty = automatic;
- ``side`` (optional): ``both`` (default), ``right``/``OD`` or ``left``/``OS``.

Every other column is kept as is and carried into the output tables (e.g. a patient group or a visit
date). Whether the files exist is checked per study when it runs (a missing file fails that study
only); the list itself must be well formed before any work starts.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OrbitSegError
from ..protocol import BATCH_OUTPUTS
from ..tables import AGREEMENT_COLUMNS, REFERENCE_COLUMNS, VOLUME_COLUMNS, read_csv

REQUIRED_COLUMNS = ("id", "image")
OPTIONAL_COLUMNS = ("reference", "start_slice", "end_slice", "side")
RESERVED_COLUMNS = frozenset(("id",) + VOLUME_COLUMNS + REFERENCE_COLUMNS + AGREEMENT_COLUMNS)
"""Names an extra column may not take: they are columns of the output tables."""

SIDE_WORDS = {"": "both", "both": "both", "ou": "both", "right": "right", "od": "right", "r": "right",
              "left": "left", "os": "left", "l": "left"}
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclass(frozen=True)
class Study:
    """One row of a study list, with paths made absolute.

    ``row`` is the 1-based data row (the header is row 0); ``extra`` holds the list's other columns.
    """

    id: str
    image: Path
    reference: Path | None = None
    start_slice: int | None = None
    end_slice: int | None = None
    side: str = "both"
    extra: dict[str, str] = field(default_factory=dict)
    row: int = 0

    def fingerprint(self) -> dict:
        """What determines this study's result: its paths (with size and modification time) and options."""
        return {"image": _stamp(self.image), "reference": _stamp(self.reference) if self.reference else None,
                "start_slice": self.start_slice, "end_slice": self.end_slice, "side": self.side}


class StudyListError(OrbitSegError):
    """A study list with problems; ``problems`` lists them (one line each)."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{path}: {len(problems)} {noun} in the study list, nothing was run:\n  "
                         + "\n  ".join(problems))


def read_studies(path: str | os.PathLike) -> list[Study]:
    """Parse and validate a study list; raises :class:`StudyListError` listing every problem found."""
    path = Path(path)
    if not path.is_file():
        raise OrbitSegError(f"{path}: study list not found")
    try:
        rows = read_csv(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise OrbitSegError(f"{path}: cannot read the study list ({exc})") from None
    header = _header(path)
    problems = _header_problems(header, path)
    if problems:
        raise StudyListError(path, problems)
    if not rows:
        raise StudyListError(path, ["the list has a header but no studies"])
    columns = {name: name.strip().lower() for name in header if name is not None}
    id_column = next(name for name, low in columns.items() if low == "id")
    studies, seen = [], {}
    for number, raw in enumerate(rows, start=1):
        study, row_problems = _parse_row(raw, columns, number, path.parent)
        problems += row_problems
        study_id = (raw.get(id_column) or "").strip()  # also for a row with other problems
        if study_id.lower() in seen:
            problems.append(f"row {number}: duplicate id {study_id!r} (also row {seen[study_id.lower()]}; ids are "
                            "folder names and must differ, ignoring case)")
        elif study_id:
            seen[study_id.lower()] = number
        if study is not None:
            studies.append(study)
    if problems:
        raise StudyListError(path, problems)
    return studies


def _header(path: Path) -> list[str]:
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return next(csv.reader(handle, delimiter=delimiter), [])


def _header_problems(header: list[str], path: Path) -> list[str]:
    names = [h.strip().lower() for h in header]
    problems = []
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        hint = ""
        if len(header) == 1 and ("\t" in header[0] or ";" in header[0]):
            hint = " (the header is one column: use commas in a .csv file, tabs in a .tsv file)"
        problems.append(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}{hint}; "
                        f"the header is {', '.join(repr(h) for h in header) or 'empty'}")
    duplicated = sorted({n for n in names if n and names.count(n) > 1})
    if duplicated:
        problems.append(f"column{'s' if len(duplicated) > 1 else ''} {', '.join(duplicated)} appear more than once")
    clashes = [h.strip() for h, n in zip(header, names)
               if n in RESERVED_COLUMNS and n not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if clashes:
        problems.append(f"column{'s' if len(clashes) > 1 else ''} {', '.join(clashes)} would clash with the output "
                        "tables' columns; rename them")
    return problems


def _parse_row(raw: dict, columns: dict[str, str], number: int, base: Path) -> tuple[Study | None, list[str]]:
    """One study from a ``read_csv`` row (or None) and the row's problems."""
    problems = []
    if None in raw:
        problems.append(f"row {number}: {len(raw[None])} more value(s) than the header has columns")
    if any(value is None for key, value in raw.items() if key is not None):
        problems.append(f"row {number}: fewer values than the header has columns")
    values = {columns[k]: (v or "").strip() for k, v in raw.items() if k is not None}
    extra = {k.strip(): (v or "").strip() for k, v in raw.items()
             if k is not None and columns[k] not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS and k.strip()}
    study_id = values.get("id", "")
    label = f"row {number}" + (f" (id {study_id})" if study_id else "")
    if not study_id:
        problems.append(f"{label}: empty id")
    elif not _ID_PATTERN.fullmatch(study_id):
        problems.append(f"{label}: id {study_id!r} must start with a letter or digit and hold only letters, "
                        "digits, '.', '_', '+' or '-' (it names the study's output folder)")
    elif study_id.lower() in BATCH_OUTPUTS:
        problems.append(f"{label}: id {study_id!r} is the name of a batch output file; choose another")
    if not values.get("image"):
        problems.append(f"{label}: empty image path")
    slices = {}
    for name in ("start_slice", "end_slice"):
        slices[name], problem = _parse_slice(values.get(name, ""))
        if problem:
            problems.append(f"{label}: {name} {problem}")
    side = SIDE_WORDS.get(values.get("side", "").lower())
    if side is None:
        problems.append(f"{label}: side {values['side']!r} is not one of both, right (OD), left (OS)")
    if problems:
        return None, problems
    reference = values.get("reference", "")
    study = Study(study_id, _absolute(values["image"], base), _absolute(reference, base) if reference else None,
                  slices["start_slice"], slices["end_slice"], side, extra, number)
    return study, []


def _parse_slice(text: str) -> tuple[int | None, str | None]:
    """An optional slice index (``12`` or a spreadsheet's ``12.0``); returns (value, problem)."""
    if not text:
        return None, None
    try:
        value = float(text)
    except ValueError:
        return None, f"{text!r} is not an integer"
    if not value.is_integer():
        return None, f"{text!r} is not an integer"
    return int(value), None


def _absolute(text: str, base: Path) -> Path:
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else (base / path).resolve()


def _stamp(path: Path) -> str:
    """A path with its size and modification time, so a replaced file counts as a different input."""
    try:
        stat = path.stat()
    except OSError:
        return str(path)
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}" if path.is_file() else str(path)


def fingerprint_hash(*parts: dict) -> str:
    """A short stable hash of JSON-able dicts (a study's fingerprint and the batch configuration)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
