"""Accuracy summaries and the evaluate command."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from OrbitSegLib import evaluation, models, structures
from OrbitSegLib.batch import read_studies
from OrbitSegLib.cli import main
from OrbitSegLib.phantom import exact_volumes
from OrbitSegLib.tables import read_csv


def _rows(seed=0, studies=4):
    rng = np.random.default_rng(seed)
    rows = []
    for n in range(studies):
        for side in structures.SIDES:
            for s in structures.STRUCTURES:
                ref = rng.uniform(0.4, 8.0)
                rows.append({"id": f"s{n}", "side": side, "structure": s.key, "volume_cm3": ref * rng.uniform(0.9, 1.1),
                             "reference_volume_cm3": ref, "iou": rng.uniform(0.6, 0.95), "dice": rng.uniform(0.7, 0.97),
                             "vs": rng.uniform(0.8, 1.0), "sensitivity": rng.uniform(0.8, 1.0),
                             "specificity": rng.uniform(0.999, 1.0)})
    return rows


def test_overlap_summary_means_and_sds():
    rows = _rows()
    summary = evaluation.overlap_summary(rows)
    assert len(summary) == 6 * 3
    row = next(r for r in summary if r["structure"] == "medial_rectus" and r["side"] == "left")
    values = [r["iou"] for r in rows if r["structure"] == "medial_rectus" and r["side"] == "left"]
    assert row["n"] == 4
    assert row["iou_mean"] == pytest.approx(np.mean(values)) and row["iou_sd"] == pytest.approx(np.std(values, ddof=1))
    both = next(r for r in summary if r["structure"] == "medial_rectus" and r["side"] == "both")
    assert both["n"] == 8


def test_overlap_summary_has_study_bootstrap_intervals():
    rows = _rows(studies=12)
    summary = evaluation.overlap_summary(rows)
    both = next(r for r in summary if r["structure"] == "optic_nerve" and r["side"] == "both")
    assert both["iou_ci_low"] < both["iou_mean"] < both["iou_ci_high"]
    assert both["dice_ci_low"] < both["dice_mean"] < both["dice_ci_high"]
    assert evaluation.overlap_summary(rows)[0]["iou_ci_low"] == summary[0]["iou_ci_low"]  # seeded: reruns agree
    few = evaluation.overlap_summary(_rows(studies=2))
    assert all(np.isnan(r["iou_ci_low"]) and np.isnan(r["dice_ci_high"]) for r in few)


def test_study_bootstrap_resamples_studies_not_eyes():
    """Two identical eyes per study carry no more information than one: the interval must not narrow,
    as it would (by about √2) if eyes were resampled as independent."""
    rng = np.random.default_rng(5)
    values = rng.normal(0.8, 0.05, size=20)
    one_eye = [{"id": f"s{i}", "iou": v} for i, v in enumerate(values)]
    two_eyes = one_eye + [dict(r) for r in one_eye]
    assert evaluation.study_bootstrap_ci(two_eyes, "iou") == pytest.approx(evaluation.study_bootstrap_ci(one_eye, "iou"))
    same = [{"id": f"s{i}", "iou": 0.9} for i in range(5)]
    assert evaluation.study_bootstrap_ci(same, "iou") == pytest.approx((0.9, 0.9))


def test_study_bootstrap_gives_the_same_interval_on_scipy_without_rng(monkeypatch):
    """Slicer's SciPy (< 1.15) takes the seed as ``random_state``: the same resamples, the same interval."""
    rows = [{"id": f"s{i}", "iou": v} for i, v in enumerate(np.random.default_rng(3).normal(0.8, 0.05, size=12))]
    current = evaluation.study_bootstrap_ci(rows, "iou")
    monkeypatch.setattr(evaluation, "_bootstrap_takes_rng", lambda: False)
    assert evaluation.study_bootstrap_ci(rows, "iou") == current


