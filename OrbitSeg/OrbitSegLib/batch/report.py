"""``DIR/report.html``: one self-contained page (inline CSS, plots as inline data URIs, no scripts and
no external resources) that opens offline in any browser.

Sections: run summary, failed studies, volume agreement with the reference (table, predicted-vs-
reference scatter and Bland–Altman plots per structure), volumes per study, right/left asymmetry per
study, and the overlay snapshots.
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
import time
from pathlib import Path

import numpy as np

from .. import structures
from ..imageio import atomic_path
from ..protocol import OVERLAY_NAME, REPORT_NAME
from .studies import Study
from .summary import BatchTables, wide_column

SIDE_COLOURS = {"right": "#1f77b4", "left": "#d62728"}
SIDE_MARKERS = {"right": "o", "left": "^"}

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:0;color:#1d2330;
background:#f4f6f9;font-size:14px;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 10px;padding-bottom:4px;border-bottom:2px solid #d5dbe5}
h3{font-size:15px;margin:20px 0 8px}p.meta{color:#566074;margin:2px 0}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{background:#fff;border-radius:8px;padding:10px 16px;min-width:120px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card b{display:block;font-size:22px}.card span{color:#566074;font-size:12px}
.card.bad b{color:#b3261e}.card.good b{color:#1b7f3b}
table{border-collapse:collapse;background:#fff;font-variant-numeric:tabular-nums;box-shadow:0 1px 2px rgba(0,0,0,.08)}
th,td{padding:4px 9px;border-bottom:1px solid #e6e9ef;text-align:right;white-space:nowrap}
th{background:#e9edf3;font-weight:600;white-space:normal;vertical-align:bottom}
table{font-size:13px}
td.t,th.t{text-align:left}.errors td{white-space:normal;max-width:560px}
tr:nth-child(even) td{background:#fafbfc}
.scroll{overflow-x:auto;max-width:100%}
.note{color:#566074;font-size:13px;max-width:900px}
img.plot{max-width:100%;background:#fff;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:14px}
.gallery figure{margin:0;background:#000;border-radius:6px;overflow:hidden}
.gallery img{width:100%;display:block}
.gallery figcaption{background:#fff;padding:4px 8px;font-size:12px;color:#384152}
.warn{background:#fff4e5;border-left:4px solid #f0a202;padding:8px 12px;margin:12px 0}
span.implausible{background:#fde7e4;color:#b3261e;text-decoration:line-through}
span.finding{font-weight:700}.review td{white-space:normal;max-width:640px}
"""


def write_report(out_dir: str | os.PathLike, studies: list[Study], tables: BatchTables, run_info: dict,
                 counts, interrupted: bool = False) -> Path:
    """Write ``out_dir/report.html`` atomically; returns its path."""
    out = Path(out_dir)
    body = [_header(run_info, counts, tables, interrupted)]
    review = _review_section(tables)
    if review:
        body.append(review)
    if tables.error_rows:
        body.append(_errors_section(tables.error_rows))
    if tables.has_reference:
        body.append(_agreement_section(tables))
    if tables.wide_rows:
        body.append(_volumes_section(tables))
        body.append(_asymmetry_section(tables))
        body.append(_gallery_section(out, studies, tables))
    body.append(_definitions())
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>OrbitSeg batch report</title><style>{_CSS}</style></head>\n<body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")
    path = out / REPORT_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ helpers

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _fmt(value, digits: int = 3, signed: bool = False) -> str:
    number = _float(value)
    if not math.isfinite(number):
        return "–"
    number = round(number, digits) + 0.0  # no "-0.0"
    return f"{number:+.{digits}f}" if signed else f"{number:.{digits}f}"


def _fmt_p(value) -> str:
    number = _float(value)
    if not math.isfinite(number):
        return "–"
    return "&lt;1e-4" if number < 1e-4 else f"{number:.2g}"


