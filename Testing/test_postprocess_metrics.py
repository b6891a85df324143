"""Post-processing on constructed masks; volumes against analytic shapes; metrics against MONAI and SciPy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, MeanIoU
from scipy import stats

from conftest import make_image, physical_grid
from OrbitSegLib import metrics, structures
from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.postprocess import clean_classes, scores_to_classes
from OrbitSegLib.tables import agreement_rows, volume_rows


def test_argmax_with_background_channel():
    scores = np.zeros((3, 2, 2, 2), np.float32)
    scores[0] = 0.5
    scores[2, 0, 0, 0] = 0.9
    scores[1, 1, 1, 1] = 0.4  # below the background score
    classes = scores_to_classes(scores)
    assert classes.dtype == np.uint8
    assert classes[0, 0, 0] == 2 and classes[1, 1, 1] == 0 and classes.sum() == 2


def test_holes_filled_and_islands_removed():
    classes = np.zeros((20, 20, 20), np.uint8)
    classes[4:12, 4:12, 4:12] = 2
    classes[7:9, 7:9, 7:9] = 0           # an enclosed hole
    classes[15:17, 15:17, 15:17] = 2     # an island
    classes[2:6, 14:18, 2:6] = 5         # another structure
    classes[18, 18, 18] = 5              # its island
    out = clean_classes(classes)
    assert (out[7:9, 7:9, 7:9] == 2).all()
    assert (out[15:17, 15:17, 15:17] == 0).all() and out[18, 18, 18] == 0
    assert (out[2:6, 14:18, 2:6] == 5).all()
    assert (out == 2).sum() == 8 ** 3


def test_hole_holding_another_structure_is_not_overwritten():
    classes = np.zeros((12, 12, 12), np.uint8)
    classes[2:10, 2:10, 2:10] = 1
    classes[5:7, 5:7, 5:7] = 6  # a structure enclosed by another
    out = clean_classes(classes)
    assert (out[5:7, 5:7, 5:7] == 6).all()
    assert (out == 1).sum() == 8 ** 3 - 8


@pytest.mark.parametrize("spacing", [(0.3, 0.3, 1.0), (0.5, 0.4, 2.5)])
def test_sphere_volume_within_two_percent(spacing):
    radius = 6.0  # mm
    size = [int(2 * radius / s) + 8 for s in spacing]
    image = make_image(np.zeros(size[::-1], np.uint8), spacing, tuple(-(n - 1) * s / 2 for n, s in zip(size, spacing)))
    xyz = physical_grid(image)
    labels = np.where((xyz ** 2).sum(-1) <= radius ** 2, structures.label_value("left", "globe"), 0).astype(np.uint8)
    labelmap = make_image(labels, spacing, image.GetOrigin())
    volume = metrics.volumes_cm3(labelmap)[("left", "globe")]
    analytic = 4 / 3 * math.pi * radius ** 3 / 1000
    assert abs(volume - analytic) / analytic < 0.02
    assert metrics.volumes_cm3(labelmap)[("right", "globe")] == 0.0


def _random_pair(seed=0, shape=(16, 18, 20)):
    rng = np.random.default_rng(seed)
    pred = np.zeros(shape, np.uint8)
    ref = np.zeros(shape, np.uint8)
    for value in (1, 2, 4, 9):
        centre = rng.integers(4, 12, size=3)
        for target, shift in ((ref, 0), (pred, 1)):
            box = tuple(slice(c - 3 + shift, c + 3) for c in centre)
            target[box] = value
    return pred, ref


def test_overlap_metrics_match_monai_and_definitions():
    pred, ref = _random_pair()
    p_img, r_img = make_image(pred, (0.5, 0.5, 1.0)), make_image(ref, (0.5, 0.5, 1.0))
    rows = metrics.compare_labelmaps(p_img, r_img)
    assert len(rows) == 12
    onehot = lambda a: torch.from_numpy(np.stack([a == v for v, _, _ in structures.label_table()]))[None].float()
    monai_dice = DiceMetric(include_background=True, reduction="none", ignore_empty=True)(onehot(pred), onehot(ref))[0]
    monai_iou = MeanIoU(include_background=True, reduction="none", ignore_empty=True)(onehot(pred), onehot(ref))[0]
    for n, row in enumerate(rows):
        value = structures.label_value(row["side"], row["structure"])
        p, r = pred == value, ref == value
        if r.any():
            assert row["dice"] == pytest.approx(float(monai_dice[n]), abs=1e-6)
            assert row["iou"] == pytest.approx(float(monai_iou[n]), abs=1e-6)
            tp, fp, fn = (p & r).sum(), (p & ~r).sum(), (~p & r).sum()
            tn = p.size - tp - fp - fn
            assert row["sensitivity"] == pytest.approx(tp / (tp + fn))
            assert row["specificity"] == pytest.approx(tn / (tn + fp))
            assert row["vs"] == pytest.approx(1 - abs(fn - fp) / (2 * tp + fp + fn))
            assert row["volume_cm3"] == pytest.approx(p.sum() * 0.25 / 1000)
            assert row["reference_volume_cm3"] == pytest.approx(r.sum() * 0.25 / 1000)
        else:
            assert math.isnan(row["dice"]) and row["vs"] == 1.0


def test_reference_on_another_grid_is_an_error():
    pred, ref = _random_pair()
    with pytest.raises(OrbitSegError, match="different grid"):
        metrics.compare_labelmaps(make_image(pred, (0.5, 0.5, 1.0)), make_image(ref, (0.5, 0.5, 1.1)))


def test_agreement_against_scipy():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0.4, 1.6, size=12)
    pred = ref * rng.uniform(0.9, 1.1, size=12) + rng.normal(0, 0.02, size=12)
    result = metrics.agreement(pred, ref)
    r, p = stats.pearsonr(pred, ref)
    diff = pred - ref
    assert result["n"] == 12
    assert result["pearson_r"] == pytest.approx(r) and result["pearson_p"] == pytest.approx(p)
    assert result["mae"] == pytest.approx(np.mean(np.abs(diff)))
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean(diff ** 2)))
    assert result["relative_error_max_pct"] == pytest.approx(np.max(100 * diff / ref))
    assert result["bland_altman_bias"] == pytest.approx(diff.mean())
    assert result["bland_altman_upper"] == pytest.approx(diff.mean() + 1.96 * stats.tstd(diff))
    # Fisher's z interval, by hand: tanh(atanh(r) ± z₀.₉₇₅ / √(n − 3))
    half = stats.norm.ppf(0.975) / np.sqrt(12 - 3)
    assert result["pearson_r_ci_low"] == pytest.approx(np.tanh(np.arctanh(r) - half))
    assert result["pearson_r_ci_high"] == pytest.approx(np.tanh(np.arctanh(r) + half))
    assert result["pearson_r_ci_low"] < r < result["pearson_r_ci_high"]
    short = metrics.agreement([1.0, 2.0], [1.1, 2.2])
    assert math.isnan(short["pearson_r"]) and short["n"] == 2
    three = metrics.agreement([1.0, 2.0, 3.5], [1.1, 2.2, 3.0])  # R, but too few for an interval
    assert math.isfinite(three["pearson_r"]) and math.isnan(three["pearson_r_ci_low"])


def test_volume_and_agreement_rows():
    pred, ref = _random_pair()
    image_p, image_r = make_image(pred, (0.5, 0.5, 1.0)), make_image(ref, (0.5, 0.5, 1.0))
    comparison = metrics.compare_labelmaps(image_p, image_r, sides=("right",))
    rows = volume_rows(metrics.volumes_cm3(image_p), ("right",), comparison)
    assert [r["segment"] for r in rows][:2] == ["Right globe", "Right superior rectus"]
    assert all(r["side"] == "right" for r in rows) and len(rows) == 6
    table = agreement_rows(rows * 3)
    globe = next(r for r in table if r["structure"] == "globe" and r["side"] == "both")
    assert globe["n"] == 3 and globe["mae"] == pytest.approx(abs(rows[0]["difference_cm3"]))
