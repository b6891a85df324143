"""Batch mode end to end: a phantom study list mixed with broken studies, real files, real (tiny) models."""
from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import stats

from conftest import ROTATIONS, blob_phantom, bright_model
from OrbitSegLib import models, structures
from OrbitSegLib.batch import BatchConfig, StudyListError, read_studies, run_batch
from OrbitSegLib.batch.overlay import eye_views
from OrbitSegLib.cli import main
from OrbitSegLib.imageio import read_image, same_grid, write_image
from OrbitSegLib.phantom import write_dataset
from OrbitSegLib.segio import read_reference

REPO = Path(__file__).resolve().parents[1]
GOOD = ("phantom_5_0000", "phantom_5_0001", "phantom_5_0002")
BAD = {  # id -> (stage, words of the reason)
    "missing": ("read image", "file not found"),
    "corrupt": ("read image", "cannot read image"),
    "flat": ("read image", "2D"),
    "noorbit": ("find orbits", "no orbit found"),
    "badslices": ("find orbits", "end slice 999 is outside the image"),
    "badref": ("read reference", "different grid"),
}


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A small randomly initialised SV-Net checkpoint (as test_pipeline's model_dir)."""
    torch.manual_seed(0)
    net = models.create("sv-net", widths=[4, 4, 8, 8, 8])
    path = tmp_path_factory.mktemp("models") / "tiny-sv.pt"
    models.save_checkpoint(path, net, models.make_card(net, window=(48, 400), spacing=(1.0, 1.0, 2.0),
                                                       input_size=(32, 32, 16), training_data="random init"))
    return path


@pytest.fixture(scope="module")
def study_list(tmp_path_factory) -> Path:
    """Three small phantom studies with references and a ``group`` column, then six broken studies."""
    folder = tmp_path_factory.mktemp("studies")
    rows = read_rows(write_dataset(folder, len(GOOD), seed=5, small=True))
    for row, group in zip(rows, ("TAO", "control", "TAO")):
        row["group"] = group
    (folder / "corrupt").mkdir()
    (folder / "corrupt" / "ct.nii.gz").write_bytes(b"\x1f\x8b this is not a NIfTI file")
    write_image(sitk.Image(64, 64, sitk.sitkInt16), folder / "flat.nrrd")
    blank = sitk.Image(60, 60, 20, sitk.sitkInt16) - 1000  # air around a block of soft tissue, no globes
    blank[10:50, 10:50, 2:18] = sitk.Image(40, 40, 16, sitk.sitkInt16) + 20
    blank.SetSpacing((1.0, 1.0, 2.0))
    write_image(blank, folder / "blank.nrrd")
    case0, case1 = rows[0], rows[1]
    rows += [
        {"id": "missing", "image": "nope/ct.nii.gz", "group": "TAO"},
        {"id": "corrupt", "image": "corrupt/ct.nii.gz", "group": "TAO"},
        {"id": "flat", "image": "flat.nrrd", "group": "control"},
        {"id": "noorbit", "image": "blank.nrrd", "group": "control"},
        {"id": "badslices", "image": case0["image"], "start_slice": "5", "end_slice": "999", "group": "TAO"},
        {"id": "badref", "image": case0["image"], "reference": case1["reference"], "group": "TAO"},
    ]
    columns = ["id", "image", "reference", "start_slice", "end_slice", "group"]
    path = folder / "batch_studies.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: row.get(c, "") for c in columns} for row in rows)
    return path


def run_cli(study_list: Path, out: Path, model: Path, *extra: str) -> int:
    return main(["batch", str(study_list), "--out", str(out), "--model", str(model), "--device", "cpu",
                 "--progress", "none", *extra])


def output_mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for s in GOOD for p in (out / s).iterdir()}


