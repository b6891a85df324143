"""The whole pipeline and the CLI, end to end on small volumes with real files."""
from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
import torch

from conftest import BLOB_RADIUS, BLOBS, ROTATIONS, blob_phantom, bright_model, make_image
from OrbitSegLib import models, protocol, qa, structures
from OrbitSegLib.cli import main
from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.imageio import read_image, same_grid, write_image
from OrbitSegLib.inference import InferenceOptions
from OrbitSegLib.model_store import load_model
from OrbitSegLib.pipeline import run_segmentation, segment_image
from OrbitSegLib.segio import read_reference
from OrbitSegLib.voi import VOI

@pytest.mark.parametrize("grid_shifts", [1, 2])
@pytest.mark.parametrize("orientation", list(ROTATIONS))
def test_blob_lands_at_its_physical_point_on_the_input_grid(orientation, grid_shifts):
    image = blob_phantom(ROTATIONS[orientation])
    result = segment_image(image, bright_model(options=InferenceOptions(grid_shifts=grid_shifts)))
    assert same_grid(result.labelmap, image)
    labels = sitk.GetArrayFromImage(result.labelmap)
    for side, centre in BLOBS.items():
        mask = labels == structures.label_value(side, "globe")
        assert mask.sum() > 0, side
        kji = np.argwhere(mask).mean(axis=0)
        point = result.labelmap.TransformContinuousIndexToPhysicalPoint(kji[::-1].tolist())
        np.testing.assert_allclose(point, centre, atol=0.7)
        volume = next(r["volume_cm3"] for r in result.rows if r["side"] == side and r["structure"] == "globe")
        assert volume == pytest.approx(4 / 3 * np.pi * BLOB_RADIUS ** 3 / 1000, rel=0.08)
    other = set(np.unique(labels)) - {0, 1, 7}
    assert not other


def test_one_side_only_and_user_slices():
    image = blob_phantom()
    auto = segment_image(image, bright_model(), side="left")
    labels = sitk.GetArrayFromImage(auto.labelmap)
    assert set(np.unique(labels)) == {0, structures.label_value("left", "globe")}
    assert [r["side"] for r in auto.rows] == ["left"] * 6
    # slices above the blob only: nothing found
    top = image.GetSize()[2] - 1
    high = segment_image(image, bright_model(), start_slice=top - 5, end_slice=top, side="left")
    assert sitk.GetArrayFromImage(high.labelmap).max() == 0
    assert (high.voi.start_slice, high.voi.end_slice) == (top - 5, top)


def test_progress_and_cancel():
    image = blob_phantom()
    seen = []
    segment_image(image, bright_model(), progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("right eye" in m for _, m in seen) and any("left eye" in m for _, m in seen)
    from OrbitSegLib.errors import CancelledError
    with pytest.raises(CancelledError):
        segment_image(image, bright_model(), cancel=lambda: len(seen) > 0)


def test_grid_shifts_average_shifted_grids_on_the_input_grid(tmp_path):
    image = blob_phantom(ROTATIONS["oblique"])
    seen = []
    single = segment_image(image, bright_model())
    shifted = segment_image(image, bright_model(options=InferenceOptions(grid_shifts=2)),
                            progress=lambda f, m: seen.append(m))
    assert same_grid(shifted.labelmap, image)
    assert sum("(grid 2 of 2)" in m and m.startswith("Segmenting") for m in seen) == 2  # both eyes, twice each
    a, b = (sitk.GetArrayFromImage(r.labelmap) for r in (single, shifted))
    for side in BLOBS:
        value = structures.label_value(side, "globe")
        overlap = 2 * ((a == value) & (b == value)).sum() / ((a == value).sum() + (b == value).sum())
        assert overlap > 0.97, side  # the same blob, its boundary sampled at other points
        kji = np.argwhere(b == value).mean(axis=0)
        point = shifted.labelmap.TransformContinuousIndexToPhysicalPoint(kji[::-1].tolist())
        np.testing.assert_allclose(point, BLOBS[side], atol=0.7)
    assert shifted.timings["model"] > 0
    ct_path = write_image(image, tmp_path / "ct.nii.gz")
    run_segmentation(ct_path, tmp_path / "out", bright_model(options=InferenceOptions(grid_shifts=4)))
    run = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))
    assert run["inference_options"]["grid_shifts"] == 4