def test_study_bootstrap_interval_covers_the_true_mean():
    """Coverage over 200 simulated evaluations of 24 studies (two correlated eyes each, skewed IoU):
    the 95 % interval holds the true mean in about 95 % of them."""
    rng = np.random.default_rng(11)
    true_mean, hits = 1 - 0.15, 0
    for _ in range(200):
        study_effect = rng.exponential(0.1, size=24)  # mean 0.1: a skewed, study-wide loss
        rows = [{"id": f"s{i}", "iou": 1 - 0.05 - study_effect[i] + rng.normal(0, 0.02)}
                for i in range(24) for _eye in range(2)]
        low, high = evaluation.study_bootstrap_ci(rows, "iou")
        hits += low <= true_mean <= high
    assert 0.89 <= hits / 200 <= 0.99, hits


def test_headline_numbers():
    rows = _rows()
    h = evaluation.headline(rows)
    per_structure = [np.mean([r["iou"] for r in rows if r["structure"] == k]) for k in structures.TAO_KEYS]
    assert h["tao_mean_iou"] == pytest.approx(np.mean(per_structure))
    assert h["tao_min_iou"] == pytest.approx(min(per_structure))
    assert h["tao_mean_iou_ci_low"] < h["tao_mean_iou"] < h["tao_mean_iou_ci_high"]
    assert np.isnan(evaluation.headline(_rows(studies=2))["tao_mean_iou_ci_low"])
    assert h["globe_iou"] == pytest.approx(np.mean([r["iou"] for r in rows if r["structure"] == "globe"]))
    text = evaluation.markdown_report("demo", rows)
    assert "| medial rectus | left | 4 |" in text and "Headline" in text
    assert "| IoU 95% CI |" in text and "| R 95% CI |" in text
    assert "0.760" in evaluation.papers_table()


def test_exact_volume_agreement():
    rows = _rows(studies=3)
    exact = {}
    for r in rows:
        exact.setdefault(r["id"], {}).setdefault(r["side"], {})[r["structure"]] = r["volume_cm3"]
        r["reference_volume_cm3"] = r["volume_cm3"] - 0.01 * (1 + int(r["id"][1:]))
    rows.append({**rows[0], "id": "not-a-phantom", "volume_cm3": 99.0})
    table = evaluation.exact_volume_agreement(rows, exact)
    assert [t["structure"] for t in table] == [s.key for s in structures.STRUCTURES]
    for t in table:
        assert t["n"] == 6
        assert t["model_mae"] == pytest.approx(0.0) and t["model_pearson_r"] == pytest.approx(1.0)
        assert t["reference_mae"] == pytest.approx(0.02)  # offsets 0.01, 0.02, 0.03 cm³, two sides each
    assert "| optic nerve | 6 | 0.000 | 1.0000 | 0.020 |" in evaluation.exact_volume_report(table)
    assert evaluation.exact_volume_agreement(rows, {}) == []