def _table(header: list[str], rows: list[list[str]], text_columns: int = 1, raw: bool = False) -> str:
    """An HTML table; the first ``text_columns`` are left-aligned; cells are escaped unless ``raw``."""
    cls = lambda i: ' class="t"' if i < text_columns else ""  # noqa: E731
    head = "".join(f"<th{cls(i)}>{h}</th>" for i, h in enumerate(header))
    lines = []
    for row in rows:
        cells = "".join(f"<td{cls(i)}>{c if raw else _e(c)}</td>" for i, c in enumerate(row))
        lines.append(f"<tr>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(lines)}</tbody></table></div>'


def _figure_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg")
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def preload_plotting() -> None:
    """Import the plotting library (about 0.3 s). The batch runs this in a background thread while its
    worker processes segment, so that the report does not wait for the import at the end."""
    _new_figure(1.0, 1.0)


def _new_figure(width: float, height: float):
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), layout="constrained")


def _display(key: str) -> str:
    s = structures.structure(key)
    return f"{s.display_name.capitalize()} ({s.abbreviation})"


# ----------------------------------------------------------------------------------------------- sections

def _header(run_info: dict, counts, tables: BatchTables, interrupted: bool) -> str:
    finished = counts.done + counts.skipped
    with_reference = len({r["id"] for r in tables.volume_rows if r.get("reference_volume_cm3") not in (None, "")})
    cards = [("studies in the list", counts.total, ""), ("finished", finished, "good"),
             ("failed", counts.failed, "bad" if counts.failed else ""),
             ("run now / reused", f"{counts.done} / {counts.skipped}", ""),
             ("with a reference", with_reference, "")]
    card_html = "".join(f'<div class="card {c}"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for k, v, c in cards)
    warn = ""
    if interrupted:
        warn = ('<div class="warn">The run was interrupted: this report covers the studies finished so far. '
                "Run the same command again to resume.</div>")
    return (f"<h1>OrbitSeg batch report</h1>"
            f"<p class=\"meta\">Study list <code>{_e(run_info['studies'])}</code></p>"
            f"<p class=\"meta\">Model <b>{_e(run_info['model'])}</b>: {_e(run_info['model_summary'])}</p>"
            f"<p class=\"meta\">{_e(run_info['device'])}; {_e(run_info['mode'])}; OrbitSeg "
            f"{_e(run_info['orbitseg_version'])}; report written {_e(time.strftime('%Y-%m-%d %H:%M'))}</p>"
            f"{warn}<div class=\"cards\">{card_html}</div>")


REVIEW_FLAGS = ("implausible", "uncertain", "input")
"""QA flags that put a structure into the report's "Needs review" section (``outside-normal`` is a
finding, shown in bold in the volumes table)."""


def _codes(row: dict) -> set[str]:
    return {c for c in (row.get("qa") or "").split(";") if c}


def _review_section(tables: BatchTables) -> str:
    """The structures whose QA flags say their volume should not be read as is, study by study."""
    flagged = [r for r in tables.volume_rows if _codes(r) & set(REVIEW_FLAGS)]
    if not flagged:
        return ""
    body = [[r["id"], r["segment"], ", ".join(c for c in REVIEW_FLAGS if c in _codes(r)), _fmt(r["volume_cm3"]),
             "; ".join(part for part in (r.get("qa_reasons") or "").split("; ") if not part.startswith("outside-normal"))]
            for r in flagged]
    studies = len({r["id"] for r in flagged})
    table = _table(["id", "structure", "flags", "volume cm³", "why"], body, text_columns=3)
    return (f"<h2>Needs review ({studies} {'study' if studies == 1 else 'studies'}, {len(flagged)} structures)</h2>"
            "<p class=\"note\">Check these before reading their volumes. <b>implausible</b>: the result is a "
            "failure (empty, too large, in pieces, cut off by the VOI, misplaced, or grossly asymmetric): "
            "do not report it. <b>uncertain</b>: the model disagrees with itself about the outline. "
            "<b>input</b>: the scan lies outside the acquisition range the model was trained on. Each code is "
            f"explained in OrbitSeg's docs/qa.md.</p><div class=\"review\">{table}</div>")


def _errors_section(rows: list[dict]) -> str:
    body = [[r["id"], r["stage"], r["reason"], r["image"]] for r in rows]
    table = _table(["id", "stage", "reason", "image"], body, text_columns=4)
    return (f"<h2>Failed studies ({len(rows)})</h2><p class=\"note\">Each failed study is one row of "
            "<code>errors.csv</code>; fix the input and run the same command again: finished studies are "
            f"skipped.</p><div class=\"errors\">{table}</div>")


def _agreement_section(tables: BatchTables) -> str:
    header = ["structure", "side", "n", "MAE cm³", "RMSE cm³", "Pearson R [95% CI]", "p",
              "relative error % mean [min, max]", "Bland–Altman bias [95% limits] cm³"]
    rows = []
    for r in tables.agreement_rows:
        side = "both" if r["side"] == "both" else f"{r['side']} ({structures.SIDE_ABBREVIATION[r['side']]})"
        relative = (f"{_fmt(r['relative_error_mean_pct'], 1, True)} [{_fmt(r['relative_error_min_pct'], 1, True)}, "
                    f"{_fmt(r['relative_error_max_pct'], 1, True)}]")
        bland_altman = (f"{_fmt(r['bland_altman_bias'], signed=True)} [{_fmt(r['bland_altman_lower'], signed=True)}, "
                        f"{_fmt(r['bland_altman_upper'], signed=True)}]")
        pearson = _fmt(r["pearson_r"])
        if math.isfinite(_float(r["pearson_r_ci_low"])):
            pearson += f" [{_fmt(r['pearson_r_ci_low'])}, {_fmt(r['pearson_r_ci_high'])}]"
        rows.append([_e(_display(r["structure"])) if r["side"] == "both" else "", _e(side), str(r["n"]),
                     _fmt(r["mae"]), _fmt(r["rmse"]), pearson, _fmt_p(r["pearson_p"]), relative, bland_altman])
    scatter, bland_altman = _agreement_plots(tables)
    return ("<h2>Agreement with the reference</h2>"
            "<p class=\"note\">Volumes of OrbitSeg against the reference segmentation, per structure over "
            "both sides and per side (n = study sides with a reference). Relative error is (OrbitSeg − "
            "reference) / reference.</p>"
            + _table(header, rows, text_columns=2, raw=True)
            + "<h3>OrbitSeg against reference volume</h3>"
            + f'<img class="plot" alt="Scatter plots of OrbitSeg against reference volumes" src="{scatter}">'
            + "<h3>Bland–Altman plots</h3><p class=\"note\">Difference (OrbitSeg − reference) against the mean of "
              "the two; solid line: bias, dashed lines: 95% limits of agreement.</p>"
            + f'<img class="plot" alt="Bland-Altman plots" src="{bland_altman}">')


def _pairs(tables: BatchTables, key: str, side: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for r in tables.volume_rows if r["structure"] == key and r["side"] == side
            and math.isfinite(_float(r.get("reference_volume_cm3")))]
    return (np.array([_float(r["volume_cm3"]) for r in rows]),
            np.array([_float(r["reference_volume_cm3"]) for r in rows]))


def _agreement_plots(tables: BatchTables) -> tuple[str, str]:
    pooled = {r["structure"]: r for r in tables.agreement_rows if r["side"] == "both"}
    keys = [s.key for s in structures.STRUCTURES]
    scatter, bland = _new_figure(11.5, 7.0), _new_figure(11.5, 7.0)
    scatter_axes, bland_axes = scatter.subplots(2, 3).ravel(), bland.subplots(2, 3).ravel()
    for ax_s, ax_b, key in zip(scatter_axes, bland_axes, keys):
        seen = []
        for side in structures.SIDES:
            pred, ref = _pairs(tables, key, side)
            if pred.size == 0:
                continue
            label = f"{side} ({structures.SIDE_ABBREVIATION[side]})"
            style = dict(color=SIDE_COLOURS[side], marker=SIDE_MARKERS[side], s=26, alpha=0.8, label=label,
                         edgecolors="white", linewidths=0.5)
            ax_s.scatter(ref, pred, **style)
            ax_b.scatter((pred + ref) / 2, pred - ref, **style)
            seen += [pred, ref]
        values = np.concatenate(seen) if seen else np.zeros(1)
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        pad = 0.1 * (hi - lo) or 0.1 * hi or 0.1
        lo, hi = max(0.0, lo - pad), hi + pad
        ax_s.plot([lo, hi], [lo, hi], color="#888", linestyle="--", linewidth=1)
        ax_s.set_xlim(lo, hi)
        ax_s.set_ylim(lo, hi)
        ax_s.set_aspect("equal")
        row = pooled.get(key, {})
        ax_s.set_title(f"{_display(key)}   R = {_fmt(row.get('pearson_r'))}", fontsize=10)
        ax_s.set_xlabel("reference cm³", fontsize=9)
        ax_s.set_ylabel("OrbitSeg cm³", fontsize=9)
        bias, lower, upper = (_float(row.get(k)) for k in ("bland_altman_bias", "bland_altman_lower",
                                                            "bland_altman_upper"))
        for value, style in ((bias, "-"), (lower, "--"), (upper, "--")):
            if math.isfinite(value):
                ax_b.axhline(value, color="#444", linestyle=style, linewidth=1)
        ax_b.axhline(0, color="#bbb", linewidth=0.8)
        ax_b.set_title(f"{_display(key)}   bias {_fmt(bias, signed=True)} cm³", fontsize=10)
        ax_b.set_xlabel("mean of OrbitSeg and reference cm³", fontsize=9)
        ax_b.set_ylabel("OrbitSeg − reference cm³", fontsize=9)
        for ax in (ax_s, ax_b):
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.25)
    scatter_axes[0].legend(fontsize=8, loc="upper left")
    bland_axes[0].legend(fontsize=8, loc="best")
    return _figure_uri(scatter), _figure_uri(bland)


