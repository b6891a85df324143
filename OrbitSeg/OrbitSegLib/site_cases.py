"""A site folder: the corrected cases a site collects to adapt a model to its scanner and its readers.

The one owner of the folder's layout, written by the Slicer panel (*Save as training case*) and read by
``orbitseg adapt`` (and, being a folder of case folders with ``ct.*`` and ``reference.seg.nrrd``, by
``orbitseg train --folder`` too)::

    SITE/studies.csv               id,image,reference: a study list (batch.studies) of every case
    SITE/<case id>/ct.nrrd          the CT as the radiologist saw it
    SITE/<case id>/reference.seg.nrrd   the corrected segmentation (segments named as OrbitSeg names them)
    SITE/<case id>/case.json        provenance: the model that proposed it, when, and which segments
                                    the radiologist corrected
    SITE/models/<name>.pt           a model adapted on these cases by the Training panel's Adapt (its
                                    work folder, protocol.adapt_work_dir, beside it)

A reference may hold only some structures (the ones corrected or checked): training leaves the
others out of the loss for that case (:func:`references.annotated_structures`).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .errors import OrbitSegError
from .imageio import atomic_path
from .tables import read_csv, write_csv

STUDIES_NAME = "studies.csv"
CT_NAME = "ct.nrrd"
REFERENCE_NAME = "reference.seg.nrrd"
CASE_NAME = "case.json"
MODELS_NAME = "models"
STUDY_COLUMNS = ("id", "image", "reference")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def study_list(path: str | os.PathLike) -> Path:
    """The study list of ``path``: the file itself, or a site folder's :data:`STUDIES_NAME`."""
    path = Path(path)
    if path.is_dir():
        listed = path / STUDIES_NAME
        if not listed.is_file():
            raise OrbitSegError(f"{path} holds no {STUDIES_NAME}: save corrected cases into it first "
                                f"(Save as training case), or give a study list with id, image, reference columns")
        return listed
    if not path.is_file():
        raise OrbitSegError(f"study list {path} not found")
    return path


def case_id(name: str) -> str:
    """A study id made from a node or file name: letters, digits, ``.``, ``_``, ``+``, ``-`` only."""
    cleaned = _UNSAFE.sub("_", name.strip()).strip("._+-")
    return cleaned or "case"


def case_dir(site: str | os.PathLike, case: str) -> Path:
    """The folder of case ``case`` in ``site`` (created), where the caller writes :data:`CT_NAME` and
    :data:`REFERENCE_NAME` before :func:`add_case`."""
    folder = Path(site) / case
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def model_path(site: str | os.PathLike, name: str) -> Path:
    """Where a model named ``name`` adapted on ``site``'s cases is written: ``SITE/models/<name>.pt`` (a
    folder without ``ct.*``, so ``orbitseg train --folder SITE`` passes it by)."""
    return Path(site) / MODELS_NAME / f"{name}.pt"


def add_case(site: str | os.PathLike, case: str, provenance: dict) -> dict:
    """Register a case whose files are in :func:`case_dir`: write its :data:`CASE_NAME` and add (or
    replace, for the same id) its row in the site's :data:`STUDIES_NAME`. Returns the row.

    ``provenance``: JSON-able facts, e.g. ``{"model": "sv-net", "model_created": ..., "segmented": ISO
    date, "saved": ISO date, "corrected": ["right superior rectus", ...], "segments": [...]}``.
    """
    site = Path(site)
    folder = site / case
    for name in (CT_NAME, REFERENCE_NAME):
        if not (folder / name).is_file():
            raise OrbitSegError(f"case {case}: {folder / name} was not written")
    with atomic_path(folder / CASE_NAME) as tmp:
        tmp.write_text(json.dumps({"id": case, **provenance}, indent=1), encoding="utf-8")
    row = {"id": case, "image": f"{case}/{CT_NAME}", "reference": f"{case}/{REFERENCE_NAME}"}
    listed = site / STUDIES_NAME
    rows = [r for r in read_csv(listed) if r.get("id") != case] if listed.is_file() else []
    write_csv(rows + [row], listed, STUDY_COLUMNS)
    return row


def read_cases(site: str | os.PathLike) -> list[dict]:
    """The site's cases in list order, each its :data:`CASE_NAME` record (``{"id": ...}`` when missing)."""
    site = Path(site)
    listed = site / STUDIES_NAME
    cases = []
    for row in read_csv(listed) if listed.is_file() else []:
        try:
            cases.append(json.loads((site / row["id"] / CASE_NAME).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            cases.append({"id": row["id"]})
    return cases
