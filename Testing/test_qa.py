"""Input guards, DICOM geometry correction and result QA flags, on real files and real labelmaps."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import blob_phantom, bright_model, make_image
from OrbitSegLib import models, qa, structures
from OrbitSegLib.dicomseries import RESAMPLED_KEY, TILT_KEY, regularize
from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.imageio import read_image, write_image
from OrbitSegLib.metrics import volumes_cm3
from OrbitSegLib.model_store import bundled_model_dirs
from OrbitSegLib.phantom.dicom import write_tilted_series
from OrbitSegLib.pipeline import run_segmentation
from OrbitSegLib.tables import read_csv, volume_rows


# --- input guards ---------------------------------------------------------------------------------

def ct_like(size=(80, 80, 30), spacing=(0.5, 0.5, 1.0)) -> sitk.Image:
    """Air around a soft-tissue block: a plausible CT for the guards."""
    array = np.full(size[::-1], -1000, np.int16)
    array[2:-2, 10:-10, 10:-10] = 30
    return make_image(array, spacing=spacing)


def test_a_plausible_ct_passes_without_findings():
    qa.check_input(ct_like())
    assert qa.input_findings(ct_like()) == []


@pytest.mark.parametrize("image, words", [
    (make_image(np.random.default_rng(0).random((10, 10, 10), dtype=np.float32), spacing=(10.0, 10.0, 10.0)),
     "cannot resolve the 3-5 mm rectus muscles"),
    (ct_like(spacing=(0.5, 0.5, 8.0)), "cannot resolve"),
    (ct_like(size=(40, 40, 30), spacing=(0.5, 0.5, 1.0)), "field of view of 20 x 20 x 30 mm"),
    (ct_like(size=(80, 80, 6), spacing=(0.5, 0.5, 1.0)), "at least 12 mm along the slices"),
    (ct_like() + 1024, "not Hounsfield units"),
    (make_image(np.where(np.arange(80 * 80 * 30).reshape(30, 80, 80) % 2, -1000, 1200).astype(np.int16)),
     "not a CT of the orbits"),
    (ct_like(size=(80, 80, 3)), "fewer than 4 voxels"),
])
def test_inputs_that_are_not_orbital_ct_are_refused_in_one_line(image, words):
    with pytest.raises(OrbitSegError, match=words) as error:
        qa.check_input(image)
    assert "\n" not in str(error.value)


def test_usable_scans_outside_the_trained_range_are_flagged_input():
    scan = ct_like(size=(80, 80, 20), spacing=(1.0, 1.0, 4.0))
    qa.check_input(scan)  # usable: segmented, not refused
    findings = qa.input_findings(scan)
    assert [f.flag for f in findings] == ["input", "input"]
    assert "1 mm lie outside the 0.25-0.5 mm the model was trained on" in findings[0].reason
    assert "4 mm apart lie outside the 0.5-3 mm" in findings[1].reason
    assert all(f.side is None for f in findings)


def test_the_input_flag_follows_the_range_of_the_model_in_use(tmp_path):
    """A site's 0.8 mm / 2 mm scan is outside the bundled models' range but inside a model trained on
    such scans; a model trained on thinner slices flags its slices; a range measured on the scan in
    memory still holds the same scan read back from NIfTI, whose spacings are float32."""
    scan = ct_like(size=(80, 80, 20), spacing=(0.8, 0.8, 2.0))
    assert [f.reason for f in qa.input_findings(scan)] == [
        "in-plane voxels of 0.8 mm lie outside the 0.25-0.5 mm the model was trained on"]
    site = qa.AcquisitionRange.spanning([(0.75, 2.0), (0.85, 2.0)])
    assert site == qa.AcquisitionRange(inplane=(0.75, 0.85), slice=(2.0, 2.0))
    assert qa.input_findings(scan, site) == []
    thin = site.hull(qa.AcquisitionRange(inplane=(0.8, 0.8), slice=(0.6, 1.25)))
    assert thin == qa.AcquisitionRange(inplane=(0.75, 0.85), slice=(0.6, 2.0))
    assert qa.input_findings(scan, thin) == []
    assert [f.reason for f in qa.input_findings(scan, qa.AcquisitionRange((0.75, 0.85), (0.6, 1.25)))] == [
        "slices 2 mm apart lie outside the 0.6-1.25 mm the model was trained on"]
    memory = ct_like(size=(120, 120, 30), spacing=(0.3, 0.3, 0.7))
    stored = read_image(write_image(memory, tmp_path / "ct.nii.gz"))
    assert qa.spacings(stored) != qa.spacings(memory)  # 0.30000001 and 0.69999999 on disk
    exact = qa.AcquisitionRange.spanning([qa.spacings(memory)])
    assert qa.input_findings(stored, exact) == []
    assert len(qa.input_findings(stored, qa.AcquisitionRange((0.31, 0.5), (0.71, 1.0)))) == 2


def test_a_card_without_a_range_loads_and_uses_the_bundled_models_range(tmp_path):
    """The bundled models and files written before cards recorded the range load, with
    :data:`qa.TRAINED_ACQUISITION`; a recorded range round-trips; a malformed one is refused by name."""
    bundled = models.read_card(bundled_model_dirs()[0] / "sv-net.pt")
    assert bundled.training_acquisition is None and bundled.acquisition_range == qa.TRAINED_ACQUISITION
    network = models.create("sv-net", widths=[2, 2, 2, 2, 2])
    site = qa.AcquisitionRange(inplane=(0.7, 0.9), slice=(1.0, 2.5))
    models.save_checkpoint(tmp_path / "new.pt", network, models.make_card(
        network, window=(48, 400), spacing=(1.0, 1.0, 2.0), input_size=(32, 32, 16), acquisition=site))
    _, card = models.load_checkpoint(tmp_path / "new.pt")
    assert card.training_acquisition == {"inplane_mm": [0.7, 0.9], "slice_mm": [1.0, 2.5]}
    assert card.acquisition_range == site
    assert "trained on scans of 0.7-0.9 mm in-plane, 1-2.5 mm between slices" in card.summary()
    data = torch.load(tmp_path / "new.pt", weights_only=True)
    del data["card"]["training_acquisition"]  # as an older OrbitSeg wrote it
    torch.save(data, tmp_path / "old.pt")
    _, old = models.load_checkpoint(tmp_path / "old.pt")
    assert old.training_acquisition is None and old.acquisition_range == qa.TRAINED_ACQUISITION
    assert "trained on scans of 0.25-0.5 mm in-plane, 0.5-3 mm between slices" in old.summary()
    data["card"]["training_acquisition"] = {"inplane_mm": [0.9, 0.7], "slice_mm": [1.0, 2.5]}
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(OrbitSegError, match="training_acquisition of the card: .*inplane_mm"):
        models.read_card(tmp_path / "bad.pt")


# --- DICOM tilt and uneven slices -------------------------------------------------------------------

def ball_ct() -> tuple[sitk.Image, np.ndarray]:
    """A CT with a 10 mm ball of soft tissue in air (0.5 mm in-plane, 1 mm slices), and the ball's mask."""
    zz, yy, xx = np.mgrid[:60, :100, :100]
    ball = ((xx - 30) * 0.5) ** 2 + ((yy - 60) * 0.5) ** 2 + (zz - 30) ** 2 < 100
    array = np.where(ball, 40, -1000).astype(np.int16)
    image = make_image(array, spacing=(0.5, 0.5, 1.0), origin=(10.0, -20.0, 5.0))
    return image, ball