def expected_agreement(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Agreement statistics computed here, independently, with NumPy and SciPy."""
    diff = pred - ref
    rel = 100 * diff / ref
    constant = np.ptp(pred) == 0 or np.ptp(ref) == 0
    r, p = (math.nan, math.nan) if constant else stats.pearsonr(pred, ref)
    half = stats.norm.ppf(0.975) / np.sqrt(len(pred) - 3) if len(pred) >= 4 else math.nan
    sd = np.std(diff, ddof=1)
    return {"n": len(pred), "mae": np.mean(np.abs(diff)), "rmse": np.sqrt(np.mean(diff ** 2)), "pearson_r": r,
            "pearson_p": p, "pearson_r_ci_low": np.tanh(np.arctanh(r) - half),
            "pearson_r_ci_high": np.tanh(np.arctanh(r) + half), "relative_error_mean_pct": rel.mean(),
            "relative_error_min_pct": rel.min(), "relative_error_max_pct": rel.max(), "bland_altman_bias": diff.mean(),
            "bland_altman_lower": diff.mean() - 1.96 * sd, "bland_altman_upper": diff.mean() + 1.96 * sd}


def test_batch_outputs_errors_agreement_report_and_resume(tmp_path, study_list, tiny_model):
    out = tmp_path / "out"
    assert run_cli(study_list, out, tiny_model) == 1  # some studies failed

    # one clear error row per broken study, none for the good ones
    errors = {r["id"]: r for r in read_rows(out / "errors.csv")}
    assert set(errors) == set(BAD)
    for study_id, (stage, words) in BAD.items():
        assert errors[study_id]["stage"] == stage, errors[study_id]
        assert words in errors[study_id]["reason"], errors[study_id]
        assert "\n" not in errors[study_id]["reason"]
    assert errors["missing"]["image"].endswith(os.path.join("nope", "ct.nii.gz"))
    assert not (out / "badref" / "batch.json").exists()

    # good studies: outputs on their CT's grid, overlay, completion marker
    studies = {s.id: s for s in read_studies(study_list)}
    for study_id in GOOD:
        folder = out / study_id
        ct = read_image(studies[study_id].image)
        segmentation = read_reference(folder / "segmentation.seg.nrrd")
        assert same_grid(segmentation, ct)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(segmentation),
                                      sitk.GetArrayFromImage(read_image(folder / "labels.nii.gz")))
        assert (folder / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        marker = json.loads((folder / "batch.json").read_text(encoding="utf-8"))
        assert marker["id"] == study_id and marker["model"] == "tiny-sv" and marker["device"] == "cpu"

    # long table: 12 rows per good study in list order, the extra column carried, same values as per study
    volumes = read_rows(out / "volumes.csv")
    assert [r["id"] for r in volumes] == [s for s in GOOD for _ in range(12)]
    assert list(volumes[0])[:4] == ["id", "group", "side", "structure"]
    assert {r["id"]: r["group"] for r in volumes} == {"phantom_5_0000": "TAO", "phantom_5_0001": "control",
                                                       "phantom_5_0002": "TAO"}
    for study_id in GOOD:
        own = read_rows(out / study_id / "volumes.csv")
        mine = [r for r in volumes if r["id"] == study_id]
        assert [{k: r[k] for k in own[0]} for r in mine] == own
        assert all(r["reference_volume_cm3"] != "" and r["dice"] != "" for r in mine)
    wide = read_rows(out / "volumes_wide.csv")
    assert [r["id"] for r in wide] == list(GOOD) and len(wide[0]) == 2 + 12
    for r in volumes:
        row = next(w for w in wide if w["id"] == r["id"])
        assert row[f"{r['side']}_{r['structure']}_cm3"] == r["volume_cm3"]

    # agreement.csv against NumPy/SciPy on volumes.csv
    agreement = read_rows(out / "agreement.csv")
    assert len(agreement) == 3 * len(structures.STRUCTURES)
    for row in agreement:
        chosen = [r for r in volumes if r["structure"] == row["structure"] and row["side"] in ("both", r["side"])]
        pred = np.array([float(r["volume_cm3"]) for r in chosen])
        ref = np.array([float(r["reference_volume_cm3"]) for r in chosen])
        for key, value in expected_agreement(pred, ref).items():
            got = float(row[key]) if row[key] != "" else math.nan
            assert got == pytest.approx(value, rel=2e-5, abs=1e-9, nan_ok=True), (row["structure"], row["side"], key)
    assert any(row["pearson_r"] != "" for row in agreement)  # the check above covered real correlations

    # self-contained report
    report = (out / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", report, re.IGNORECASE)
    assert "<script" not in report.lower() and "@import" not in report
    assert report.count("data:image/png;base64,") == len(GOOD)
    assert report.count("data:image/svg+xml;base64,") == 3  # scatter, Bland–Altman, asymmetry
    assert "Pearson R [95% CI]" in report
    assert all(s in report for s in GOOD) and "end slice 999 is outside the image" in report
    # the QA flags of the per-study tables reach the long table and, first, the report's "Needs review"
    review = [r for r in volumes if {"implausible", "uncertain", "input"} & set(r["qa"].split(";"))]
    assert review, "the tiny random model's results should be flagged"
    assert report.index("Needs review") < report.index("Failed studies") < report.index("Volumes per study")
    first_reasons = [r["qa_reasons"].split("; ")[0] for r in review]
    assert all(reason.split(": ", 1)[1] in report for reason in first_reasons if reason.startswith("implausible"))
    log = (out / "batch.log").read_text(encoding="utf-8")
    assert all(f"{s}: done" in log for s in GOOD) and "badref: FAILED at read reference" in log

    # a rerun skips the finished studies (files untouched) and rebuilds the same tables
    before = output_mtimes(out)
    assert run_cli(study_list, out, tiny_model) == 1
    assert output_mtimes(out) == before
    log = (out / "batch.log").read_text(encoding="utf-8").split("=== orbitseg")[-1]
    assert all(f"{s}: skipped" in log for s in GOOD) and f"{GOOD[0]}: done" not in log
    assert read_rows(out / "volumes.csv") == volumes and read_rows(out / "agreement.csv") == agreement
    assert {r["id"] for r in read_rows(out / "errors.csv")} == set(BAD)

    # other inference options change the fingerprint: all recomputed; so does --force
    assert run_cli(study_list, out, tiny_model, "--overlap", "0.25") == 1
    changed = output_mtimes(out)
    assert all(changed[k] != before[k] for k in before if k.endswith("batch.json"))
    assert run_cli(study_list, out, tiny_model, "--overlap", "0.25", "--force") == 1
    assert all(output_mtimes(out)[k] != changed[k] for k in changed if k.endswith("batch.json"))


def test_good_list_exits_zero_and_json_progress(tmp_path, study_list, tiny_model, capsys):
    good = tmp_path / "good.tsv"
    rows = [r for r in read_rows(study_list) if r["id"] in GOOD[:2]]
    with open(good, "w", newline="", encoding="utf-8") as handle:
        handle.write("id\timage\tside\n")
        for r in rows:
            handle.write(f"{r['id']}\t{study_list.parent / r['image']}\tOD\n")
    out = tmp_path / "out"
    assert main(["batch", str(good), "--out", str(out), "--model", str(tiny_model), "--device", "cpu",
                 "--progress", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert lines[0]["progress"] == 0.0 and lines[-1]["progress"] == 1.0 and lines[-1]["done"] == 2
    volumes = read_rows(out / "volumes.csv")
    assert {r["side"] for r in volumes} == {"right"} and len(volumes) == 12
    assert "reference_volume_cm3" not in volumes[0] and not (out / "agreement.csv").exists()
    assert read_rows(out / "errors.csv") == []
    wide = read_rows(out / "volumes_wide.csv")
    assert wide[0]["left_globe_cm3"] == "" and wide[0]["right_globe_cm3"] != ""


def test_study_list_problems_are_reported_together_before_any_work(tmp_path, tiny_model, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,Image,start_slice,side,visit\n"
                   "a1,a.nii.gz,3,right,1\n"
                   "A1,b.nii.gz,,,2\n"
                   "b/2,c.nii.gz,x,,3\n"
                   "c3,d.nii.gz,4.5,up,4\n"
                   "d4,,,,5\n"
                   "e5,e.nii.gz,,,6,surplus\n"
                   "C3,f.nii.gz,y,,7\n", encoding="utf-8")
    with pytest.raises(StudyListError) as info:
        read_studies(bad)
    problems = info.value.problems
    expected = ["row 2: duplicate id 'A1' (also row 1", "row 3 (id b/2): id 'b/2' must", "row 3 (id b/2): start_slice 'x'",
                "row 4 (id c3): start_slice '4.5' is not an integer", "row 4 (id c3): side 'up'",
                "row 5 (id d4): empty image path", "row 6: 1 more value(s)",
                "row 7: duplicate id 'C3' (also row 4", "row 7 (id C3): start_slice 'y'"]
    assert len(problems) == len(expected)
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)
    out = tmp_path / "out"
    assert main(["batch", str(bad), "--out", str(out), "--model", str(tiny_model), "--progress", "none"]) == 1
    err = capsys.readouterr().err
    assert "9 problems in the study list, nothing was run" in err and not out.exists()

    reserved = tmp_path / "reserved.csv"
    reserved.write_text("id,image\nerrors.csv,a.nii.gz\n", encoding="utf-8")
    with pytest.raises(StudyListError, match="'errors.csv' is the name of a batch output file"):
        read_studies(reserved)
    header = tmp_path / "header.csv"
    header.write_text("id\timage\nx\ty.nii.gz\n", encoding="utf-8")
    with pytest.raises(StudyListError, match="missing columns id, image .*use commas in a .csv file"):
        read_studies(header)
    clash = tmp_path / "clash.csv"
    clash.write_text("id,image,volume_cm3\nx,y.nii.gz,1\n", encoding="utf-8")
    with pytest.raises(StudyListError, match="volume_cm3 would clash"):
        read_studies(clash)


def test_outputs_may_not_land_among_the_inputs(study_list, tiny_model, capsys):
    """--out on the phantom folder would overwrite its case folders' labels.nii.gz: refused up front."""
    before = sorted(p.name for p in (study_list.parent / GOOD[0]).iterdir())
    assert run_cli(study_list, study_list.parent, tiny_model) == 1
    assert "choose another output folder" in capsys.readouterr().err
    assert sorted(p.name for p in (study_list.parent / GOOD[0]).iterdir()) == before
    # a study list where the batch tables go (volumes.csv) would be replaced by the results table
    out = study_list.parent / "out-here"
    out.mkdir(exist_ok=True)
    listed = out / "volumes.csv"
    listed.write_text(study_list.read_text(encoding="utf-8").replace(",phantom_5", ",../phantom_5"), encoding="utf-8")
    text = listed.read_text(encoding="utf-8")
    assert run_cli(listed, out, tiny_model) == 1
    assert "the batch tables would replace" in capsys.readouterr().err
    assert listed.read_text(encoding="utf-8") == text and sorted(p.name for p in out.iterdir()) == ["volumes.csv"]
    assert run_cli(study_list, listed, tiny_model) == 1  # an existing file as the output folder
    assert "is a file" in capsys.readouterr().err
    assert main(["batch", str(study_list), "--out", "", "--model", str(tiny_model), "--progress", "none"]) == 1
    assert "the output folder is empty" in capsys.readouterr().err


def test_study_list_paths_sides_and_extra_columns(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "list.tsv"
    path.write_text("id\t image \tReference\tside\tend_slice\tvisit date\n"
                    f"p1\tct/p1.nii.gz\t\tOS\t12.0\t2024-01-02\n"
                    f"p2\t{tmp_path}/abs.nrrd\tref.seg.nrrd\t\t\t\n", encoding="utf-8")
    first, second = read_studies(path)
    assert first.image == tmp_path / "sub" / "ct" / "p1.nii.gz" and first.reference is None
    assert (first.side, first.end_slice, first.start_slice) == ("left", 12, None)
    assert first.extra == {"visit date": "2024-01-02"}
    assert second.image == tmp_path / "abs.nrrd" and second.reference == tmp_path / "sub" / "ref.seg.nrrd"
    assert second.side == "both"


def test_worker_processes_and_dask_give_the_sequential_results(tmp_path, study_list, tiny_model):
    import psutil
    from distributed import LocalCluster

    good = tmp_path / "good.csv"
    rows = [r for r in read_rows(study_list) if r["id"] in GOOD[:2] or r["id"] == "missing"]
    with open(good, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "image": str(study_list.parent / r["image"]),
                          "reference": str(study_list.parent / r["reference"]) if r["reference"] else ""} for r in rows)
    config = BatchConfig(model=str(tiny_model), device="cpu")
    sequential = run_batch(good, tmp_path / "seq", config)
    processes = run_batch(good, tmp_path / "proc", BatchConfig(model=str(tiny_model), device="cpu", workers=2))
    left = [c for c in psutil.Process().children(recursive=True) if "resource_tracker" not in " ".join(c.cmdline())]
    assert not left, "worker processes left behind (running or unreaped)"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        dask = run_batch(good, tmp_path / "dask", BatchConfig(model=str(tiny_model), device="cpu",
                                                              scheduler=cluster.scheduler_address))
    reference = read_rows(tmp_path / "seq" / "volumes.csv")
    for summary in (sequential, processes, dask):
        assert (summary.counts.done, summary.counts.failed) == (2, 1)
        assert [o.id for o in summary.failed] == ["missing"]
        rows = read_rows(summary.out_dir / "volumes.csv")
        assert [(r["id"], r["segment"]) for r in rows] == [(r["id"], r["segment"]) for r in reference]
        for mine, theirs in zip(rows, reference):  # thread counts differ: allow a voxel or two
            assert float(mine["volume_cm3"]) == pytest.approx(float(theirs["volume_cm3"]), abs=0.02)


def test_slicer_script_and_ctrl_c_keep_finished_studies(tmp_path, study_list, tiny_model):
    """OrbitSeg/OrbitSegScripts/batch.py as PythonSlicer runs it; Ctrl-C stops the workers, keeps what finished, resumes."""
    import psutil

    row = next(r for r in read_rows(study_list) if r["id"] == GOOD[0])
    many = tmp_path / "many.csv"
    ids = [f"s{i:02d}" for i in range(8)]
    many.write_text("id,image\n" + "".join(f"{i},{study_list.parent / row['image']}\n" for i in ids), encoding="utf-8")
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "OrbitSeg" / "OrbitSegScripts" / "batch.py"), "--", str(many), "--out", str(out),
               "--model", str(tiny_model), "--device", "cpu", "--workers", "2", "--threads", "1", "--progress", "none"]
    # Ctrl-C's default action in the batch, also when this test runs where SIGINT is ignored (a shell's
    # background job), which the child would otherwise inherit
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path, encoding="utf-8",
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "batch.log").is_file() and ": done in" in (out / "batch.log").read_text(encoding="utf-8"):
            break
        time.sleep(0.2)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert proc.poll() is None and workers, "the batch ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    finished = [i for i in ids if (out / i / "batch.json").is_file()]
    assert 1 <= len(finished) < len(ids)
    assert sorted({r["id"] for r in read_rows(out / "volumes.csv")}) == finished
    assert "interrupted" in (out / "report.html").read_text(encoding="utf-8")

    rerun = [arg if arg != "2" else "1" for arg in command]  # one worker is enough to finish
    done = subprocess.run(rerun, capture_output=True, text=True, cwd=tmp_path, encoding="utf-8")
    assert done.returncode == 0, done.stderr
    log = (out / "batch.log").read_text(encoding="utf-8").split("=== orbitseg")[-1]
    assert all(f"{i}: skipped" in log for i in finished)
    assert {r["id"] for r in read_rows(out / "volumes.csv")} == set(ids)