def test_evaluate_command_on_phantom_cases(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    torch.manual_seed(0)
    net = models.create("sv-net", widths=[4, 4, 8, 8, 8])
    models.save_checkpoint(folder / "tiny.pt", net, models.make_card(net, window=(48, 400), spacing=(1.0, 1.0, 2.0),
                                                                     input_size=(32, 32, 16)))
    from OrbitSegLib.phantom import write_dataset
    studies = write_dataset(tmp_path / "data", 2, seed=5, small=True)
    code = main(["evaluate", "--studies", str(studies), "--model", str(folder / "tiny.pt"), "--out",
                 str(tmp_path / "eval"), "--device", "cpu", "--progress", "none", "--record"])
    assert code == 0
    numbers = json.loads((tmp_path / "eval" / "headline.json").read_text(encoding="utf-8"))
    assert numbers["studies"] == 2 and numbers["failed_studies"] == 0
    assert 0.0 <= numbers["globe_iou"] <= 1.0
    assert "| globe | both | 4 |" in (tmp_path / "eval" / "accuracy.md").read_text(encoding="utf-8")
    volumes = list(csv.DictReader(open(tmp_path / "eval" / "results" / "volumes.csv", encoding="utf-8")))
    flagged_eyes = {(r["id"], r["side"]) for r in volumes if "implausible" in r["qa"].split(";")}
    assert numbers["qa"]["eyes"] == 4 and numbers["qa"]["eyes_implausible"] == len(flagged_eyes)
    assert f"`implausible` structure: {len(flagged_eyes)} of 4" in (tmp_path / "eval" / "accuracy.md").read_text(
        encoding="utf-8")
    assert models.read_card(folder / "tiny.pt").metrics["held_out"] == {"data": str(studies), **numbers}
    # the phantom's exact volumes: the reference labelmap's error is what the cases' info.json says
    infos = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((tmp_path / "data").glob("*/info.json"))]
    exact = {r["structure"]: r for r in read_csv(tmp_path / "eval" / "exact_volumes.csv")}
    for s in structures.STRUCTURES:
        gaps = [abs(i["volumes_cm3"][side][s.key] - i["true_volumes_cm3"][side][s.key]) for i in infos
                for side in structures.SIDES]
        assert int(exact[s.key]["n"]) == 4
        assert float(exact[s.key]["reference_mae"]) == pytest.approx(np.mean(gaps), abs=2e-4)
    assert "Against the phantom's exact volumes" in (tmp_path / "eval" / "accuracy.md").read_text(encoding="utf-8")
    # a study without a phantom info.json beside its image (real CT) has no exact volumes
    (tmp_path / "data" / infos[0]["id"] / "info.json").unlink()
    assert exact_volumes(read_studies(studies)) == {infos[1]["id"]: infos[1]["true_volumes_cm3"]}
    # test-time grid shifts are recorded apart, leaving the plain numbers as they were
    assert main(["evaluate", "--studies", str(studies), "--model", str(folder / "tiny.pt"), "--out",
                 str(tmp_path / "eval2"), "--device", "cpu", "--progress", "none", "--record", "--grid-shifts", "2"]) == 0
    shifted = json.loads((tmp_path / "eval2" / "headline.json").read_text(encoding="utf-8"))
    metrics = models.read_card(folder / "tiny.pt").metrics
    assert metrics["held_out_grid_shifts_2"] == {"data": str(studies), **shifted}
    assert metrics["held_out"] == {"data": str(studies), **numbers}


def test_evaluate_never_records_without_references_or_with_failed_studies(tmp_path, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    net = models.create("sv-net", widths=[4, 4, 8, 8, 8])
    model = folder / "tiny.pt"
    models.save_checkpoint(model, net, models.make_card(net, window=(48, 400), spacing=(1.0, 1.0, 2.0),
                                                        input_size=(32, 32, 16), metrics={"held_out": {"studies": 9}}))
    from OrbitSegLib.phantom import write_dataset
    studies = write_dataset(tmp_path / "data", 1, seed=6, small=True)
    rows = read_csv(studies)
    plain = tmp_path / "data" / "no_reference.csv"
    plain.write_text("id,image\n" + "".join(f"{r['id']},{r['image']}\n" for r in rows), encoding="utf-8")
    common = ["--model", str(model), "--device", "cpu", "--progress", "none", "--record"]
    assert main(["evaluate", "--studies", str(plain), "--out", str(tmp_path / "e1"), *common]) != 0
    assert "has a reference segmentation" in capsys.readouterr().err
    broken = tmp_path / "data" / "one_missing.csv"
    broken.write_text(studies.read_text(encoding="utf-8") + "gone,gone/ct.nii.gz,gone/reference.seg.nrrd,,\n",
                      encoding="utf-8")
    assert main(["evaluate", "--studies", str(broken), "--out", str(tmp_path / "e2"), *common]) == 1
    assert "Not recorded in the model card: 1 studies failed" in capsys.readouterr().err
    assert models.read_card(model).metrics["held_out"] == {"studies": 9}
    assert json.loads((tmp_path / "e2" / "headline.json").read_text(encoding="utf-8"))["studies"] == 1
