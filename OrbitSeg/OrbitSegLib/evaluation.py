"""Accuracy summaries of a model over studies with references, beside the papers' published numbers.

Input: long-format volume rows, one per study, side and structure, holding ``volume_cm3``,
``reference_volume_cm3`` and the overlap metrics (what batch mode writes to ``volumes.csv``).
Output: per structure and side the mean ± SD of IoU, Dice, VS, sensitivity and specificity, with 95 %
confidence intervals of the mean IoU and Dice; per structure the volume agreement (MAE, RMSE, Pearson R
with its 95 % confidence interval); and a markdown report. On phantom cases, which
know each structure's exact volume, also how the model's and the reference labelmap's volumes agree
with the exact ones.
"""
from __future__ import annotations

import inspect
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from . import structures
from .errors import OrbitSegError
from .imageio import atomic_path
from .metrics import OVERLAP_METRICS
from .tables import agreement_rows, read_csv, write_csv

PAPER_SV_NET = {
    "iou": {"superior_rectus": 0.760, "lateral_rectus": 0.818, "medial_rectus": 0.848, "inferior_rectus": 0.844,
            "optic_nerve": 0.834},
    "mae": {"superior_rectus": 0.085, "lateral_rectus": 0.080, "medial_rectus": 0.068, "inferior_rectus": 0.077,
            "optic_nerve": 0.031},
    "rmse": {"superior_rectus": 0.145, "lateral_rectus": 0.155, "medial_rectus": 0.146, "inferior_rectus": 0.178,
             "optic_nerve": 0.153},
    "pearson_r": {"superior_rectus": 0.986, "lateral_rectus": 0.990, "medial_rectus": 0.993, "inferior_rectus": 0.994,
                  "optic_nerve": 0.997},
}
"""SV-Net (Xu et al. 2020), 9 test subjects: IoU, volume MAE/RMSE (cm³) and Pearson R per structure."""

PAPER_SEQ_UNET = {"dice": {"globe": 0.86, "muscles": 0.54, "optic_nerve": 0.34, "all": 0.79},
                  "vs": {"globe": 0.83, "muscles": 0.65, "optic_nerve": 0.80}}
"""SEQ-UNET (Chung et al. 2022), 4-fold CV on 46 scans: Dice and VS for eyeball, all muscles, nerve."""

MUSCLES = ("superior_rectus", "inferior_rectus", "medial_rectus", "lateral_rectus")

CI_METRICS = ("iou", "dice")
"""Overlap metrics whose mean gets a 95 % confidence interval (:func:`study_bootstrap_ci`)."""

BOOTSTRAP_RESAMPLES = 4999


def _value(row: dict, metric: str) -> float | None:
    """``row[metric]`` as a float, or None where it is missing, empty or not finite."""
    try:
        value = float(row[metric])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _values(rows: Iterable[dict], metric: str) -> np.ndarray:
    return np.array([v for v in (_value(r, metric) for r in rows) if v is not None], dtype=float)


def _study_id(row: dict) -> str:
    return str(row.get("id", row.get("study", "")))


def _ratio_of_sums(sums: np.ndarray, counts: np.ndarray, axis: int = -1) -> np.ndarray:
    return sums.sum(axis=axis) / counts.sum(axis=axis)


def _bootstrap_takes_rng() -> bool:
    """Whether ``scipy.stats.bootstrap`` has the ``rng`` argument (SciPy 1.15 and newer)."""
    from scipy import stats

    return "rng" in inspect.signature(stats.bootstrap).parameters