def test_script_arguments_as_slicer_passes_them():
    sys.path.insert(0, str(REPO / "OrbitSeg" / "OrbitSegScripts"))
    try:
        import batch
    finally:
        sys.path.remove(str(REPO / "OrbitSeg" / "OrbitSegScripts"))
    script = str(REPO / "OrbitSeg" / "OrbitSegScripts" / "batch.py")
    assert batch.script_arguments([script, "--", "list.csv", "--out", "d"]) == ["list.csv", "--out", "d"]
    assert batch.script_arguments([script, "list.csv", "--out", "d"]) == ["list.csv", "--out", "d"]
    assert batch.script_arguments(["Slicer", "--no-splash", "--python-script", script, "--", "l.csv"]) == ["l.csv"]


@pytest.mark.parametrize("orientation", ["ras", "flipped"])
def test_overlay_views_do_not_depend_on_the_scanner_orientation(orientation):
    """Both eyes' axial and coronal views show the same anatomy for LPS and other directions."""
    views = {}
    for name in ("lps", orientation):
        image = blob_phantom(ROTATIONS[name])
        result = segment_with_bright_model(image)
        views[name] = {side: eye_views(image, result.labelmap, result.voi, side) for side in structures.SIDES}
    for side in structures.SIDES:
        for plane in ("axial", "coronal"):
            a, b = views["lps"][side][plane][1], views[orientation][side][plane][1]
            globe = structures.label_value(side, "globe")
            assert (a == globe).sum() > 20
            assert a.shape == b.shape and ((a == globe) == (b == globe)).mean() > 0.98
    # radiological convention: each orbit box reaches further medially than laterally (voi.ORBIT_BOX_MM), so
    # with the patient's right on the viewer's left the right globe lies left of its panel's centre, the left right
    for side, towards_left in (("right", True), ("left", False)):
        for plane in ("axial", "coronal"):
            labels = views["lps"][side][plane][1]
            column = np.argwhere(labels == structures.label_value(side, "globe"))[:, 1].mean() / labels.shape[1]
            assert (column < 0.47) if towards_left else (column > 0.53), (side, plane, column)


def segment_with_bright_model(image):
    from OrbitSegLib.pipeline import segment_image
    return segment_image(image, bright_model())


def test_parallel_runs_start_with_the_largest_studies(tmp_path):
    from OrbitSegLib.batch.runner import largest_first
    from OrbitSegLib.batch.studies import Study

    sizes = {"small": 10, "large": 3000, "medium": 500}
    tasks = []
    for name, size in sizes.items():
        (tmp_path / f"{name}.nrrd").write_bytes(b"x" * size)
        tasks.append((Study(name, tmp_path / f"{name}.nrrd"), "fingerprint"))
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    for k in range(3):
        (dicom / f"{k}.dcm").write_bytes(b"x" * 400)  # a folder counts all its files: 1200 bytes
    tasks.append((Study("dicom", dicom), "fingerprint"))
    tasks.append((Study("missing", tmp_path / "missing.nrrd"), "fingerprint"))  # fails later, runs last
    assert [t[0].id for t in largest_first(tasks)] == ["large", "dicom", "medium", "small", "missing"]