def dice_on(image: sitk.Image, grid: sitk.Image, mask: np.ndarray) -> float:
    """Dice of ``image`` > -480 HU, resampled onto ``grid``, with ``mask``."""
    values = sitk.GetArrayFromImage(sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, -1024.0))
    found = values > -480
    return 2 * np.count_nonzero(found & mask) / (np.count_nonzero(found) + np.count_nonzero(mask))


def test_a_tilted_gantry_series_is_resampled_onto_a_regular_grid_and_flagged(tmp_path):
    image, ball = ball_ct()
    folder = write_tilted_series(image, tmp_path / "tilted", tilt_deg=20.0, slice_mm=2.0)
    naive = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    corrected = read_image(folder)
    assert float(corrected.GetMetaData(TILT_KEY)) == pytest.approx(20.0, abs=0.05)
    direction = np.array(corrected.GetDirection()).reshape(3, 3)
    assert np.allclose(direction @ direction.T, np.eye(3), atol=1e-6)  # a regular (orthonormal) grid
    assert dice_on(corrected, image, ball) > 0.97  # every voxel back at its physical point
    assert dice_on(naive, image, ball) < 0.9       # what reading the series without the correction gives
    findings = qa.input_findings(corrected)
    assert any("gantry tilt of 20.0°" in f.reason for f in findings)
    assert qa.acquisition(corrected)["gantry_tilt_deg"] == pytest.approx(20.0, abs=0.05)


