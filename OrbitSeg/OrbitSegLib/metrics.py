"""Volumes, overlap metrics against a reference, and agreement statistics across studies.

Definitions (REFERENCE.md): TP/FP/FN/TN count voxels of one structure;
IoU = TP/(TP+FP+FN), Dice = 2TP/(2TP+FP+FN), VS = 1 − |FN−FP|/(2TP+FP+FN), SN = TP/(TP+FN),
SP = TN/(TN+FP) with TN counted over the whole image grid.
Volume = voxel count × voxel volume (mm³) / 1000 → cm³, as Slicer's SegmentStatistics ``volume_cm3``.

A reference labelmap may record which structures it annotates (:func:`references.mark_annotated`, done by
:func:`segio.read_reference`); a structure it does not annotate has no reference values (NaN), rather than
a reference volume of 0 that would count as a real measurement.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from . import structures
from .imageio import voxel_volume_mm3
from .references import annotated_structures, reference_on_grid

log = logging.getLogger(__name__)

OVERLAP_METRICS = ("iou", "dice", "vs", "sensitivity", "specificity")
REFERENCE_METRICS = ("reference_volume_cm3", "difference_cm3", "relative_error_pct") + OVERLAP_METRICS
"""Keys of a :func:`compare_labelmaps` row that come from the reference (NaN for a structure it lacks)."""


def label_counts(labelmap: np.ndarray) -> np.ndarray:
    """Voxel count per label value 0..12 of a uint8 labelmap array (any shape)."""
    return np.bincount(labelmap.ravel(), minlength=len(structures.label_table()) + 1)


def volumes_cm3(labelmap: sitk.Image) -> dict[tuple[str, str], float]:
    """Volume in cm³ of every side and structure of an OrbitSeg labelmap image."""
    counts = label_counts(sitk.GetArrayViewFromImage(labelmap))
    voxel_cm3 = voxel_volume_mm3(labelmap) / 1000.0
    return {(side, key): float(counts[value]) * voxel_cm3 for value, side, key in structures.label_table()}


def overlap(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Overlap metrics of two boolean masks of the same shape.

    Ratios whose denominator is zero (both masks empty) are NaN, except VS (1.0) and SP.
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(ref)) - tp
    tn = pred.size - tp - fp - fn
    return _overlap_from_counts(tp, fp, fn, tn)


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def _overlap_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    return {
        "iou": _ratio(tp, tp + fp + fn),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "vs": 1.0 - _ratio(abs(fn - fp), 2 * tp + fp + fn) if (tp + fp + fn) else 1.0,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }


def compare_labelmaps(pred: sitk.Image, ref: sitk.Image, sides: Sequence[str] = structures.SIDES) -> list[dict]:
    """Per side and structure: predicted and reference volume, difference and overlap metrics.

    ``ref`` is placed on ``pred``'s grid by :func:`references.reference_on_grid` (a reference on another
    lattice is an error, never interpolated). Returns one dict per row with keys ``side, structure, volume_cm3`` and
    :data:`REFERENCE_METRICS` (volumes in cm³, relative error in %); for a structure the reference does not
    annotate (:func:`references.annotated_structures`) the reference metrics are NaN, and a warning names them.
    """
    ref = reference_on_grid(pred, ref)
    annotated = annotated_structures(ref)
    missing = [structures.segment_name(side, key) for _, side, key in structures.label_table()
               if side in sides and (side, key) not in annotated]
    if missing:
        log.warning("the reference segmentation lacks %s: their reference volume and overlap metrics are left "
                    "empty", ", ".join(missing))
    p = sitk.GetArrayViewFromImage(pred)
    r = sitk.GetArrayViewFromImage(ref)
    joint = _joint_histogram(p, r, len(structures.label_table()) + 1)
    voxel_cm3 = voxel_volume_mm3(pred) / 1000.0
    total = p.size
    rows = []
    for value, side, key in structures.label_table():
        if side not in sides:
            continue
        pred_count = int(joint[value].sum())
        volume = pred_count * voxel_cm3
        row = {"side": side, "structure": key, "volume_cm3": volume}
        if (side, key) in annotated:
            tp = int(joint[value, value])
            ref_count = int(joint[:, value].sum())
            fp, fn = pred_count - tp, ref_count - tp
            ref_volume = ref_count * voxel_cm3
            row.update({"reference_volume_cm3": ref_volume, "difference_cm3": volume - ref_volume,
                        "relative_error_pct": _ratio(100.0 * (volume - ref_volume), ref_volume)})
            row.update(_overlap_from_counts(tp, fp, fn, total - tp - fp - fn))
        else:
            row.update(dict.fromkeys(REFERENCE_METRICS, math.nan))
        rows.append(row)
    return rows


def _joint_histogram(pred: np.ndarray, ref: np.ndarray, n_labels: int, slab: int = 16) -> np.ndarray:
    """``[n_labels, n_labels]`` counts of (pred, ref) label pairs, computed slab by slab to bound memory."""
    joint = np.zeros(n_labels * n_labels, dtype=np.int64)
    for start in range(0, pred.shape[0], slab):
        pairs = pred[start:start + slab].astype(np.uint16) * n_labels + ref[start:start + slab]
        joint += np.bincount(pairs.ravel(), minlength=n_labels * n_labels)
    return joint.reshape(n_labels, n_labels)


def agreement(predicted: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """Agreement of predicted vs reference volumes across studies (cm³).

    Returns n, MAE, RMSE, Pearson R and its p-value (NaN for n < 3 or constant data) with its 95 %
    confidence interval (Fisher's z; NaN for n < 4), relative error (pred − ref)/ref in % as
    mean/min/max, and Bland–Altman bias and 95% limits (bias ± 1.96·SD, SD with n − 1).
    """
    pred = np.asarray(predicted, dtype=float)
    ref = np.asarray(reference, dtype=float)
    if pred.shape != ref.shape:
        raise ValueError("predicted and reference volumes differ in length")
    n = int(pred.size)
    result = {key: math.nan for key in ("mae", "rmse", "pearson_r", "pearson_p", "pearson_r_ci_low",
                                        "pearson_r_ci_high", "relative_error_mean_pct",
                                        "relative_error_min_pct", "relative_error_max_pct", "bland_altman_bias",
                                        "bland_altman_lower", "bland_altman_upper")}
    result["n"] = n
    if n == 0:
        return result
    diff = pred - ref
    result["mae"] = float(np.mean(np.abs(diff)))
    result["rmse"] = float(np.sqrt(np.mean(diff ** 2)))
    if n >= 3 and np.ptp(pred) > 0 and np.ptp(ref) > 0:
        from scipy import stats  # here, not at the top: it costs every process ~0.4 s to import

        pearson = stats.pearsonr(pred, ref)
        result["pearson_r"], result["pearson_p"] = float(pearson.statistic), float(pearson.pvalue)
        if n >= 4:
            interval = pearson.confidence_interval(0.95)
            result["pearson_r_ci_low"], result["pearson_r_ci_high"] = float(interval.low), float(interval.high)
    valid = ref != 0
    if valid.any():
        rel = 100.0 * diff[valid] / ref[valid]
        result["relative_error_mean_pct"] = float(rel.mean())
        result["relative_error_min_pct"] = float(rel.min())
        result["relative_error_max_pct"] = float(rel.max())
    bias = float(diff.mean())
    result["bland_altman_bias"] = bias
    if n >= 2:
        sd = float(diff.std(ddof=1))
        result["bland_altman_lower"] = bias - 1.96 * sd
        result["bland_altman_upper"] = bias + 1.96 * sd
    return result