def _extra_cells(row: dict, tables: BatchTables) -> list[str]:
    return [_e(row.get(c, "")) for c in tables.extra_columns]


def _volumes_section(tables: BatchTables) -> str:
    keys = [s for s in structures.STRUCTURES]
    header = ["id"] + [_e(c) for c in tables.extra_columns] + [
        f"{structures.SIDE_ABBREVIATION[side]} {s.abbreviation}" for side in structures.SIDES for s in keys]
    codes = {(r["id"], r["side"], r["structure"]): _codes(r) for r in tables.volume_rows}
    rows = []
    for wide in tables.wide_rows:
        rows.append([_e(wide["id"])] + _extra_cells(wide, tables)
                    + [_volume_cell(wide.get(wide_column(side, s.key)), codes.get((wide["id"], side, s.key), set()))
                       for side in structures.SIDES for s in keys])
    legend = ", ".join(f"{s.abbreviation} {s.display_name}" for s in keys)
    return ("<h2>Volumes per study (cm³)</h2>"
            f"<p class=\"note\">OD = right eye, OS = left eye; {legend}. <b>Bold</b>: outside the adult normal "
            "range (a finding); <span style=\"color:#b3261e;text-decoration:line-through\">struck out</span>: "
            "implausible (a failure, see Needs review). The same numbers are in "
            "<code>volumes_wide.csv</code> (one row per study) and <code>volumes.csv</code> (one row per "
            "study, side and structure, with the QA flags and the reference metrics).</p>"
            + _table(header, rows, text_columns=1 + len(tables.extra_columns), raw=True))