def test_uneven_slice_steps_are_resampled_and_a_straight_even_series_is_kept(tmp_path):
    image, ball = ball_ct()
    steps = [1.0, 2.0] * 27
    uneven = read_image(write_tilted_series(image, tmp_path / "uneven", 0.0, 1.0, steps=steps))
    assert "uneven slice steps (1.00–2.00 mm)" in uneven.GetMetaData(RESAMPLED_KEY)
    assert uneven.GetSpacing()[2] == pytest.approx(1.5)
    assert dice_on(uneven, image, ball) > 0.95
    even = read_image(write_tilted_series(image, tmp_path / "even", 0.0, 1.0))
    assert not even.HasMetaDataKey(RESAMPLED_KEY) and float(even.GetMetaData(TILT_KEY)) == 0.0
    assert even.GetSpacing()[2] == pytest.approx(1.0) and dice_on(even, image, ball) > 0.97


def test_slices_at_one_position_are_refused():
    image = make_image(np.zeros((3, 4, 4), np.int16))
    positions = np.array([[0, 0, 0], [0, 0, 1.0], [0, 0, 1.0]])
    with pytest.raises(OrbitSegError, match="two slices lie at the same position"):
        regularize(image, positions, np.array([1.0, 0, 0, 0, 1, 0]))


# --- result flags -----------------------------------------------------------------------------------

SPACING = 0.5
ORIGIN = np.array([-80.0, -25.0, -25.0])  # LPS mm: the right globe's centre is at (-32, 0, 0), the left's (32, 0, 0)


def orbit_labelmap(changes: dict | None = None) -> sitk.Image:
    """Both orbits drawn with correct anatomy (globe, four recti around it, optic nerve behind), in
    LPS on a 0.5 mm grid; ``changes[(side, key)]`` moves a structure by an offset (mm) or, with
    ``None``, leaves it out."""
    changes = changes or {}
    size = (320, 140, 100)  # x 160 mm, y 70 mm, z 50 mm
    z, y, x = (np.arange(n) * SPACING + o for n, o in zip(size[::-1], ORIGIN[::-1]))
    z, y, x = np.meshgrid(z, y, x, indexing="ij")
    labels = np.zeros(size[::-1], np.uint8)
    for side, cx in (("right", -32.0), ("left", 32.0)):
        medial = 1.0 if side == "right" else -1.0
        shapes = {  # key: (centre relative to the globe's, half-extents) of a box, the globe a ball
            "superior_rectus": ((0, 18, 12.5), (5, 12, 2)),
            "inferior_rectus": ((0, 18, -12.5), (5, 12, 2.3)),
            "medial_rectus": ((medial * 12.5, 18, 0), (2.3, 12, 5)),
            "lateral_rectus": ((-medial * 12.5, 18, 0), (2, 12, 5)),
            "optic_nerve": ((0, 22, 0), (2.2, 10, 2.2)),
        }
        for key, (centre, half) in shapes.items():
            if (side, key) in changes and changes[(side, key)] is None:
                continue
            c = np.array(centre, float) + (cx, 0, 0) + np.array(changes.get((side, key), (0, 0, 0)))
            inside = (abs(x - c[0]) <= half[0]) & (abs(y - c[1]) <= half[1]) & (abs(z - c[2]) <= half[2])
            labels[inside] = structures.label_value(side, key)
        g = np.array((cx, 0, 0)) + np.array(changes.get((side, "globe"), (0, 0, 0)))
        radius = 12.0 * (1.0 if side == "right" else changes.get("left globe scale", 1.0))
        labels[(x - g[0]) ** 2 + (y - g[1]) ** 2 + (z - g[2]) ** 2 < radius ** 2] = structures.label_value(side, "globe")
    return make_image(labels, spacing=(SPACING,) * 3, origin=ORIGIN)