def study_bootstrap_ci(rows: Iterable[dict], metric: str, confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval (low, high) of the mean of ``metric`` over ``rows``: a BCa bootstrap over
    studies (SciPy, :data:`BOOTSTRAP_RESAMPLES` resamples, a fixed seed, so reruns agree).

    A study's rows (its two eyes) are resampled together, since they share one scan, patient and
    protocol and are not independent; the statistic is the mean over the rows of the resampled
    studies, i.e. the same mean the summary reports. (NaN, NaN) with fewer than 3 studies.
    """
    per_study: dict[str, list[float]] = {}
    for r in rows:
        value = _value(r, metric)
        if value is not None:
            per_study.setdefault(_study_id(r), []).append(value)
    if len(per_study) < 3:
        return math.nan, math.nan
    sums = np.array([sum(v) for v in per_study.values()])
    counts = np.array([len(v) for v in per_study.values()], dtype=float)
    if np.ptp(sums / counts) == 0:  # every study alike: no spread to resample
        mean = float(sums.sum() / counts.sum())
        return mean, mean
    from scipy import stats  # here, not at the top: it costs every process ~0.4 s to import

    seed = np.random.default_rng(0)  # SciPy < 1.15 (e.g. Slicer's) takes it as random_state: the same draws
    result = stats.bootstrap((sums, counts), _ratio_of_sums, paired=True, vectorized=True,
                             n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=confidence, method="BCa",
                             **({"rng": seed} if _bootstrap_takes_rng() else {"random_state": seed}))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def overlap_summary(rows: Sequence[dict]) -> list[dict]:
    """Mean and SD of each overlap metric per structure and side (``side = "both"`` pools the sides),
    and the 95 % confidence interval of the mean of each of :data:`CI_METRICS`
    (``{metric}_ci_low``/``_ci_high``, :func:`study_bootstrap_ci`)."""
    summary = []
    for s in structures.STRUCTURES:
        for side in ("both",) + structures.SIDES:
            chosen = [r for r in rows if r["structure"] == s.key and side in ("both", r["side"])]
            if not chosen:
                continue
            row = {"structure": s.key, "side": side, "n": len(chosen)}
            for metric in OVERLAP_METRICS:
                values = _values(chosen, metric)
                row[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
                row[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            for metric in CI_METRICS:
                row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = study_bootstrap_ci(chosen, metric)
            summary.append(row)
    return summary


def _tao_eye_rows(rows: Sequence[dict]) -> list[dict]:
    """One row per eye with all five TAO structures' IoU: its study id and their mean (``tao_iou``)."""
    eyes: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        value = _value(r, "iou") if r["structure"] in structures.TAO_KEYS else None
        if value is not None:
            eyes.setdefault((_study_id(r), r["side"]), []).append(value)
    return [{"id": study, "tao_iou": float(np.mean(v))} for (study, _side), v in eyes.items()
            if len(v) == len(structures.TAO_KEYS)]


def headline(rows: Sequence[dict]) -> dict[str, float]:
    """Headline numbers: mean IoU over the five TAO structures with the 95 % confidence interval of
    the eyes' five-structure mean (:func:`study_bootstrap_ci`; eyes with all five), globe IoU, worst
    TAO-structure IoU, mean muscle Dice, optic nerve Dice, and the worst per-structure Pearson R and
    MAE (pooled sides)."""
    def mean_of(metric: str, keys: Sequence[str]) -> float:
        values = _values([r for r in rows if r["structure"] in keys], metric)
        return float(values.mean()) if len(values) else math.nan

    per_structure_iou = [mean_of("iou", (k,)) for k in structures.TAO_KEYS]
    agreement = [a for a in agreement_rows(rows) if a["side"] == "both"]
    tao_ci = study_bootstrap_ci(_tao_eye_rows(rows), "tao_iou")
    return {
        "tao_mean_iou": float(np.mean(per_structure_iou)),
        "tao_mean_iou_ci_low": tao_ci[0],
        "tao_mean_iou_ci_high": tao_ci[1],
        "tao_min_iou": float(np.min(per_structure_iou)),
        "globe_iou": mean_of("iou", ("globe",)),
        "muscle_dice": mean_of("dice", MUSCLES),
        "optic_nerve_dice": mean_of("dice", ("optic_nerve",)),
        "globe_dice": mean_of("dice", ("globe",)),
        "min_pearson_r": _extreme(min, [a["pearson_r"] for a in agreement]),
        "max_mae": _extreme(max, [a["mae"] for a in agreement]),
    }


def _extreme(pick, values) -> float:
    """``pick`` (min or max) of the finite values, NaN when there are none (e.g. R of fewer than 3 studies)."""
    finite = [float(v) for v in values if math.isfinite(v)]
    return pick(finite) if finite else math.nan


def _f(value: float, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_report(title: str, rows: Sequence[dict], model_note: str = "") -> str:
    """A markdown section: overlap per structure and side, volume agreement, and the papers' numbers."""
    lines = [f"### {title}", ""]
    if model_note:
        lines += [model_note, ""]
    studies = len({_study_id(r) for r in rows})
    lines += [f"{studies} held-out studies, {len(rows)} structure rows. 95% confidence intervals: of the mean "
              "IoU by a bootstrap over studies (both eyes of a study resampled together), of Pearson R by "
              "Fisher's z over eyes.", "",
              "| structure | side | n | IoU | IoU 95% CI | Dice | VS | sensitivity | specificity |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in overlap_summary(rows):
        cells = [f"{_f(r[f'{m}_mean'])} ± {_f(r[f'{m}_sd'])}" if m != "specificity" else
                 f"{_f(r[f'{m}_mean'], 5)}" for m in OVERLAP_METRICS]
        cells.insert(OVERLAP_METRICS.index("iou") + 1, f"{_f(r['iou_ci_low'])} … {_f(r['iou_ci_high'])}")
        lines.append(f"| {structures.structure(r['structure']).display_name} | {r['side']} | {r['n']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "| structure | n | MAE cm³ | RMSE cm³ | Pearson R | R 95% CI | mean rel. error % | BA bias cm³ | "
                  "BA 95% limits cm³ |",
              "|---|---|---|---|---|---|---|---|---|"]
    for a in agreement_rows(rows):
        if a["side"] != "both":
            continue
        lines.append(f"| {structures.structure(a['structure']).display_name} | {a['n']} | {_f(a['mae'])} | "
                     f"{_f(a['rmse'])} | {_f(a['pearson_r'], 4)} | "
                     f"{_f(a['pearson_r_ci_low'], 3)} … {_f(a['pearson_r_ci_high'], 3)} | "
                     f"{_f(a['relative_error_mean_pct'], 1)} | "
                     f"{_f(a['bland_altman_bias'])} | {_f(a['bland_altman_lower'])} … {_f(a['bland_altman_upper'])} |")
    h = headline(rows)
    lines += ["", f"Headline: TAO-structure mean IoU {_f(h['tao_mean_iou'])} (95% CI {_f(h['tao_mean_iou_ci_low'])}"
                  f"–{_f(h['tao_mean_iou_ci_high'])}; lowest structure {_f(h['tao_min_iou'])}), "
                  f"globe IoU {_f(h['globe_iou'])}, muscle Dice {_f(h['muscle_dice'])}, optic nerve Dice "
                  f"{_f(h['optic_nerve_dice'])}, lowest volume Pearson R {_f(h['min_pearson_r'], 4)}, "
                  f"largest volume MAE {_f(h['max_mae'])} cm³.", ""]
    return "\n".join(lines)


def exact_volume_agreement(rows: Sequence[dict], exact: dict[str, dict[str, dict[str, float]]]) -> list[dict]:
    """Volume agreement with the phantom's exact volumes, per structure (sides pooled).

    ``rows`` are volume rows (``id``, ``side``, ``structure``, ``volume_cm3``, ``reference_volume_cm3``);
    ``exact`` is :func:`phantom.exact_volumes`' ``{id: {side: {structure: cm³}}}``. Rows of studies
    not in ``exact`` are skipped. Returns one dict per structure: ``n`` and the MAE (cm³) and Pearson R
    of the model's volumes (``model_*``) and of the reference labelmap's (``reference_*``) against the
    exact volumes. The reference's own numbers bound what agreement with the reference can mean: a
    labelmap counts whole voxels, so it measures a structure only as well as its voxels resolve it.
    """
    chosen = [r for r in rows if r.get("id") in exact and _value(r, "reference_volume_cm3") is not None]
    table: dict[str, dict] = {}  # structure key -> row, in agreement_rows' structure order
    for who, column in (("model", "volume_cm3"), ("reference", "reference_volume_cm3")):
        against = [{"structure": r["structure"], "side": r["side"], "volume_cm3": r[column],
                    "reference_volume_cm3": exact[r["id"]][r["side"]][r["structure"]]} for r in chosen]
        for a in agreement_rows(against):
            if a["side"] == "both":
                row = table.setdefault(a["structure"], {"structure": a["structure"], "n": a["n"]})
                row[f"{who}_mae"], row[f"{who}_pearson_r"] = a["mae"], a["pearson_r"]
    return list(table.values())


def exact_volume_report(table: Sequence[dict]) -> str:
    """Markdown for :func:`exact_volume_agreement`'s table."""
    lines = ["#### Against the phantom's exact volumes", "",
             "The reference labelmap is itself a measurement: a voxel is labelled when the structure fills at "
             "least half of it. Its agreement with the exact volumes (from the sub-voxel occupancy) is what "
             "agreement with the reference can be read against.", "",
             "| structure | n | model: MAE cm³ | model: Pearson R | reference: MAE cm³ | reference: Pearson R |",
             "|---|---|---|---|---|---|"]
    for t in table:
        lines.append(f"| {structures.structure(t['structure']).display_name} | {t['n']} | {_f(t['model_mae'])} | "
                     f"{_f(t['model_pearson_r'], 4)} | {_f(t['reference_mae'])} | {_f(t['reference_pearson_r'], 4)} |")
    return "\n".join(lines + [""])


def papers_table() -> str:
    """The papers' published numbers as markdown, for side-by-side reading."""
    lines = ["| structure | SV-Net IoU | SV-Net MAE cm³ | SV-Net RMSE cm³ | SV-Net R |", "|---|---|---|---|---|"]
    for key in structures.TAO_KEYS:
        lines.append(f"| {structures.structure(key).display_name} | {PAPER_SV_NET['iou'][key]:.3f} | "
                     f"{PAPER_SV_NET['mae'][key]:.3f} | {PAPER_SV_NET['rmse'][key]:.3f} | "
                     f"{PAPER_SV_NET['pearson_r'][key]:.3f} |")
    lines += ["", "| SEQ-UNET (paper) | eyeball | extraocular muscles | optic nerve | all |", "|---|---|---|---|---|",
              f"| Dice | {PAPER_SEQ_UNET['dice']['globe']} | {PAPER_SEQ_UNET['dice']['muscles']} | "
              f"{PAPER_SEQ_UNET['dice']['optic_nerve']} | {PAPER_SEQ_UNET['dice']['all']} |",
              f"| VS | {PAPER_SEQ_UNET['vs']['globe']} | {PAPER_SEQ_UNET['vs']['muscles']} | "
              f"{PAPER_SEQ_UNET['vs']['optic_nerve']} | – |"]
    return "\n".join(lines)


def qa_numbers(rows: list[dict]) -> dict:
    """How the QA flags (:mod:`qa`) of evaluated volume rows relate to accuracy: eyes with an
    ``implausible`` flag, structures flagged ``uncertain`` and the median IoU of flagged and other
    structures, and the Spearman correlation of the uncertainty score with IoU."""
    from scipy import stats

    def codes(row: dict) -> set[str]:
        return set((row.get("qa") or "").split(";"))

    eyes = {(r["id"], r["side"]) for r in rows}
    failed = {(r["id"], r["side"]) for r in rows if "implausible" in codes(r)}
    scored = [r for r in rows if _value(r, "iou") is not None and _value(r, "uncertainty") is not None]
    flagged = [_value(r, "iou") for r in scored if "uncertain" in codes(r)]
    others = [_value(r, "iou") for r in scored if "uncertain" not in codes(r)]
    rho = stats.spearmanr([_value(r, "uncertainty") for r in scored], [_value(r, "iou") for r in scored]).statistic \
        if len(scored) > 2 else math.nan
    return {"eyes": len(eyes), "eyes_implausible": len(failed), "structures": len(scored),
            "structures_uncertain": len(flagged),
            "median_iou_uncertain": float(np.median(flagged)) if flagged else None,
            "median_iou_not_uncertain": float(np.median(others)) if others else None,
            "spearman_uncertainty_iou": None if math.isnan(rho) else float(rho)}


def qa_report(rows: list[dict]) -> str:
    """The QA section of ``accuracy.md`` (:func:`qa_numbers`)."""
    n = qa_numbers(rows)
    median = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    rho = "–" if n["spearman_uncertainty_iou"] is None else f"{n['spearman_uncertainty_iou']:.2f}"
    return ("## QA flags (docs/qa.md)\n\n"
            f"- Eyes with an `implausible` structure: {n['eyes_implausible']} of {n['eyes']}.\n"
            f"- Structures flagged `uncertain`: {n['structures_uncertain']} of {n['structures']}; median IoU "
            f"{median(n['median_iou_uncertain'])} (others {median(n['median_iou_not_uncertain'])}).\n"
            f"- Spearman correlation of the uncertainty score with IoU: {rho}.\n")


def phantom_studies(folder: str | os.PathLike, cases: int, seed: int, anatomy: str = "classic",
                    world: str = "default") -> Path:
    """The study list of ``cases`` phantom cases of ``seed`` (anatomy model and scanner world as in
    :func:`phantom.generate_case`) in ``folder``, generated unless those very cases are already there."""
    from .phantom import write_dataset
    from .phantom_settings import case_id

    studies = Path(folder) / "studies.csv"
    wanted = [case_id(seed, i, anatomy, world) for i in range(cases)]
    if studies.is_file() and [row["id"] for row in read_csv(studies)] == wanted:
        return studies
    return write_dataset(folder, cases, seed, anatomy=anatomy, world=world)


def evaluate(studies: str | os.PathLike, out_dir: str | os.PathLike, config, title: str, progress=None) -> dict:
    """Run a model over studies with references (batch mode) and summarise its accuracy.

    ``config`` is a :class:`batch.BatchConfig`. Writes the batch outputs into ``out_dir/results`` and
    ``out_dir/accuracy.md``, ``out_dir/overlap_summary.csv`` and ``out_dir/headline.json``, and for
    phantom cases ``out_dir/exact_volumes.csv`` (:func:`exact_volume_agreement`); returns the headline
    numbers (as in ``headline.json``: None where a number is undefined, e.g. an interval of 2 studies).
    """
    from .batch import read_studies, run_batch
    from .phantom import exact_volumes

    listed = read_studies(studies)
    if not any(s.reference for s in listed):
        raise OrbitSegError(f"no study in {studies} has a reference segmentation: give a 'reference' column")
    out = Path(out_dir)
    summary = run_batch(studies, out / "results", config, progress=progress)
    rows = [r for r in read_csv(summary.paths["volumes"]) if r.get("reference_volume_cm3", "") != ""]
    if not rows:
        raise OrbitSegError(f"no study with a reference was segmented; see {summary.paths['errors']}")
    numbers = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in headline(rows).items()}
    numbers["studies"] = len({r["id"] for r in rows})
    numbers["failed_studies"] = summary.counts.failed
    write_csv(overlap_summary(rows), out / "overlap_summary.csv")
    report = markdown_report(title, rows) + "\n" + qa_report(rows)
    numbers["qa"] = qa_numbers(rows)
    exact = exact_volume_agreement(rows, exact_volumes(listed))
    if exact:
        write_csv(exact, out / "exact_volumes.csv")
        report += "\n" + exact_volume_report(exact)
    with atomic_path(out / "accuracy.md") as tmp:
        tmp.write_text(report, encoding="utf-8")
    with atomic_path(out / "headline.json") as tmp:
        tmp.write_text(json.dumps(numbers, indent=2), encoding="utf-8")
    return numbers
