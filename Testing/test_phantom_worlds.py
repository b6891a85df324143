"""The phantom's second anatomy model (sweep) and its wide scanner world: real generated cases (small grids)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from OrbitSegLib import structures
from OrbitSegLib.cli import main
from OrbitSegLib.imageio import same_grid
from OrbitSegLib.phantom import generate_case, write_dataset
from OrbitSegLib.phantom.anatomy import RECTI
from OrbitSegLib.phantom.case import _streams, case_anatomy
from OrbitSegLib.phantom.scanner import draw_scanner, make_grid, orbit_box
from OrbitSegLib.phantom.shapes import Function
from OrbitSegLib.phantom.sweep import SweepOrbitBuilder
from OrbitSegLib.phantom_settings import case_id
from OrbitSegLib.training import studies_from_phantom

SEED = 5
OBLIQUE, RESAMPLED = 7, 4  # series 5 small wide cases: gantry tilt 18 deg kept oblique, -17 deg resampled


@pytest.fixture(scope="module")
def sweep_pair():
    """The same sweep head without and with TAO (default world, small grid)."""
    return generate_case(SEED, 1, small=True, tao=False, anatomy="sweep"), \
        generate_case(SEED, 1, small=True, tao=True, anatomy="sweep")


@pytest.fixture(scope="module")
def tilted():
    return generate_case(SEED, OBLIQUE, small=True, anatomy="sweep", world="wide")


def _counts(case) -> dict[int, int]:
    values, counts = np.unique(sitk.GetArrayViewFromImage(case.labels), return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def test_sweep_cases_keep_the_label_contract(sweep_pair, tilted):
    for case in (*sweep_pair, tilted):
        assert same_grid(case.ct, case.labels)
        assert case.labels.GetPixelID() == sitk.sitkUInt8 and case.ct.GetPixelID() == sitk.sitkInt16
        assert set(_counts(case)) == set(range(13))  # background and all six structures of both eyes
        assert case.info["anatomy_model"] == "sweep"


def test_sweep_volumes_are_anatomical(sweep_pair):
    normal, tao = sweep_pair
    for side in structures.SIDES:
        v = normal.info["true_volumes_cm3"][side]
        assert 5.5 < v["globe"] < 9.0
        assert 0.5 < v["optic_nerve"] < 1.0
        for key in RECTI:
            assert 0.3 < v[key] < 1.1, (side, key, v[key])
        # TAO: enlarged bellies (1.6-2.3x in area) add volume; spared muscles stay close to normal.
        for key, factor in tao.info["enlargement"][side].items():
            ratio = tao.info["true_volumes_cm3"][side][key] / v[key]
            if factor >= 1.6:
                assert 1.3 < ratio < 2.3, (side, key, ratio)
            else:
                assert 0.85 < ratio < 1.35, (side, key, ratio)  # mild swelling, longer path (proptosis)
    assert tao.info["proptosis_mm"]["right"] > 0.5 and normal.info["proptosis_mm"]["right"] == 0.0


def test_sweep_anatomy_follows_the_literature_and_spares_the_tendon():
    skin = Function(lambda u, y, z: np.full(u.shape, -50.0, np.float32), [-1e3] * 3, [1e3] * 3)
    involved = {key: 0 for key in RECTI}
    for index in range(40):
        anatomy = case_anatomy(SEED, index, tao=True, anatomy="sweep")
        for orbit in anatomy.orbits.values():
            assert 21.0 <= orbit.axial_length <= 27.0 and 40.0 <= orbit.depth <= 50.0
            for key, muscle in orbit.muscles.items():
                assert muscle.enlargement <= 2.3
                involved[key] += muscle.enlargement >= 1.6
        if index < 3:
            normal = SweepOrbitBuilder(case_anatomy(SEED, index, tao=False, anatomy="sweep").orbits["left"], skin)
            enlarged = SweepOrbitBuilder(anatomy.orbits["left"], skin)
            assert 40.0 <= enlarged.cone.length <= 50.5
            for key in RECTI:
                a, b = normal.rectus_path(key), enlarged.rectus_path(key)
                assert b["thick"][-1] == pytest.approx(a["thick"][-1], rel=0.02)  # tendon spared
                if anatomy.orbits["left"].muscles[key].enlargement >= 1.6:
                    assert b["thick"].max() > 1.25 * a["thick"].max()
    assert involved["inferior_rectus"] > involved["superior_rectus"] > 0
    assert involved["medial_rectus"] > involved["lateral_rectus"]


def test_same_seed_gives_the_same_sweep_wide_case(tilted):
    again = generate_case(SEED, OBLIQUE, small=True, anatomy="sweep", world="wide")
    assert np.array_equal(sitk.GetArrayViewFromImage(again.ct), sitk.GetArrayViewFromImage(tilted.ct))
    assert np.array_equal(sitk.GetArrayViewFromImage(again.labels), sitk.GetArrayViewFromImage(tilted.labels))
    classic = generate_case(SEED, OBLIQUE, small=True, world="wide")
    assert classic.info["anatomy_model"] == "classic" and classic.info["scanner"] == tilted.info["scanner"]


def test_gantry_tilt_and_pitch_are_on_the_ct_grid(tilted):
    scanner = tilted.info["scanner"]
    assert scanner["tilt_mode"] == "oblique" and abs(scanner["tilt_deg"]) > 10 and abs(scanner["pitch_deg"]) > 15
    direction = np.array(tilted.ct.GetDirection()).reshape(3, 3)
    a = np.radians(scanner["tilt_deg"])
    assert np.allclose(direction, [[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]], atol=1e-9)
    labels = sitk.GetArrayViewFromImage(tilted.labels)
    for side, centre in tilted.info["globe_centre_lps"].items():
        i, j, k = tilted.labels.TransformPhysicalPointToIndex(centre)
        assert labels[k, j, i] == structures.label_value(side, "globe")
    resampled = generate_case(SEED, RESAMPLED, small=True, world="wide")
    assert resampled.info["scanner"]["tilt_mode"] == "resampled"
    assert resampled.ct.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_wide_world_spans_the_protocols():
    rngs = [_streams(SEED, i) for i in range(300)]
    scanners = [draw_scanner(r[2], world="wide") for r in rngs]
    dx = np.array([s.spacing[0] for s in scanners])
    dz = np.array([s.spacing[2] for s in scanners])
    assert dx.min() < 0.25 and dx.max() > 0.9 and dz.min() < 0.6 and dz.max() > 4.5
    assert max(abs(s.tilt_deg) for s in scanners) > 22 and max(abs(s.pitch_deg) for s in scanners) > 22
    assert {s.kernel for s in scanners} == {"soft", "standard", "sharp"}
    assert {s.matrix for s in scanners} == {256, 512} and {s.fov for s in scanners} == {"orbits", "head"}
    assert 0.25 < np.mean([s.contrast for s in scanners]) < 0.45
    anatomy = case_anatomy(SEED, 0)
    lo, hi = orbit_box(anatomy)
    for r, s in list(zip(rngs, scanners))[:30]:
        grid = make_grid(anatomy, s, r[3])
        assert grid.size[:2] == (s.matrix, s.matrix)
        m, c = grid.index_to_anatomy()
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        ijk = np.linalg.solve(m, (corners - c).T).T
        assert (ijk >= -0.5).all() and (ijk <= np.array(grid.size) - 0.5).all()  # both orbits inside


def test_dataset_and_cli_take_the_setting(tmp_path):
    path = write_dataset(tmp_path / "set", 1, seed=3, small=True, anatomy="sweep", world="wide")
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    assert [r["id"] for r in rows] == [case_id(3, 0, "sweep", "wide")] == ["phantom_sweep_wide_3_0000"]
    assert main(["phantom", "--out", str(tmp_path / "cli"), "--cases", "1", "--seed", "3", "--small", "-q",
                 "--anatomy", "sweep", "--world", "wide"]) == 0
    written = sitk.ReadImage(str(tmp_path / "cli" / rows[0]["image"]))
    expected = sitk.ReadImage(str(tmp_path / "set" / rows[0]["image"]))
    assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(expected))
    (study,) = studies_from_phantom(1, 3, small=True, anatomy="sweep", world="wide")
    assert study.case_id == "phantom-sweep-wide-3-0000" and study.source_key.endswith(":sweep:wide")
    assert studies_from_phantom(1, 3, small=True)[0].source_key == "phantom:3:0:True"  # classic caches unchanged
    ct, _labels = study.load()
    assert np.array_equal(sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(expected))