def eye_boxes(labelmap: sitk.Image) -> dict:
    """Each eye's box: the half of the image on its side, all slices."""
    nx, ny, nz = labelmap.GetSize()
    return {"right": ((0, 0, 0), (nx // 2 - 1, ny - 1, nz - 1)), "left": ((nx // 2, 0, 0), (nx - 1, ny - 1, nz - 1))}


def assess(labelmap: sitk.Image, raw_extra: dict | None = None, uncertainty: dict | None = None):
    rows = volume_rows(volumes_cm3(labelmap), structures.SIDES)
    array = sitk.GetArrayViewFromImage(labelmap)
    evidence = []
    for side, (lo, hi) in eye_boxes(labelmap).items():
        kept = {s.key: int(np.count_nonzero(array == structures.label_value(side, s.key))) for s in structures.STRUCTURES}
        raw = {k: v + (raw_extra or {}).get((side, k), 0) for k, v in kept.items()}
        scores = {k: (uncertainty or {}).get((side, k), 0.05) for k in kept}
        evidence.append(qa.EyeEvidence(side, lo, hi, raw, kept, scores))
    findings = qa.assess(labelmap, rows, evidence, [])
    qa.annotate_rows(rows, findings, evidence)
    return findings, {(r["side"], r["structure"]): r for r in rows}


def implausible(findings) -> dict:
    """(side, structure) -> every implausible reason, joined by " | "."""
    out = {}
    for f in findings:
        if f.flag == "implausible":
            out[(f.side, f.structure)] = " | ".join(filter(None, [out.get((f.side, f.structure)), f.reason]))
    return out


def test_correct_anatomy_raises_no_implausible_flag():
    findings, rows = assess(orbit_labelmap())
    assert implausible(findings) == {}
    assert all(r["qa"] in ("", "outside-normal") for r in rows.values())
    assert rows[("right", "globe")]["normal_range_cm3"] == "6.5-8.5"


def test_each_failure_is_flagged_implausible_with_its_reason():
    labelmap = orbit_labelmap({("right", "superior_rectus"): None,              # missing
                               ("right", "inferior_rectus"): (0, 0, 25.0),      # above the globe, not below
                               ("left", "lateral_rectus"): (-26.0, 0, 0),       # on the medial side
                               ("left", "globe"): (0, 0, 15.0)})                # cut by the last slice
    findings, rows = assess(labelmap, raw_extra={("left", "medial_rectus"): 5000})  # in pieces
    bad = implausible(findings)
    assert bad[("right", "superior_rectus")].startswith("empty")
    assert "does not lie below its globe's centre" in bad[("right", "inferior_rectus")]
    assert "does not lie lateral to its globe's centre" in bad[("left", "lateral_rectus")]
    assert "reaches the last slice of its VOI box" in bad[("left", "globe")]
    assert bad[("left", "medial_rectus")].startswith("found in pieces")
    assert rows[("right", "superior_rectus")]["qa"] == "implausible"
    assert ("right", "globe") not in bad and ("left", "optic_nerve") not in bad


def test_gross_asymmetry_and_impossible_volumes_are_implausible():
    findings, _ = assess(orbit_labelmap({"left globe scale": 0.8}))  # left globe half the right one
    bad = implausible(findings)
    assert "differ 2.0-fold" in bad[("right", "globe")] and ("left", "globe") in bad
    huge = sitk.GetArrayFromImage(orbit_labelmap())
    huge[:, :, :150][huge[:, :, :150] == 0] = structures.label_value("right", "globe")  # the whole box
    findings, _ = assess(make_image(huge, spacing=(SPACING,) * 3, origin=ORIGIN))
    assert "more than the 15 cm³ any adult orbit holds" in implausible(findings)[("right", "globe")]


def test_outside_normal_and_uncertain_are_findings_apart_from_failures():
    labelmap = orbit_labelmap()
    findings, rows = assess(labelmap, uncertainty={("left", "optic_nerve"): 0.4})
    volumes = volumes_cm3(labelmap)
    for (side, key), row in rows.items():
        normal = qa.NORMAL_RANGES_CM3[key]
        expected = not normal.low <= volumes[(side, key)] <= normal.high
        assert ("outside-normal" in row["qa"].split(";")) == expected, (side, key, volumes[(side, key)])
    assert rows[("left", "optic_nerve")]["qa"].endswith("uncertain")
    assert rows[("left", "optic_nerve")]["uncertainty"] == 0.4
    assert not implausible(findings)


def test_uncertainty_map_and_scores():
    scores = np.zeros((structures.NUM_CLASSES, 2, 2, 2), np.float32)
    scores[0] = 1.0
    scores[0, 0, 0, 0], scores[1, 0, 0, 0] = 0.5, 0.5  # a tie between background and globe
    doubt = qa.uncertainty_map(scores)
    assert doubt.dtype == np.uint8 and doubt[0, 0, 0] == 100 and doubt.sum() == 100
    classes = np.zeros((2, 2, 2), np.uint8)
    classes[0, 0, 0] = 1
    assert qa.uncertainty_scores(scores, classes)["globe"] == pytest.approx(1 - 2 * 0.5 / 1.5)
    scores[1, 0, 0, 0] = 1.0
    assert qa.uncertainty_scores(scores, classes)["globe"] == pytest.approx(0.0)


def test_a_run_writes_its_flags_everywhere(tmp_path):
    """volumes.csv's qa columns, run.json's qa list and device value, the uncertainty map on the CT grid."""
    image = blob_phantom(spacing=(1.0, 1.0, 2.0))
    ct = write_image(image, tmp_path / "ct.nrrd")
    result = run_segmentation(ct, tmp_path / "out", bright_model(), device="cpu")
    rows = read_csv(tmp_path / "out" / "volumes.csv")
    assert list(rows[0])[:9] == ["side", "structure", "segment", "label_value", "volume_cm3", *qa.QA_COLUMNS]
    by_key = {(r["side"], r["structure"]): r for r in rows}
    assert by_key[("right", "globe")]["qa"] == "implausible;input"  # a 4.5 mm bright ball is no globe; 1 mm pixels
    assert "less than the 3 cm³" in by_key[("right", "globe")]["qa_reasons"]
    run = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))
    assert run["device"] == "cpu" and run["device_note"] == "CPU (as requested)"
    assert [qa.Finding(**f) for f in run["qa"]] == result.findings
    assert run["acquisition"]["inplane_spacing_mm"] == 1.0
    doubt = read_image(tmp_path / "out" / "uncertainty.nii.gz")
    assert doubt.GetSize() == image.GetSize() and doubt.GetOrigin() == image.GetOrigin()
    assert sitk.GetArrayViewFromImage(doubt).max() > 0
