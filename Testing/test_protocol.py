"""The protocol between the panels and the ``orbitseg`` command line (``OrbitSegLib.protocol``).

Job descriptions become argv that ``cli.build_parser`` parses back into the same jobs; progress and
error lines written by one side are read back by the other; the training outputs a panel reads.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from OrbitSegLib import protocol
from OrbitSegLib.cli import build_parser
from OrbitSegLib.errors import OrbitSegError

REPO = Path(__file__).resolve().parents[1]


def job_from_args(args) -> protocol.SegmentationJob:
    """The segmentation job a parsed ``orbitseg segment`` command line describes."""
    return protocol.SegmentationJob(Path(args.ct), Path(args.out), args.model, args.side, args.device,
                                    Path(args.voi) if args.voi else None, args.start, args.end, args.grid_shifts)


def training_job_from_args(args) -> protocol.TrainingJob:
    """The training job a parsed ``orbitseg train`` command line describes."""
    source = next(s for s in protocol.DATA_SOURCES if getattr(args, s) is not None)
    job = protocol.TrainingJob(Path(args.out), args.name, args.model, source, str(getattr(args, source)), args.folds,
                               args.epochs, args.batch_size, args.lr, args.device, args.restart, args.init or "",
                               args.ensemble, args.soft_targets, args.workers)
    assert args.cache == str(job.cache_dir) and args.progress == "json"
    return job


def test_segmentation_jobs_round_trip_through_the_cli_parser(tmp_path):
    parser = build_parser()
    for job in (protocol.SegmentationJob(tmp_path / "ct.nrrd", tmp_path / "out", "sv-net"),
                protocol.SegmentationJob(tmp_path / "c t.nrrd", tmp_path / "o", str(tmp_path / "m.pt"), "right", "cpu",
                                         tmp_path / "voi.json", 0, 41, grid_shifts=4)):
        args = parser.parse_args(job.arguments())
        assert args.func.__name__ == "cmd_segment" and args.progress == "json"
        assert job_from_args(args) == job


def test_training_jobs_round_trip_through_the_cli_parser(tmp_path):
    parser = build_parser()
    for source, data in (("phantom", "12"), ("studies", str(tmp_path / "studies.csv")), ("folder", str(tmp_path))):
        job = protocol.TrainingJob(tmp_path / "out", "my-model", "seq-unet", source, data, 4, 3, 8, 5e-5, "cpu",
                                   restart=source == "folder", init="sv-net" if source == "studies" else "",
                                   ensemble=source == "phantom", soft_targets=source != "studies", prepare_workers=2)
        args = parser.parse_args(job.arguments())
        assert args.func.__name__ == "cmd_train"
        assert training_job_from_args(args) == job


def test_adapt_jobs_round_trip_through_the_cli_parser(tmp_path):
    parser = build_parser()
    for job in (protocol.AdaptJob(tmp_path / "site", tmp_path / "site" / "models" / "our-site.pt"),
                protocol.AdaptJob(tmp_path / "s i t e", tmp_path / "m.pt", str(tmp_path / "start.pt"), "cpu")):
        args = parser.parse_args(job.arguments())
        assert args.func.__name__ == "cmd_adapt" and (args.progress, args.workers, args.threads) == ("json", 1, None)
        assert protocol.AdaptJob(Path(args.studies), Path(args.out), args.init, args.device) == job
    assert job.work_dir == tmp_path / "m-adapt" and job.log_path == tmp_path / "m-adapt" / protocol.TRAINING_LOG_NAME
    training = protocol.TrainingJob(tmp_path / "run", "m", "sv-net", "phantom", "4", 1, 1, 1, 1e-4)
    assert training.work_dir == training.out_dir  # the Training panel runs both kinds of job alike
    with pytest.raises(OrbitSegError, match="must be a .pt file"):
        protocol.AdaptJob(tmp_path, tmp_path / "m.pth")
    with pytest.raises(OrbitSegError, match="taken by a bundled model"):
        protocol.AdaptJob(tmp_path, tmp_path / "sv-net.pt")


def test_progress_and_error_lines_round_trip():
    line = protocol.progress_line(0.123456, "Segmenting the right eye (OD)", done=1, total=3)
    assert "\n" not in line and protocol.parse_progress(line) == protocol.Progress(0.1235, "Segmenting the right eye (OD)")
    assert protocol.error_message(["x", protocol.error_line("bad slice")], 1) == "bad slice"


def test_the_cli_reports_errors_with_the_protocols_prefix(tmp_path):
    done = subprocess.run([sys.executable, "-m", "OrbitSegLib.cli", "segment", str(tmp_path / "missing.nrrd"),
                           "--out", str(tmp_path / "out"), "--progress", "json"],
                          capture_output=True, text=True, encoding="utf-8", timeout=300)
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and lines[-1].startswith(protocol.ERROR_PREFIX)
    assert "missing.nrrd" in protocol.error_message(lines, done.returncode)


def test_segmentation_job_arguments_are_what_the_cli_accepts(tmp_path):
    job = protocol.SegmentationJob(tmp_path / "ct.nrrd", tmp_path / "out", "sv-net", "left", "cuda", tmp_path / "voi.json", 4, 30)
    args = build_parser().parse_args(job.arguments())
    assert (args.command, args.ct, args.out, args.model, args.side, args.device) == \
        ("segment", str(tmp_path / "ct.nrrd"), str(tmp_path / "out"), "sv-net", "left", "cuda")
    assert (args.voi, args.start, args.end, args.progress) == (str(tmp_path / "voi.json"), 4, 30, "json")
    plain = build_parser().parse_args(protocol.SegmentationJob(tmp_path / "ct.nrrd", tmp_path / "o", "m").arguments())
    assert (plain.voi, plain.start, plain.end, plain.side, plain.device) == (None, None, None, "both", "auto")
    assert plain.grid_shifts == 1 and args.grid_shifts == 1
    shifted = protocol.SegmentationJob(tmp_path / "ct.nrrd", tmp_path / "o", "m", grid_shifts=2)
    assert build_parser().parse_args(shifted.arguments()).grid_shifts == 2
    command = protocol.cli_command("/opt/Slicer/bin/PythonSlicer", ["segment", "x"], library="/lib")
    assert command[:2] == ["/opt/Slicer/bin/PythonSlicer", "-c"] and command[3:] == ["/lib", "segment", "x"]
    assert protocol.library_parent() == REPO / "OrbitSeg"


def test_progress_lines_and_error_messages():
    splitter = protocol.LineSplitter()
    assert splitter.feed('{"progress": 0.1, "message": "Read') == []
    assert splitter.feed('ing"}\r\nWARNING x\n{"progr') == ['{"progress": 0.1, "message": "Reading"}', "WARNING x"]
    assert splitter.feed('ess": 1.5, "message": "Done"}') == []
    assert splitter.flush() == ['{"progress": 1.5, "message": "Done"}']
    assert protocol.parse_progress(splitter.lines[0]) == protocol.Progress(0.1, "Reading")
    assert protocol.parse_progress(splitter.lines[2]) == protocol.Progress(1.0, "Done")  # clamped
    for other in ("WARNING x", "{not json}", '{"message": "no progress"}', '{"progress": "a"}', ""):
        assert protocol.parse_progress(other) is None
    lines = ['{"progress": 0.2, "message": "x"}', protocol.error_line("model 'x' not found"), "Traceback"]
    assert protocol.error_message(lines, 1) == "model 'x' not found"
    assert protocol.error_message(['{"progress": 0.2, "message": "x"}', "Killed"], -9) == \
        "the OrbitSeg process exited with status -9: Killed"
    assert protocol.cpu_fallback("auto", "cpu")
    assert not protocol.cpu_fallback("auto", "cuda:0")
    assert not protocol.cpu_fallback("cpu", "cpu")


def test_training_job_command_lines_are_what_the_cli_accepts(tmp_path):
    parser = build_parser()
    for source, data in (("phantom", "12"), ("studies", str(tmp_path / "studies.csv")), ("folder", str(tmp_path))):
        init = " seq-unet " if source == "studies" else ""
        job = protocol.TrainingJob(tmp_path / "out", "my-seq", "seq-unet", source, data, folds=4, epochs=3,
                                   batch_size=8, learning_rate=5e-5, device="cpu", restart=source == "folder",
                                   init=init, ensemble=source == "phantom", soft_targets=source != "studies",
                                   prepare_workers=3)
        args = parser.parse_args(job.arguments())
        assert args.workers == 3
        assert args.init == (init.strip() or None) and args.ensemble == (source == "phantom")
        assert args.soft_targets == (source != "studies")
        assert (args.command, args.model, args.name, args.folds, args.epochs, args.batch_size, args.lr, args.device) == \
            ("train", "seq-unet", "my-seq", 4, 3, 8, 5e-5, "cpu")
        assert (args.phantom, args.studies, args.folder) == (
            12 if source == "phantom" else None, data if source == "studies" else None, data if source == "folder" else None)
        assert (args.out, args.progress, args.restart) == (str(tmp_path / "out"), "json", source == "folder")
        assert args.cache == str(tmp_path / "out" / "prepared")  # a resumed run reads its studies back
    assert job.log_path == tmp_path / "out" / "training_log.csv" and job.model_path == tmp_path / "out" / "my-seq.pt"
    panel = protocol.TrainingJob(tmp_path, "m", "sv-net", "phantom", "4", 2, 1, 1, 1e-4)
    assert parser.parse_args(panel.arguments()).workers == panel.prepare_workers == min(4, os.cpu_count() or 1)
    with pytest.raises(OrbitSegError, match="workers must be at least 1"):
        protocol.TrainingJob(tmp_path, "m", "sv-net", "phantom", "4", 2, 1, 1, 1e-4, prepare_workers=0)
    with pytest.raises(OrbitSegError, match="choose a study list"):
        protocol.TrainingJob(tmp_path, "m", "sv-net", "studies", "", 2, 1, 1, 1e-4)
    with pytest.raises(OrbitSegError, match="plain name"):
        protocol.TrainingJob(tmp_path, "bad name", "sv-net", "phantom", "4", 2, 1, 1, 1e-4)
    with pytest.raises(OrbitSegError, match="taken by a bundled model"):  # refused before training, not after
        protocol.TrainingJob(tmp_path, "sv-net", "sv-net", "phantom", "4", 2, 1, 1, 1e-4)
    with pytest.raises(OrbitSegError, match="unknown training data source"):
        protocol.TrainingJob(tmp_path, "m", "sv-net", "web", "x", 2, 1, 1, 1e-4)
    with pytest.raises(OrbitSegError, match="averaging the folds needs at least 2 folds"):
        protocol.TrainingJob(tmp_path, "m", "sv-net", "phantom", "4", 1, 1, 1, 1e-4, ensemble=True)


def test_a_cancelled_run_offers_its_newest_best_checkpoint(tmp_path):
    assert protocol.best_checkpoint_so_far(tmp_path) is None
    for age, name in ((20, "fold0/best.pt"), (10, "fold1/last.pt"), (30, "fold1/best.pt")):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, ns=(0, 10**18 - age * 10**9))
    assert protocol.best_checkpoint_so_far(tmp_path) == tmp_path / "fold0" / "best.pt"
    for path in tmp_path.glob("fold*/best.pt"):
        path.unlink()
    assert protocol.best_checkpoint_so_far(tmp_path) == tmp_path / "fold1" / "last.pt"


def test_job_folders_started_in_the_same_second_differ(tmp_path):
    folders = [protocol.new_job_dir(tmp_path / "OrbitSeg") for _ in range(20)]
    assert len(set(folders)) == 20 and all(f.is_dir() and not any(f.iterdir()) for f in folders)
    assert all(f.parent == tmp_path / "OrbitSeg" and f.name[:8].isdigit() for f in folders)


def test_the_device_query_prints_the_device_a_run_would_get():
    done = subprocess.run([sys.executable, "-m", "OrbitSegLib.cli", *protocol.DeviceQuery("cpu").arguments()],
                          capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert done.returncode == 0 and done.stdout.strip().splitlines() == ["CPU (as requested)"]
