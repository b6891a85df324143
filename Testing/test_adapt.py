"""``orbitseg adapt`` on tiny phantom studies: the held-back eye, before/after, the card, the site folder."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

import numpy as np
import SimpleITK as sitk

from OrbitSegLib import models, qa, site_cases, structures
from OrbitSegLib.cli import main
from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.imageio import read_image, write_image
from OrbitSegLib.phantom import write_dataset
from OrbitSegLib.segio import read_reference, write_seg_nrrd
from OrbitSegLib.protocol import ERROR_PREFIX, TRAINING_LOG_NAME, adapt_work_dir
from OrbitSegLib.training import TrainConfig, studies_from_list, train
from OrbitSegLib.training import adapt as adapt_module
from OrbitSegLib.training import loop as training_loop

TINY_SV = {"widths": [4, 8, 8, 16, 16]}


@pytest.fixture(scope="module")
def site_list(tmp_path_factory) -> Path:
    """Four small phantom studies (a site's corrected cases) in a study list."""
    return write_dataset(tmp_path_factory.mktemp("site"), 4, seed=23, small=True)


@pytest.fixture(scope="module")
def start_model(site_list, tmp_path_factory) -> Path:
    """A tiny SV-Net (1 × 1 × 2 mm grid, 48 × 64 × 16 patches) to adapt, trained for one epoch elsewhere."""
    out = tmp_path_factory.mktemp("start")
    config = TrainConfig(out_dir=str(out), architecture="sv-net", model_config=TINY_SV, spacing=(1.0, 1.0, 2.0),
                         input_size=(48, 64, 16), folds=1, epochs=1, batch_size=2, samples_per_epoch=2, seed=3,
                         device="cpu", name="tiny-start", description="tiny start")
    return train(config, studies_from_list(site_list)).model_path


@pytest.fixture(autouse=True)
def short_budget(monkeypatch):
    """A few patches per epoch instead of the defaults' 64: the run's logic, not its length, is tested."""
    monkeypatch.setattr(adapt_module, "SAMPLES_PER_EPOCH", 4)
    monkeypatch.setattr(adapt_module, "EPOCHS", 3)


def _log(model_path: Path) -> list[dict]:
    with open(adapt_work_dir(model_path) / TRAINING_LOG_NAME, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_adapt_holds_back_an_eye_and_reports_it_before_and_after(site_list, start_model, tmp_path, capsys):
    out = tmp_path / "models" / "site-a.pt"
    code = main(["adapt", str(site_list), "--out", str(out), "--init", str(start_model), "--device", "cpu",
                 "--progress", "none"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"Model saved: {out} (adapted on 4 studies)" in printed
    assert "Held-back eye phantom_23_0003 OS: mean Dice" in printed and "before" in printed and "after" in printed
    assert "superior rectus" in printed
    before, after = (float(v) for v in re.search(r"mean Dice ([\d.]+) before, ([\d.]+) after", printed).groups())
    advice = "made the held-back eye worse" if after < before else "compare it with the starting model"
    assert advice in printed
    model, card = models.load_checkpoint(out)
    start_card = models.read_card(start_model)
    assert card.spacing == start_card.spacing and card.window == start_card.window
    assert card.input_size == start_card.input_size and card.config == start_card.config
    assert "tiny start, adapted to" in card.description and "(4 corrected studies)" in card.description
    assert f"site data {site_list}" in card.training_data and "phantom_23_0000" in card.training_data
    assert "fine-tuned from tiny-start.pt" in card.training_data and "loss dice_ce" in card.training_data
    cts = sorted(site_list.parent.glob("*/ct.nii.gz"))
    scans = qa.AcquisitionRange.spanning(qa.spacings(read_image(p)) for p in cts)
    assert card.acquisition_range == start_card.acquisition_range == scans  # the start was trained on this site
    assert 0.0 <= card.metrics["start_val_dice"] <= 1.0 and 0.0 <= card.metrics["val_dice"] <= 1.0
    rows = _log(out)
    assert rows[0]["epoch"] == "0" and float(rows[0]["val_dice"]) == pytest.approx(card.metrics["start_val_dice"],
                                                                                  abs=1e-4)
    assert 2 <= len(rows) <= 1 + adapt_module.EPOCHS
    # running again resumes: nothing is trained twice
    assert main(["adapt", str(site_list), "--out", str(out), "--init", str(start_model), "--device", "cpu",
                 "--progress", "none"]) == 0
    assert len(_log(out)) == len(rows)


def test_adapt_on_a_site_folder_with_too_few_studies_to_hold_one_back(site_list, start_model, tmp_path, capsys):
    site = tmp_path / "site"
    for row in list(csv.DictReader(open(site_list, encoding="utf-8")))[:2]:
        folder = site_cases.case_dir(site, row["id"])
        write_image(read_image(site_list.parent / row["image"]), folder / site_cases.CT_NAME)
        (folder / site_cases.REFERENCE_NAME).write_bytes((site_list.parent / row["reference"]).read_bytes())
        site_cases.add_case(site, row["id"], {"model": "sv-net", "corrected": ["right globe"]})
    out = tmp_path / "site-b.pt"
    assert main(["adapt", str(site), "--out", str(out), "--init", str(start_model), "--device", "cpu",
                 "--progress", "none"]) == 0
    printed = capsys.readouterr().out
    assert "adapted on 2 studies" in printed and "No eye was held back" in printed
    _, card = models.load_checkpoint(out)
    assert "adapted to site (2 corrected studies)" in card.description
    assert "val_dice" not in card.metrics and [r["epoch"] for r in _log(out)] == ["1", "2", "3"]


def test_adapt_holds_back_the_right_eye_when_the_last_study_has_no_left(site_list, start_model, tmp_path, capsys):
    """A last study whose reference labels only the right eye: that eye is held back, the others train."""
    rows = list(csv.DictReader(open(site_list, encoding="utf-8")))
    last = rows[-1]
    reference = read_reference(site_list.parent / last["reference"])
    labels = sitk.GetArrayFromImage(reference)
    labels[np.isin(labels, [structures.label_value("left", s.key) for s in structures.STRUCTURES])] = 0
    right_only = sitk.GetImageFromArray(labels)
    right_only.CopyInformation(reference)
    write_seg_nrrd(right_only, tmp_path / "right_only.seg.nrrd", sides=("right",))
    listed = tmp_path / "studies.csv"
    with open(listed, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "image", "reference"])
        writer.writeheader()
        for row in rows:
            ref = tmp_path / "right_only.seg.nrrd" if row is last else site_list.parent / row["reference"]
            writer.writerow({"id": row["id"], "image": site_list.parent / row["image"], "reference": ref})
    result = adapt_module.adapt(listed, tmp_path / "right.pt", init=str(start_model), device="cpu")
    assert result.holdout_eye == (last["id"], "right")
    assert f"Held-back eye {last['id']} OD: mean Dice" in result.summary()
    _, card = models.load_checkpoint(result.model_path)
    assert 0.0 <= card.metrics["start_val_dice"] <= 1.0 and "val_dice" in card.metrics
    # the eye is named by the run, not guessed: a list with no such eye at all is refused with its names
    config = adapt_module.adapt_config(str(start_model), tmp_path / "none.pt", 4, "site",
                                       holdout_eyes=(("no-such-study", "left"),), device="cpu")
    with pytest.raises(OrbitSegError, match="none of the eyes to hold back"):
        train(config, studies_from_list(listed))
    capsys.readouterr()


def test_adapt_refuses_what_it_cannot_use(site_list, start_model, tmp_path, capsys):
    cases = [
        (["adapt", str(site_list), "--out", str(tmp_path / "model.pth"), "--init", str(start_model)], "a .pt file"),
        (["adapt", str(tmp_path), "--out", str(tmp_path / "m.pt")], "holds no studies.csv"),
        (["adapt", str(tmp_path / "none.csv"), "--out", str(tmp_path / "m.pt")], "not found"),
        (["adapt", str(site_list), "--out", str(tmp_path / "m.pt"), "--init", "no-such-model"], "no-such-model"),
    ]
    for argv, reason in cases:
        assert main(argv + ["--progress", "none"]) == 1
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith(ERROR_PREFIX) and reason in error[0]
    assert not (tmp_path / "m-adapt").exists()


def test_patience_stops_a_fold_that_no_longer_improves(site_list, start_model, tmp_path, monkeypatch):
    """A validation Dice that never changes: epoch 1 is the best, and patience 1 stops after epoch 2."""
    monkeypatch.setattr(training_loop, "_validate", lambda *args: (0.3, 0.5, {"globe": 0.5}))
    config = TrainConfig(out_dir=str(tmp_path / "run"), architecture="sv-net", init=str(start_model),
                         spacing=(1.0, 1.0, 2.0), input_size=(48, 64, 16), folds=1, epochs=5, batch_size=2,
                         samples_per_epoch=2, lr=1e-3, device="cpu", name="patient",
                         holdout_eyes=(("phantom_23_0001", "right"),), patience=1)
    result = train(config, studies_from_list(site_list))
    with open(tmp_path / "run" / TRAINING_LOG_NAME, encoding="utf-8") as handle:
        epochs = [r["epoch"] for r in csv.DictReader(handle)]
    assert epochs == ["0", "1", "2"]
    assert result.metrics["epoch"] == 1 and "start_val_dice" in result.metrics
    with pytest.raises(OrbitSegError, match="replaces the folds"):
        train(TrainConfig(out_dir=str(tmp_path / "x"), folds=3, holdout_eyes=(("a", "right"),)), [])