def _volume_cell(value, codes: set[str]) -> str:
    """A volume for the raw-HTML volumes table, marked by its QA codes."""
    cls = "implausible" if "implausible" in codes else "finding" if "outside-normal" in codes else ""
    text = _fmt(value)
    return f'<span class="{cls}">{text}</span>' if cls else text


def asymmetry_pct(right: float, left: float) -> float:
    """Right/left asymmetry in %: (right − left) / mean(right, left) × 100; NaN when both are 0."""
    mean = (right + left) / 2
    return 100.0 * (right - left) / mean if mean > 0 else math.nan


def _asymmetry_section(tables: BatchTables) -> str:
    keys = [s.key for s in structures.STRUCTURES]
    rows, values = [], {k: [] for k in keys}
    for wide in tables.wide_rows:
        if not all(wide.get(wide_column(side, k), "") != "" for side in structures.SIDES for k in keys):
            continue
        cells = []
        for k in keys:
            right, left = _float(wide[wide_column("right", k)]), _float(wide[wide_column("left", k)])
            pct = asymmetry_pct(right, left)
            values[k].append(pct)
            shade = min(abs(pct), 60.0) / 60.0 if math.isfinite(pct) else 0.0
            colour = f"rgba(214,39,40,{shade * 0.55:.2f})" if pct > 0 else f"rgba(31,119,180,{shade * 0.55:.2f})"
            text = _fmt(pct, 1, True)
            cells.append((colour, f'<span title="R {right:.3f} cm³, L {left:.3f} cm³">{text}</span>'))
        rows.append((wide, cells))
    if not rows:
        return ""
    header = "".join(f"<th>{_e(structures.structure(k).abbreviation)}</th>" for k in keys)
    extra_head = "".join(f'<th class="t">{_e(c)}</th>' for c in tables.extra_columns)
    body = []
    for wide, cells in rows:
        extras = "".join(f'<td class="t">{c}</td>' for c in _extra_cells(wide, tables))
        tds = "".join(f'<td style="background:{colour}">{cell}</td>' for colour, cell in cells)
        body.append(f'<tr><td class="t">{_e(wide["id"])}</td>{extras}{tds}</tr>')
    table = (f'<div class="scroll"><table><thead><tr><th class="t">id</th>{extra_head}{header}</tr></thead>'
             f'<tbody>{"".join(body)}</tbody></table></div>')
    return ("<h2>Right/left asymmetry</h2>"
            "<p class=\"note\">(right − left) / mean(right, left) in %, per study and structure: red where the "
            "right (OD) structure is larger, blue where the left (OS) is; hover a cell for both volumes. "
            "TAO often enlarges the muscles of one orbit more than the other.</p>"
            + f'<img class="plot" alt="Right/left asymmetry per structure" src="{_asymmetry_plot(values)}">'
            + table)


