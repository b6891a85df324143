"""Batch tables, rebuilt from every finished study's own ``volumes.csv``.

- ``volumes.csv``: long format, one row per study, side and structure: ``id``, the study list's extra
  columns, then the per-study volume columns (:data:`tables.VOLUME_COLUMNS`, plus
  :data:`tables.REFERENCE_COLUMNS` when any study has a reference);
- ``volumes_wide.csv``: one row per study, one ``<side>_<structure>_cm3`` column per side and structure;
- ``agreement.csv``: :func:`tables.agreement_rows` over all studies with a reference;
- ``errors.csv``: ``id, image, stage, reason`` of every study that failed in this run.

Values are copied as the per-study tables wrote them, so the batch tables and the per-study tables
always agree to the digit.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .. import structures
from ..protocol import AGREEMENT_NAME, ERRORS_NAME, VOLUMES_NAME, WIDE_VOLUMES_NAME
from ..tables import AGREEMENT_COLUMNS, REFERENCE_COLUMNS, VOLUME_COLUMNS, agreement_rows, read_csv, write_csv
from .studies import Study

ERROR_COLUMNS = ("id", "image", "stage", "reason")


def wide_column(side: str, key: str) -> str:
    """Column name of one side and structure in ``volumes_wide.csv``, e.g. ``right_superior_rectus_cm3``."""
    return f"{side}_{key}_cm3"


@dataclass
class BatchTables:
    """The batch's rows (as strings, as written) and the columns of the long table."""

    volume_rows: list[dict]
    wide_rows: list[dict]
    agreement_rows: list[dict]
    error_rows: list[dict]
    extra_columns: list[str]
    has_reference: bool


def collect(out_dir: str | os.PathLike, studies: list[Study], finished: set[str], errors: list[dict]) -> BatchTables:
    """Rows of every finished study (in study-list order) read back from ``DIR/<id>/volumes.csv``."""
    out = Path(out_dir)
    extra_columns = list(dict.fromkeys(k for s in studies for k in s.extra))
    long_rows, wide_rows = [], []
    for study in studies:
        if study.id not in finished:
            continue
        head = {"id": study.id, **{c: study.extra.get(c, "") for c in extra_columns}}
        rows = read_csv(out / study.id / VOLUMES_NAME)
        long_rows += [{**head, **row} for row in rows]
        wide = dict(head)
        wide.update({wide_column(r["side"], r["structure"]): r["volume_cm3"] for r in rows})
        wide_rows.append(wide)
    has_reference = any(r.get("reference_volume_cm3") not in (None, "") for r in long_rows)
    agreement = agreement_rows(long_rows) if has_reference else []
    return BatchTables(long_rows, wide_rows, agreement, errors, extra_columns, has_reference)


def write_tables(out_dir: str | os.PathLike, tables: BatchTables) -> dict[str, Path]:
    """Write the batch tables atomically; an ``agreement.csv`` left from an earlier run without references goes."""
    out = Path(out_dir)
    head = ["id"] + tables.extra_columns
    long_columns = head + list(VOLUME_COLUMNS) + (list(REFERENCE_COLUMNS) if tables.has_reference else [])
    wide_columns = head + [wide_column(side, key) for _, side, key in structures.label_table()]
    paths = {
        "volumes": write_csv(tables.volume_rows, out / VOLUMES_NAME, long_columns),
        "volumes_wide": write_csv(tables.wide_rows, out / WIDE_VOLUMES_NAME, wide_columns),
        "errors": write_csv(tables.error_rows, out / ERRORS_NAME, ERROR_COLUMNS),
    }
    if tables.agreement_rows:
        paths["agreement"] = write_csv(tables.agreement_rows, out / AGREEMENT_NAME, AGREEMENT_COLUMNS)
    else:
        (out / AGREEMENT_NAME).unlink(missing_ok=True)
    return paths
