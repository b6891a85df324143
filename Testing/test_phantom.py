"""Synthetic orbital CT phantom: determinism, geometry, labels, volumes, confusers, files.

Small cases (about 0.8 x 2 mm) for most checks; a few full-field cases at 0.45 x 1 mm for volumes.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from OrbitSegLib import structures
from OrbitSegLib.imageio import read_image, same_grid
from OrbitSegLib.phantom import PhantomCase, generate_case, write_case, write_dataset
from OrbitSegLib.phantom.case import build_layers, case_anatomy
from OrbitSegLib.phantom.render import Grid, Layer, rasterise
from OrbitSegLib.phantom.scanner import draw_scanner, make_grid
from OrbitSegLib.phantom.shapes import Ellipsoid, Tube, smooth_curve
from OrbitSegLib.segio import read_reference

FULL_SPACING = (0.45, 0.45, 1.0)
# Generous plausibility bands (cm3) for one eye; the reference sheet gives SR ~0.5, IR 0.6, MR 0.7,
# LR 0.65, ON 0.5-0.7 and globe 6.5-8.5 for normal orbits.
NORMAL_RANGE = {"globe": (6.2, 8.9), "superior_rectus": (0.3, 0.85), "inferior_rectus": (0.4, 0.95),
                "medial_rectus": (0.45, 1.0), "lateral_rectus": (0.4, 0.95), "optic_nerve": (0.4, 0.8)}
NORMAL_MEAN = {"superior_rectus": 0.5, "inferior_rectus": 0.6, "medial_rectus": 0.7, "lateral_rectus": 0.65}


def arrays(case: PhantomCase):
    return sitk.GetArrayFromImage(case.ct), sitk.GetArrayFromImage(case.labels)


@pytest.fixture(scope="module")
def small_case() -> PhantomCase:
    return generate_case(11, 3, small=True)


@pytest.fixture(scope="module")
def full_cases() -> dict[str, list[PhantomCase]]:
    return {"normal": [generate_case(21, i, tao=False, spacing=FULL_SPACING) for i in range(2)],
            "tao": [generate_case(22, i, tao=True, spacing=FULL_SPACING) for i in range(2)]}


def test_same_seed_and_index_give_the_same_case(small_case):
    again = generate_case(11, 3, small=True)
    ct_a, lab_a = arrays(small_case)
    ct_b, lab_b = arrays(again)
    assert np.array_equal(ct_a, ct_b) and np.array_equal(lab_a, lab_b)
    strip = lambda info: {k: v for k, v in info.items() if k != "timing_s"}  # noqa: E731
    assert strip(small_case.info) == strip(again.info)
    other = generate_case(11, 4, small=True)
    assert other.ct.GetSize() != small_case.ct.GetSize() or not np.array_equal(arrays(other)[0], ct_a)


def test_ct_and_labels_share_the_grid_and_use_orbitseg_values(small_case):
    ct, labels = small_case.ct, small_case.labels
    assert ct.GetPixelID() == sitk.sitkInt16 and labels.GetPixelID() == sitk.sitkUInt8
    assert same_grid(ct, labels, tolerance=0.0)
    assert ct.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert ct.GetSpacing()[2] == pytest.approx(2.0) and 0.7 < ct.GetSpacing()[0] < 0.9
    values = set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist())
    assert values == set(range(13)), "background and all twelve structures (both eyes)"
    hu = sitk.GetArrayViewFromImage(ct)
    assert hu.min() >= -1024 and hu.max() > 700, "air and bone present"


def test_info_is_json_and_describes_the_case(small_case):
    info = json.loads(json.dumps(small_case.info))
    for key in ("tao", "enlargement", "globe_centre_lps", "start_slice", "end_slice", "spacing", "rotation_deg"):
        assert key in info
    assert set(info["enlargement"]) == {"right", "left"}
    assert set(info["enlargement"]["right"]) == {"superior_rectus", "inferior_rectus", "medial_rectus", "lateral_rectus"}
    assert info["spacing"] == pytest.approx(list(small_case.ct.GetSpacing()), abs=1e-4)


def test_globe_centres_lie_in_their_globes(small_case):
    labels = sitk.GetArrayViewFromImage(small_case.labels)
    centres = small_case.info["globe_centre_lps"]
    assert centres["right"][0] < centres["left"][0], "patient right is -x in LPS"
    for side in structures.SIDES:
        i, j, k = small_case.labels.TransformPhysicalPointToIndex(centres[side])
        assert labels[k, j, i] == structures.label_value(side, "globe")


def test_slice_range_covers_every_label_with_a_margin(small_case):
    labels = sitk.GetArrayViewFromImage(small_case.labels)
    start, end = small_case.info["start_slice"], small_case.info["end_slice"]
    present = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    assert 0 <= start <= present[0] and present[-1] <= end < labels.shape[0]
    assert present[0] - start <= 1 and end - present[-1] <= 1  # about 2 mm at 2 mm slices
    assert start < present[0] or start == 0


def test_tao_is_drawn_for_about_half_the_cases():
    drawn = [case_anatomy(1, index).tao for index in range(120)]
    assert 0.35 < np.mean(drawn) < 0.65
    assert case_anatomy(1, 0, tao=True).tao and not case_anatomy(1, 0, tao=False).tao


def test_forcing_tao_keeps_the_head():
    normal, tao = case_anatomy(5, 2, tao=False), case_anatomy(5, 2, tao=True)
    for side in structures.SIDES:
        a, b = normal.orbits[side], tao.orbits[side]
        assert a.globe_radii == b.globe_radii and a.canal == b.canal
        assert all(m.enlargement == 1.0 for m in a.muscles.values())
        assert max(m.enlargement for m in b.muscles.values()) >= 1.0
        assert [m.belly_thick for m in a.muscles.values()] == [m.belly_thick for m in b.muscles.values()]
    assert max(max(m.enlargement for m in o.muscles.values()) for o in tao.orbits.values()) >= 1.3
    assert normal.head == tao.head


def test_scanner_protocols_vary_widely():
    rng = np.random.default_rng(0)
    scanners = [draw_scanner(rng) for _ in range(300)]
    inplane = np.array([s.spacing[0] for s in scanners])
    slices = np.array([s.spacing[2] for s in scanners])
    assert inplane.min() >= 0.25 and inplane.max() <= 0.5
    assert slices.min() >= 0.5 and slices.max() <= 3.0
    assert (slices <= 1.0).mean() > 0.3 and (slices >= 2.5).mean() > 0.2, "thin orbital and thick head protocols"
    angles = np.array([[s.pitch_deg, s.yaw_deg, s.roll_deg] for s in scanners])
    assert (np.abs(angles).max(axis=0) > 2.5).all() and np.abs(angles).max() < 10
    anatomy = case_anatomy(1, 0)
    extents = np.array([np.array(g.size) * np.array(g.spacing)
                        for g in (make_grid(anatomy, s, np.random.default_rng(i)) for i, s in enumerate(scanners[:40]))])
    assert (extents[:, 0] >= 118).all() and (extents[:, 0] <= 160).all()
    assert (extents[:, 2] >= 50).all() and np.ptp(extents, axis=0).min() > 8


def test_rasteriser_partial_volume_and_painter_order():
    grid = Grid((120, 120, 40), (0.5, 0.5, 1.5), (-30.0, -30.0, -30.0))
    globe = Ellipsoid((0.3, -0.2, 0.4), (12.1, 11.85, 11.75))
    tube = Tube(smooth_curve(np.array([[-20.0, 8, -4], [0, 14, 0], [20, 20, 5]]), 30), np.full(30, 3.0), np.full(30, 6.0))
    layers = [Layer("air", None, "air"), Layer("globe", globe, "a", 1), Layer("tube", tube, "b", 2)]
    raster = rasterise(layers, grid)
    voxel = 0.5 * 0.5 * 1.5
    exact = 4 / 3 * np.pi * 12.1 * 11.85 * 11.75
    fill = raster.layer_fill(3) * voxel
    assert fill[1] + fill[2] == pytest.approx(exact + np.pi / 4 * 18 * tube.length(), rel=0.02)
    labels = raster.labels(np.array([0, 1, 2], np.uint8))
    assert (labels == 1).sum() * voxel == pytest.approx(fill[1], rel=0.02)
    assert (labels == 2).sum() * voxel == pytest.approx(fill[2], rel=0.05)
    values = raster.layer_values(np.array([-1000, 10, 50], np.float32))
    assert values.min() == -1000 and 10 < values.max() <= 50
    mixed = (values > -1000) & (values < 10) & (labels == 0)
    assert mixed.any(), "partial-volume voxels at the surface"


def test_confusers_are_layers_without_labels():
    layers, _ = build_layers(case_anatomy(3, 0))
    names = {layer.name: layer for layer in layers}
    for side in structures.SIDES:
        for confuser in ("levator", "superior_oblique", "superior_oblique_tendon", "inferior_oblique",
                         "lacrimal_gland", "superior_ophthalmic_vein", "ophthalmic_artery"):
            assert names[f"{side}_{confuser}"].label == 0
        assert names[f"{side}_levator"].material == "confuser_muscle"  # muscle density like the recti
        for key in structures.STRUCTURE_KEYS:
            assert any(layer.label == structures.label_value(side, key) for layer in layers)


def test_levator_above_the_superior_rectus_has_muscle_density_but_no_label(full_cases):
    case = full_cases["normal"][0]
    ct, labels = arrays(case)
    sr = labels == structures.label_value("right", "superior_rectus")
    k_idx = np.arange(labels.shape[0])[:, None, None]
    top = np.where(sr, k_idx, -1).max(axis=0)  # highest SR voxel per (j, i) column
    j_cols, i_cols = np.nonzero(top >= 0)
    order = np.argsort(j_cols)
    middle = order[len(order) // 4: 3 * len(order) // 4]  # the belly, away from apex and insertion
    above_k = top[j_cols[middle], i_cols[middle]] + 1
    inside = above_k < labels.shape[0]
    hu = ct[above_k[inside], j_cols[middle][inside], i_cols[middle][inside]].astype(float)
    lab = labels[above_k[inside], j_cols[middle][inside], i_cols[middle][inside]]
    assert (lab == 0).mean() > 0.9, "the levator is not labelled"
    assert 0 < hu.mean() < 120, f"the levator has soft-tissue density (mean {hu.mean():.0f} HU), not fat or bone"
    fat = ct[(labels == 0) & (ct > -150) & (ct < -60)]
    assert fat.size and fat.mean() < -60


def test_volumes_fall_in_literature_ranges(full_cases):
    normal = {key: [] for key in structures.STRUCTURE_KEYS}
    for case in full_cases["normal"]:
        assert not case.info["tao"]
        for side in structures.SIDES:
            for key, value in case.info["volumes_cm3"][side].items():
                low, high = NORMAL_RANGE[key]
                assert low <= value <= high, f"normal {side} {key} {value:.2f} cm3 outside {low}-{high}"
                normal[key].append(value)
    for key, mean in NORMAL_MEAN.items():
        assert abs(np.mean(normal[key]) - mean) < 0.2, key
    for case in full_cases["tao"]:
        info = case.info
        assert info["tao"]
        for side in structures.SIDES:
            factors = info["enlargement"][side]
            assert all(1.0 <= f <= 2.5 for f in factors.values())
            worst = max(factors, key=factors.get)
            if factors[worst] >= 1.3:
                assert info["volumes_cm3"][side][worst] > 1.25 * NORMAL_MEAN[worst], (side, worst)
            assert NORMAL_RANGE["globe"][0] <= info["volumes_cm3"][side]["globe"] <= NORMAL_RANGE["globe"][1]
        assert max(max(f.values()) for f in info["enlargement"].values()) >= 1.3


def test_write_case_round_trip(tmp_path, small_case):
    row = write_case(small_case, tmp_path, "case_a")
    assert row == {"id": "case_a", "image": "case_a/ct.nii.gz", "reference": "case_a/reference.seg.nrrd",
                   "start_slice": small_case.info["start_slice"], "end_slice": small_case.info["end_slice"]}
    ct = read_image(tmp_path / row["image"])
    assert same_grid(ct, small_case.ct) and ct.GetPixelID() == sitk.sitkInt16
    assert np.array_equal(sitk.GetArrayFromImage(ct), arrays(small_case)[0])
    for reference in (tmp_path / row["reference"], tmp_path / "case_a" / "labels.nii.gz"):
        labels = read_reference(reference)
        assert same_grid(labels, small_case.labels)
        assert np.array_equal(sitk.GetArrayFromImage(labels), arrays(small_case)[1])
    info = json.loads((tmp_path / "case_a" / "info.json").read_text(encoding="utf-8"))
    assert info["id"] == "case_a" and info["start_slice"] == small_case.info["start_slice"]


def test_write_dataset_writes_cases_and_a_study_list(tmp_path):
    calls = []
    path = write_dataset(tmp_path / "set", 2, seed=7, small=True, progress=lambda done, total: calls.append((done, total)))
    assert path == tmp_path / "set" / "studies.csv"
    assert calls == [(1, 2), (2, 2)]
    with open(path, newline="", encoding="utf-8") as handle:
        assert handle.readline().strip() == "id,image,reference,start_slice,end_slice"
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == ["phantom_7_0000", "phantom_7_0001"]
    for row in rows:
        assert not row["image"].startswith("/") and not row["reference"].startswith("/")
        image = read_image(path.parent / row["image"])
        labels = sitk.GetArrayFromImage(read_reference(path.parent / row["reference"]))
        present = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
        assert int(row["start_slice"]) <= present[0] and present[-1] <= int(row["end_slice"]) < image.GetSize()[2]
    again = generate_case(7, 1, small=True)
    assert np.array_equal(sitk.GetArrayFromImage(read_image(path.parent / rows[1]["image"])), arrays(again)[0])