def test_run_segmentation_writes_outputs_with_reference(tmp_path):
    image = blob_phantom(ROTATIONS["ras"])
    ct_path = write_image(image, tmp_path / "ct.nii.gz")
    first = segment_image(image, bright_model())
    reference = tmp_path / "ref.nii.gz"
    write_image(first.labelmap, reference)
    result = run_segmentation(ct_path, tmp_path / "out", bright_model(), reference_path=reference)
    out = tmp_path / "out"
    seg = slicerio.read_segmentation(str(out / "segmentation.seg.nrrd"))
    assert len(seg["segments"]) == 12
    back = read_reference(out / "segmentation.seg.nrrd")
    assert same_grid(back, read_image(ct_path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(result.labelmap))
    rows = list(csv.DictReader(open(out / "volumes.csv", encoding="utf-8")))
    assert len(rows) == 12 and rows[0]["segment"] == "Right globe"
    assert float(rows[0]["dice"]) == pytest.approx(1.0) and float(rows[0]["difference_cm3"]) == 0.0
    agreement = list(csv.DictReader(open(out / "agreement.csv", encoding="utf-8")))
    assert {r["structure"] for r in agreement} >= {"globe"}
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert VOI.from_dict(run["voi"]) == result.voi and run["model"] == "bright"
    assert set(run["timings_s"]) >= {"read", "check input", "find orbits", "resample", "model", "postprocess"}


def test_outputs_never_replace_inputs_and_leave_no_stale_agreement(tmp_path):
    image = blob_phantom(ROTATIONS["lps"])
    case = tmp_path / "case"  # a phantom case folder: its labels.nii.gz is the reference
    ct_path = write_image(image, case / "ct.nii.gz")
    reference = write_image(segment_image(image, bright_model()).labelmap, case / "labels.nii.gz")
    before = reference.read_bytes()
    with pytest.raises(OrbitSegError, match="would replace the input .*labels.nii.gz"):
        run_segmentation(ct_path, case, bright_model(), reference_path=reference)
    assert reference.read_bytes() == before and sorted(p.name for p in case.iterdir()) == ["ct.nii.gz", "labels.nii.gz"]
    with pytest.raises(OrbitSegError, match="is a file"):
        run_segmentation(ct_path, reference, bright_model())
    out = tmp_path / "out"
    run_segmentation(ct_path, out, bright_model(), reference_path=reference)
    assert (out / "agreement.csv").is_file()
    run_segmentation(ct_path, out, bright_model())  # again without a reference: no agreement of the last run
    assert not (out / "agreement.csv").exists()
    assert "dice" not in open(out / "volumes.csv", encoding="utf-8").readline()


def test_images_that_cannot_be_segmented_are_refused():
    thin = sitk.Cast(blob_phantom()[:, :, :3], sitk.sitkInt16)
    with pytest.raises(OrbitSegError, match="fewer than 4 voxels"):
        segment_image(thin, bright_model())
    raw = blob_phantom() + 1024.0  # stored without its rescale: no air
    with pytest.raises(OrbitSegError, match="no voxel is below -500 HU .* convert it to HU"):
        segment_image(raw, bright_model(), voi=segment_image(blob_phantom(), bright_model()).voi)


def test_voi_from_a_run_json_reproduces_the_run(tmp_path, model_dir, capsys):
    ct = write_image(blob_phantom(spacing=(0.8, 0.8, 2.0)), tmp_path / "ct.nii.gz")
    model = str(model_dir / "tiny-sv.pt")
    assert main(["segment", str(ct), "--out", str(tmp_path / "a"), "--model", model, "--progress", "none",
                 "--start", "3", "--end", "12"]) == 0
    assert main(["segment", str(ct), "--out", str(tmp_path / "b"), "--model", model, "--progress", "none",
                 "--voi", str(tmp_path / "a" / "run.json")]) == 0
    first, second = (json.loads((tmp_path / d / "run.json").read_text(encoding="utf-8"))["voi"] for d in "ab")
    assert second == first and first["start_slice"] == 3
    capsys.readouterr()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """Small randomly initialised SV-Net and SEQ-UNET checkpoints in a models folder."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    sv = models.create("sv-net", widths=[4, 4, 8, 8, 8])
    models.save_checkpoint(folder / "tiny-sv.pt", sv, models.make_card(
        sv, window=(48, 400), spacing=(1.0, 1.0, 2.0), input_size=(32, 32, 16), training_data="random init"))
    seq = models.create("seq-unet", widths=[4, 8, 8], lstm1_hidden=8, lstm2_hidden=4)
    models.save_checkpoint(folder / "tiny-seq.pt", seq, models.make_card(
        seq, window=(48, 400), spacing=(1.0, 1.0, 2.0), input_size=(32, 32, 3), training_data="random init"))
    return folder


@pytest.mark.parametrize("name", ["tiny-sv", "tiny-seq"])
def test_random_models_by_name_through_the_pipeline(model_dir, monkeypatch, name):
    monkeypatch.setenv("ORBITSEG_MODELS", str(model_dir))
    image = blob_phantom(ROTATIONS["oblique"], spacing=(0.8, 0.8, 2.0))
    model = load_model(name, "cpu", InferenceOptions(batch_size=2))
    result = segment_image(image, model)
    assert same_grid(result.labelmap, image)
    assert result.model_card["architecture"] == ("sv-net" if name == "tiny-sv" else "seq-unet")
    assert sitk.GetArrayFromImage(result.labelmap).max() <= 12


def test_the_input_flag_uses_the_acquisition_range_on_the_models_card(model_dir, tmp_path):
    """A 0.8 mm / 2 mm scan (written to NIfTI, so its spacings are float32 on disk) through a model whose
    card records the scan's own spacings: no ``input`` flag; through the same weights with a card that
    records none (the bundled models' 0.25-0.5 mm in-plane): every structure flagged ``input``."""
    image = blob_phantom(spacing=(0.8, 0.8, 2.0))
    ct = write_image(image, tmp_path / "ct.nii.gz")
    network, card = models.load_checkpoint(model_dir / "tiny-sv.pt")
    assert card.training_acquisition is None
    site = qa.AcquisitionRange.spanning([qa.spacings(image)])
    models.save_checkpoint(tmp_path / "site.pt", network,
                           dataclasses.replace(card, training_acquisition=site.to_dict()))
    runs = {name: run_segmentation(ct, tmp_path / name, model, device="cpu")
            for name, model in (("site", tmp_path / "site.pt"), ("fallback", model_dir / "tiny-sv.pt"))}
    assert [f for f in runs["site"].findings if f.flag == "input"] == []
    assert [f.reason for f in runs["fallback"].findings if f.flag == "input"] == [
        "in-plane voxels of 0.8 mm lie outside the 0.25-0.5 mm the model was trained on"]
    for name, flagged in (("site", False), ("fallback", True)):
        run = json.loads((tmp_path / name / "run.json").read_text(encoding="utf-8"))
        assert run["model_card"]["training_acquisition"] == (None if flagged else
                                                            {"inplane_mm": [0.8, 0.8], "slice_mm": [2.0, 2.0]})
        assert any(f["flag"] == "input" for f in run["qa"]) == flagged
        rows = list(csv.DictReader(open(tmp_path / name / "volumes.csv", encoding="utf-8")))
        assert len(rows) == 12 and all(("input" in r["qa"].split(";")) == flagged for r in rows)


def test_step_one_protocol_matches_overlapping_windows(model_dir):
    image = blob_phantom(spacing=(0.8, 0.8, 2.0))
    whole = segment_image(image, load_model(model_dir / "tiny-sv.pt", "cpu"))
    fast = segment_image(image, load_model(model_dir / "tiny-sv.pt", "cpu", InferenceOptions(window=16, overlap=0.5, blend="constant")))
    slow = segment_image(image, load_model(model_dir / "tiny-sv.pt", "cpu", InferenceOptions(window=16, step=1, blend="constant")))
    a, b, c = (sitk.GetArrayFromImage(r.labelmap) for r in (fast, slow, whole))
    assert (a == b).mean() > 0.95 and (c == b).mean() > 0.9


def test_whole_eye_pass_equals_monai_single_window(model_dir):
    from monai.inferers import sliding_window_inference

    predictor = load_model(model_dir / "tiny-sv.pt", "cpu").predictor
    volume = np.random.default_rng(0).random((32, 48, 32), dtype=np.float32)
    whole = predictor.predict(volume)
    with torch.inference_mode():
        monai = sliding_window_inference(torch.from_numpy(volume)[None, None], roi_size=(32, -1, -1), sw_batch_size=1,
                                         predictor=lambda w: predictor._activate(predictor.network(w)), mode="gaussian")
    assert whole.shape == (7, 32, 48, 32) and whole.dtype == np.float32
    np.testing.assert_allclose(whole, monai[0].numpy(), rtol=1e-5, atol=1e-6)


def test_an_ensemble_segments_with_its_members_mean(model_dir, tmp_path, capsys):
    torch.manual_seed(1)
    other = models.create("sv-net", widths=[4, 4, 8, 8, 8])
    models.save_checkpoint(tmp_path / "other.pt", other, models.make_card(
        other, window=(48, 400), spacing=(1.0, 1.0, 2.0), input_size=(32, 32, 16), training_data="random init"))
    single = model_dir / "tiny-sv.pt"
    assert main(["ensemble", str(single), str(tmp_path / "other.pt"), "--out", str(tmp_path / "pair.pt")]) == 0
    assert "Ensemble saved" in capsys.readouterr().out
    volume = np.random.default_rng(0).random((32, 48, 32), dtype=np.float32)
    pair = load_model(tmp_path / "pair.pt", "cpu")
    members = (single, tmp_path / "other.pt")
    expected = np.mean([load_model(p, "cpu").predictor.predict(volume) for p in members], axis=0)
    np.testing.assert_allclose(pair.predictor.predict(volume), expected, rtol=1e-5, atol=1e-6)
    # the same model twice segments exactly like the model alone, on the input's grid
    assert main(["ensemble", str(single), str(single), "--out", str(tmp_path / "twice.pt")]) == 0
    image = blob_phantom(ROTATIONS["oblique"], spacing=(0.8, 0.8, 2.0))
    twice = segment_image(image, load_model(tmp_path / "twice.pt", "cpu"))
    alone = segment_image(image, load_model(single, "cpu"))
    assert same_grid(twice.labelmap, image) and twice.model_card["members"] == 2
    np.testing.assert_array_equal(sitk.GetArrayFromImage(twice.labelmap), sitk.GetArrayFromImage(alone.labelmap))
    # the weights of the same model averaged twice are the model itself, one network
    assert main(["ensemble", str(single), str(single), "--average-weights", "--out", str(tmp_path / "soup.pt")]) == 0
    assert "Weight average saved" in capsys.readouterr().out
    soup = segment_image(image, load_model(tmp_path / "soup.pt", "cpu"))
    assert soup.model_card["members"] == 1
    np.testing.assert_array_equal(sitk.GetArrayFromImage(soup.labelmap), sitk.GetArrayFromImage(alone.labelmap))


def test_seq_unet_batched_equals_one_triplet_at_a_time(model_dir):
    image = blob_phantom(spacing=(0.8, 0.8, 2.0))
    one = segment_image(image, load_model(model_dir / "tiny-seq.pt", "cpu", InferenceOptions(batch_size=1)))
    many = segment_image(image, load_model(model_dir / "tiny-seq.pt", "cpu", InferenceOptions(batch_size=16)))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(one.labelmap), sitk.GetArrayFromImage(many.labelmap))


def test_cli_end_to_end(tmp_path, model_dir, monkeypatch, capsys):
    monkeypatch.setenv("ORBITSEG_MODELS", str(model_dir))
    image = blob_phantom(ROTATIONS["flipped"], spacing=(0.8, 0.8, 2.0))
    ct = write_image(image, tmp_path / "ct.nrrd")
    code = main(["segment", str(ct), "--out", str(tmp_path / "out"), "--model", "tiny-sv", "--device", "cpu",
                 "--side", "right", "--progress", "none", "--grid-shifts", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Right superior rectus" in printed and "Left" not in printed
    assert same_grid(read_reference(tmp_path / "out" / "segmentation.seg.nrrd"), image)
    run = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))
    assert run["inference_options"]["grid_shifts"] == 2


@pytest.mark.parametrize("args, message", [
    (["segment", "{missing}", "--out", "{out}"], "file not found"),
    (["segment", "{ct}", "--out", "{out}", "--start", "40", "--end", "10"], "after end slice"),
    (["segment", "{ct}", "--out", "{out}", "--start", "0", "--end", "999"], "outside the image"),
    (["segment", "{ct}", "--out", "{out}", "--model", "no-such-model"], "not found"),
    (["segment", "{ct}", "--out", "{out}", "--device", "cuda"], "CUDA"),
    (["segment", "{ct}", "--out", "{out}", "--voi", "{missing}"], "cannot read the VOI file"),
    (["segment", "{ct}", "--out", "{out}", "--voi", "{ct}"], "is not a VOI file"),
    (["segment", "{ct}", "--out", "{out}", "--batch-size", "0"], "batch size must be at least 1"),
    (["segment", "{ct}", "--out", "{out}", "--overlap", "1.5"], "overlap must be a fraction"),
    (["segment", "{ct}", "--out", "{out}", "--window", "20"], "window must be a multiple of"),
    (["segment", "{ct}", "--out", "{ct}"], "is a file"),
    (["segment", "{ct}", "--out", "{ct}/sub"], "cannot write to the output folder"),
    (["segment", "{ct}", "--out", "/proc/orbitseg-test/out"], "cannot write to the output folder"),
    (["segment", "{noise}", "--out", "{out}"], "cannot resolve the 3-5 mm rectus muscles"),
    (["segment", "{noair}", "--out", "{out}"], "not Hounsfield units"),
    (["segment", "{blank}", "--out", "{out}"], "give the eye boxes and slices yourself with --voi"),
    (["ensemble", "{model}", "{model}", "--out", "{dir}"], "is a folder"),
])
def test_cli_errors_are_one_line_and_non_zero(tmp_path, model_dir, args, message, capsys):
    """Every refused input: exit 1, one line on stderr with nothing before it (progress on, as by
    default), no traceback and no output file. In this process (``test_protocol`` runs the command
    line as its own process once)."""
    ct = write_image(blob_phantom(spacing=(0.8, 0.8, 2.0)), tmp_path / "ct.nii.gz")
    noise = make_image(np.random.default_rng(0).random((10, 10, 10), dtype=np.float32), spacing=(10.0, 10.0, 10.0))
    blank = np.full((20, 60, 60), -1000, np.int16)  # air around a block of soft tissue: no globes
    blank[2:18, 10:50, 10:50] = 20
    blank = make_image(blank, spacing=(1.0, 1.0, 2.0))
    fill = {"missing": str(tmp_path / "nope.nii.gz"), "out": str(tmp_path / "out"), "ct": str(ct),
            "model": str(model_dir / "tiny-sv.pt"), "dir": str(tmp_path),
            "noise": str(write_image(noise, tmp_path / "noise.nii.gz")),
            "noair": str(write_image(blob_phantom(spacing=(0.8, 0.8, 2.0)) + 1024, tmp_path / "noair.nii.gz")),
            "blank": str(write_image(blank, tmp_path / "blank.nii.gz"))}
    argv = [a.format(**fill) for a in args]
    if "--model" not in argv and argv[0] == "segment":
        argv += ["--model", str(model_dir / "tiny-sv.pt")]
    if message == "CUDA" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(protocol.ERROR_PREFIX) and message in lines[0]
    assert not (tmp_path / "out" / "segmentation.seg.nrrd").exists()
