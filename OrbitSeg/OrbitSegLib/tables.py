"""Result tables: volume rows, agreement rows, CSV writing (atomic) and a plain-text table for terminals."""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import structures
from .imageio import atomic_path
from .metrics import REFERENCE_METRICS, agreement
from .qa import QA_COLUMNS

VOLUME_COLUMNS = ("side", "structure", "segment", "label_value", "volume_cm3") + QA_COLUMNS
REFERENCE_COLUMNS = REFERENCE_METRICS
AGREEMENT_COLUMNS = ("structure", "side", "n", "mae", "rmse", "pearson_r", "pearson_p", "pearson_r_ci_low",
                     "pearson_r_ci_high", "relative_error_mean_pct", "relative_error_min_pct", "relative_error_max_pct",
                     "bland_altman_bias", "bland_altman_lower", "bland_altman_upper")


def volume_rows(volumes: dict[tuple[str, str], float], sides: Sequence[str],
                comparison: list[dict] | None = None) -> list[dict]:
    """One row per side and structure: names, label value, volume (cm³), and reference metrics if given.

    ``comparison`` holds :func:`metrics.compare_labelmaps` rows; their reference metrics are NaN for a
    structure the reference does not annotate (an empty cell in :func:`write_csv`).
    """
    by_key = {(r["side"], r["structure"]): r for r in comparison or []}
    rows = []
    for value, side, key in structures.label_table():
        if side not in sides:
            continue
        row = {"side": side, "structure": key, "segment": structures.segment_name(side, key),
               "label_value": value, "volume_cm3": volumes[(side, key)]}
        if comparison is not None:
            row.update({c: by_key[(side, key)][c] for c in REFERENCE_COLUMNS})
        rows.append(row)
    return rows


def agreement_rows(rows: Iterable[dict]) -> list[dict]:
    """Agreement statistics per structure, pooled over sides (``side = "both"``) and per side.

    ``rows`` are volume rows holding ``volume_cm3`` and ``reference_volume_cm3`` (any number of studies).
    """
    rows = [r for r in rows if _finite(r.get("reference_volume_cm3"))]
    out = []
    for s in structures.STRUCTURES:
        for side in ("both",) + structures.SIDES:
            chosen = [r for r in rows if r["structure"] == s.key and side in ("both", r["side"])]
            if not chosen:
                continue
            stats = agreement([float(r["volume_cm3"]) for r in chosen], [float(r["reference_volume_cm3"]) for r in chosen])
            out.append({"structure": s.key, "side": side, **stats})
    return out


def _finite(value) -> bool:
    try:
        return value is not None and value != "" and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _format(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_csv(rows: Sequence[dict], path: str | os.PathLike, columns: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV atomically; columns default to the union of keys in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({c: _format(row.get(c, "")) for c in columns})
    return Path(path)


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Read a CSV (or TSV, by suffix) into dict rows of strings."""
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def _cell(value, spec: str = ".3f") -> str:
    """A number in format ``spec``, or '-' where it is undefined or missing (a structure the reference lacks)."""
    return format(value, spec) if _finite(value) else "-"


def format_volume_table(rows: Sequence[dict]) -> str:
    """A fixed-width text table of volume rows for the terminal: volume, normal range and QA flag codes
    per row (and the reference columns when present); :func:`qa.format_findings` gives the reasons."""
    has_ref = any("reference_volume_cm3" in r for r in rows)
    header = f"{'segment':<26}{'volume cm3':>11}{'normal':>12}"
    if has_ref:
        header += f"{'ref cm3':>10}{'diff cm3':>10}{'IoU':>7}{'Dice':>7}"
    header += "  QA"
    lines = [header, "-" * len(header)]
    for r in rows:
        line = f"{r['segment']:<26}{r['volume_cm3']:>11.3f}{r.get('normal_range_cm3', ''):>12}"
        if has_ref:
            line += (f"{_cell(r['reference_volume_cm3']):>10}{_cell(r['difference_cm3'], '+.3f'):>10}"
                     f"{_cell(r['iou']):>7}{_cell(r['dice']):>7}")
        lines.append(f"{line}  {r.get('qa', '')}".rstrip())
    return "\n".join(lines)