def _asymmetry_plot(values: dict[str, list[float]]) -> str:
    figure = _new_figure(11.5, 3.0)
    ax = figure.subplots()
    rng = np.random.default_rng(0)
    for i, (key, pcts) in enumerate(values.items()):
        pcts = np.array([p for p in pcts if math.isfinite(p)])
        if pcts.size == 0:
            continue
        ax.scatter(i + rng.uniform(-0.18, 0.18, pcts.size), pcts, s=22, alpha=0.75,
                   color=structures.structure(key).color, edgecolors="#333", linewidths=0.5)
        ax.plot([i - 0.3, i + 0.3], [np.median(pcts)] * 2, color="#222", linewidth=1.5)
    ax.axhline(0, color="#999", linewidth=0.8)
    ax.set_xticks(range(len(values)), [_display(k) for k in values], fontsize=9)
    ax.set_ylabel("(R − L) / mean  %", fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", alpha=0.25)
    return _figure_uri(figure)


def _gallery_section(out: Path, studies: list[Study], tables: BatchTables) -> str:
    finished = {r["id"] for r in tables.wide_rows}
    figures = []
    for study in studies:
        png = out / study.id / OVERLAY_NAME
        if study.id not in finished or not png.is_file():
            continue
        uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
        extras = " · ".join(_e(v) for v in study.extra.values() if v)
        caption = _e(study.id) + (f" · {extras}" if extras else "")
        figures.append(f'<figure><img alt="overlay of {_e(study.id)}" src="{uri}"><figcaption>{caption}'
                       "</figcaption></figure>")
    return ("<h2>Overlay snapshots</h2><p class=\"note\">Axial and coronal slices through each orbit with the "
            "segmentation (radiological convention: the patient's right on the left). Each is "
            "<code>&lt;id&gt;/overlay.png</code>; open <code>&lt;id&gt;/segmentation.seg.nrrd</code> with the CT "
            f"in 3D Slicer to review a study.</p><div class=\"gallery\">{''.join(figures)}</div>")


def _definitions() -> str:
    return ("<h2>Definitions</h2><p class=\"note\">Volume = voxel count × voxel volume (as Slicer's "
            "Segment Statistics). MAE and RMSE: mean absolute and root-mean-square difference to the reference "
            "in cm³; Pearson R with its two-sided p-value (n ≥ 3) and 95% confidence interval (Fisher's z, "
            "n ≥ 4); Bland–Altman bias = mean difference, "
            "95% limits = bias ± 1.96 SD. Per-study overlap metrics (IoU, Dice, volume similarity, "
            "sensitivity, specificity) are in <code>volumes.csv</code>.</p>")
