"""Running the one pipeline over a study list: sequentially, in local worker processes, or on Dask.

Per study (:func:`run_study`, the same function in every mode): read the CT and reference, call
:func:`pipeline.segment_image`, write ``overlay.png``, then :func:`pipeline.write_outputs`, and last
the completion marker ``DIR/<id>/batch.json`` (atomically). Local worker processes are in :mod:`.workers`. A study whose marker holds the same
fingerprint (its input files with size and modification time, slices, side, the model file's SHA-256
and the inference options) is finished and skipped on a rerun unless ``force``.

A study that fails gives one :class:`StudyOutcome` with the stage and a one-line reason; the batch
goes on. The model is loaded once per process (per worker process, per Dask worker process).
Threads: ``workers × torch threads ≤ available cores`` (each worker gets ``cores // workers`` unless
``threads`` is given); SimpleITK gets the same number.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .. import __version__
from ..errors import OrbitSegError
from ..imageio import atomic_path, read_image
from ..inference import DeviceChoice, InferenceOptions, select_device
from ..model_store import DEFAULT_MODEL, LoadedModel, load_model, resolve_model
from ..models.checkpoint import read_card
from ..pipeline import check_output_folder, segment_image, write_outputs
from ..protocol import (BATCH_LOG_NAME, BATCH_OUTPUTS, MARKER_NAME, OVERLAY_NAME, RUN_NAME, SEGMENTATION_NAME,
                        VOLUMES_NAME)
from ..segio import read_reference
from . import summary
from .overlay import write_overlay
from .studies import Study, fingerprint_hash, read_studies
from .workers import Task, WorkerPool, available_cores, process_model, set_threads

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class BatchConfig:
    """How to run a batch. ``model``: name or ``.pt`` path; ``threads``: torch threads per worker
    (default: available cores split over the workers); ``scheduler``: a Dask scheduler address."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    options: InferenceOptions = InferenceOptions()
    workers: int = 1
    threads: int | None = None
    scheduler: str | None = None
    force: bool = False


@dataclass
class StudyOutcome:
    """What became of one study: ``status`` is ``done``, ``failed`` or ``skipped``."""

    id: str
    status: str
    image: str = ""
    stage: str = ""
    reason: str = ""
    seconds: float = 0.0
    messages: list[str] = field(default_factory=list)

    def error_row(self) -> dict:
        return {"id": self.id, "image": self.image, "stage": self.stage, "reason": self.reason}


@dataclass
class BatchCounts:
    """Study counts for progress reports: ``total`` in the list, ``to_run`` this time."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0

    @property
    def to_run(self) -> int:
        return self.total - self.skipped

    @property
    def finished_now(self) -> int:
        return self.done + self.failed


ProgressFn = Callable[[BatchCounts, "StudyOutcome | None"], None]
"""``progress(counts, outcome)``: called once before work starts (outcome None) and after each study."""


@dataclass
class BatchSummary:
    """Result of :func:`run_batch`."""

    out_dir: Path
    counts: BatchCounts
    outcomes: list[StudyOutcome]
    paths: dict[str, Path]
    interrupted: bool = False

    @property
    def failed(self) -> list[StudyOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


# ---------------------------------------------------------------------------------------------- per study

_PIPELINE_STAGES = (("Measuring", "measure volumes"),)
"""Stages named from progress messages; those before the first message (check input, load model, find
orbits) are named by the :class:`OrbitSegError` they raise."""


class _StageTracker:
    """Names the stage a study is in; follows the pipeline's progress messages."""

    def __init__(self, name: str):
        self.name = name

    def follow(self, fraction: float, message: str) -> None:
        self.name = next((stage for prefix, stage in _PIPELINE_STAGES if message.startswith(prefix)), "segment")


class _WarningCollector(logging.Handler):
    """Collects this thread's OrbitSeg warnings during one study, for the batch log."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(f"{record.levelname.lower()}: {record.getMessage()}")


def run_study(study: Study, out_dir: str | os.PathLike, fingerprint: str, model: LoadedModel) -> StudyOutcome:
    """Segment one study into ``out_dir/<id>/`` and write its completion marker last.

    Never raises for a bad study (the outcome says what failed); ``KeyboardInterrupt`` propagates.
    """
    start = time.perf_counter()
    folder = Path(out_dir) / study.id
    (folder / MARKER_NAME).unlink(missing_ok=True)
    stage = _StageTracker("read image")
    collector = _WarningCollector()
    package_log = logging.getLogger("OrbitSegLib")
    package_log.addHandler(collector)
    outcome = StudyOutcome(study.id, "done", str(study.image))
    try:
        image = read_image(study.image)
        stage.name = "read reference"
        reference = None
        if study.reference is not None:
            reference = read_reference(study.reference, image)
        result = segment_image(image, model, start_slice=study.start_slice, end_slice=study.end_slice,
                               side=study.side, reference=reference, progress=stage.follow)
        stage.name = "overlay"
        write_overlay(image, result.labelmap, result.voi, result.sides, folder / OVERLAY_NAME, study.id)
        stage.name = "write outputs"
        write_outputs(result, folder, source=str(study.image))
        outcome.seconds = time.perf_counter() - start
        marker = {"id": study.id, "fingerprint": fingerprint, "study": study.fingerprint(),
                  "model": result.model_name, "device": result.device, "device_note": result.device_note,
                  "seconds": round(outcome.seconds, 3),
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "orbitseg_version": __version__}
        with atomic_path(folder / MARKER_NAME) as tmp:
            tmp.write_text(json.dumps(marker, indent=2), encoding="utf-8")
    except OrbitSegError as exc:
        outcome = StudyOutcome(study.id, "failed", str(study.image), exc.stage or stage.name, str(exc))
    except Exception as exc:  # a bug or the system (e.g. MemoryError): fail this study, keep the batch going
        reason = "out of memory" if isinstance(exc, MemoryError) else f"unexpected {type(exc).__name__}: {exc}"
        outcome = StudyOutcome(study.id, "failed", str(study.image), stage.name, reason,
                               messages=traceback.format_exc().rstrip().splitlines())
    finally:
        package_log.removeHandler(collector)
    outcome.seconds = time.perf_counter() - start
    outcome.messages = collector.lines + outcome.messages
    return outcome


def is_finished(out_dir: str | os.PathLike, study_id: str, fingerprint: str) -> bool:
    """True when ``out_dir/<id>`` holds a completion marker with this fingerprint and its outputs."""
    folder = Path(out_dir) / study_id
    try:
        marker = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("fingerprint") == fingerprint and all(
        (folder / name).is_file() for name in (SEGMENTATION_NAME, VOLUMES_NAME, RUN_NAME))


# ------------------------------------------------------------------------------------------- executors

def _run_sequential(tasks: list[Task], out_dir: Path, config: BatchConfig,
                    device: DeviceChoice) -> Iterator[StudyOutcome]:
    if not tasks:
        return
    set_threads(config.threads or available_cores())
    model = load_model(config.model, device, config.options)
    for study, fingerprint in tasks:
        yield run_study(study, out_dir, fingerprint, model)


def _input_bytes(study: Study) -> int:
    """Size on disk of a study's image (a file, or all files of a DICOM folder): its expected cost."""
    try:
        if study.image.is_dir():
            return sum(f.stat().st_size for f in study.image.iterdir() if f.is_file())
        return study.image.stat().st_size
    except OSError:
        return 0


def largest_first(tasks: list[Task]) -> list[Task]:
    """Tasks ordered by image size, largest first, so that parallel workers finish together.

    With the longest studies last, one worker would run them alone while the others idle; longest
    first bounds that tail by the smallest studies. The output tables keep the study list's order.
    """
    return sorted(tasks, key=lambda task: _input_bytes(task[0]), reverse=True)


def _dask_task(study: Study, out_dir: Path, fingerprint: str, config: BatchConfig) -> StudyOutcome:
    """One study on a Dask worker: threads split over the worker's task slots, model loaded once per process."""
    from distributed import get_worker

    set_threads(config.threads or max(1, available_cores() // max(1, get_worker().state.nthreads)))
    return run_study(study, out_dir, fingerprint, process_model(config))


def _run_on_dask(tasks: list[Task], out_dir: Path, config: BatchConfig) -> Iterator[StudyOutcome]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise OrbitSegError("--scheduler needs Dask distributed: pip install 'dask[distributed]'") from None
    try:
        client = Client(config.scheduler, timeout=30)
    except (OSError, TimeoutError) as exc:
        raise OrbitSegError(f"cannot reach the Dask scheduler at {config.scheduler} ({exc})") from None
    token = hashlib.sha256(f"{time.time()}{os.getpid()}".encode()).hexdigest()[:8]
    futures = {client.submit(_dask_task, study, out_dir, fingerprint, config, key=f"orbitseg-{study.id}-{token}",
                             pure=False): study for study, fingerprint in tasks}
    try:
        for future in as_completed(futures):
            study = futures[future]
            if future.status == "finished":
                yield future.result()
            else:
                reason = f"the Dask task failed: {type(future.exception()).__name__}: {future.exception()}"
                yield StudyOutcome(study.id, "failed", str(study.image), "worker", reason)
    finally:
        client.cancel(list(futures))
        client.close()


# ---------------------------------------------------------------------------------------------- the batch

class BatchLog:
    """``DIR/batch.log``: timestamped lines appended over all runs of a batch."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a", encoding="utf-8") as handle:
            for line in message.splitlines() or [""]:
                handle.write(f"{stamp} {line}\n")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_outputs_spare_inputs(out_dir: str | os.PathLike, studies_path: Path, studies: list[Study]) -> None:
    """Refuse an output folder that is a file, whose batch tables would replace the study list or an
    input, or where a study's outputs would land among input files (``--out`` on the folder of a phantom
    data set, whose case folders are named like the studies)."""
    inputs = [studies_path] + [p for s in studies for p in (s.image, s.reference)]
    check_output_folder(out_dir, inputs, BATCH_OUTPUTS, "batch tables")
    out = Path(out_dir)
    folders = {(out / s.id).resolve(): s.id for s in studies}
    clashes = []
    for study in studies:
        for path in (study.image, study.reference):
            owner = next((folders[p] for p in (path.resolve(), *path.resolve().parents) if p in folders), None) \
                if path is not None else None
            if owner is not None:
                clashes.append(f"{path} (study {study.id}) lies in the output folder of study {owner}")
    if clashes:
        raise OrbitSegError(f"{out}: choose another output folder: " + "; ".join(clashes[:3])
                            + (f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""))


def run_batch(studies_path: str | os.PathLike, out_dir: str | os.PathLike, config: BatchConfig = BatchConfig(),
              progress: ProgressFn | None = None) -> BatchSummary:
    """Segment every study of a study list into ``out_dir`` and write the batch tables and report.

    Raises :class:`OrbitSegError` before any work for a bad study list, model or device. Studies that
    fail are listed in ``errors.csv``. Ctrl-C (``KeyboardInterrupt``) stops the workers, rebuilds the
    tables and report from the finished studies and returns with ``interrupted`` set.
    """
    from .report import preload_plotting, write_report

    studies = read_studies(studies_path)
    if config.workers < 1:
        raise OrbitSegError(f"--workers must be at least 1 (got {config.workers})")
    model_path = resolve_model(config.model)
    card = read_card(model_path)
    device = select_device(config.device)
    config = replace(config, model=str(model_path.resolve()))
    _check_outputs_spare_inputs(out_dir, Path(studies_path), studies)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    batch_log = BatchLog(out / BATCH_LOG_NAME)
    setup = {"model_sha256": _file_sha256(model_path), "options": asdict(config.options)}
    fingerprints = {s.id: fingerprint_hash(s.fingerprint(), setup) for s in studies}
    counts = BatchCounts(len(studies))
    outcomes: list[StudyOutcome] = []
    tasks = []
    for study in studies:
        if not config.force and is_finished(out, study.id, fingerprints[study.id]):
            counts.skipped += 1
            outcomes.append(StudyOutcome(study.id, "skipped", str(study.image)))
        else:
            tasks.append((study, fingerprints[study.id]))
    parallel = config.workers > 1 and len(tasks) > 1
    mode = (f"Dask scheduler {config.scheduler}" if config.scheduler else
            f"{config.workers} worker processes" if parallel else "one process")
    run_info = {"studies": str(Path(studies_path).resolve()), "model": model_path.stem, "model_path": str(model_path),
                "model_summary": card.summary(), "device": device.note, "mode": mode, "orbitseg_version": __version__,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    batch_log.write(f"=== orbitseg {__version__} batch: {run_info['studies']} -> {out}\n"
                    f"model {model_path.stem} ({model_path}), {device.note}, {mode}; {len(studies)} studies, "
                    f"{counts.skipped} already finished, {len(tasks)} to run")
    for outcome in outcomes:
        batch_log.write(f"{outcome.id}: skipped (finished earlier with the same inputs and model; --force recomputes)")
    if progress is not None:
        progress(counts, None)
    if config.scheduler:
        executor = _run_on_dask(largest_first(tasks), out, config)
    elif parallel:
        executor = WorkerPool(config.workers, out, config).run(largest_first(tasks))
    else:
        executor = _run_sequential(tasks, out, config, device)
    if config.scheduler or parallel:  # this process only waits meanwhile
        threading.Thread(target=preload_plotting, name="orbitseg-preload-plotting", daemon=True).start()
    interrupted = False
    try:
        for outcome in executor:
            outcomes.append(outcome)
            if outcome.status == "done":
                counts.done += 1
                batch_log.write(f"{outcome.id}: done in {outcome.seconds:.1f} s")
            else:
                counts.failed += 1
                batch_log.write(f"{outcome.id}: FAILED at {outcome.stage}: {outcome.reason}")
            for line in outcome.messages:
                batch_log.write(f"{outcome.id}:   {line}")
            if progress is not None:
                progress(counts, outcome)
    except KeyboardInterrupt:
        interrupted = True
        executor.close()
        reported = {o.id for o in outcomes}
        for study, fingerprint in tasks:  # finished by a worker whose result had not arrived yet
            if study.id not in reported and is_finished(out, study.id, fingerprint):
                outcomes.append(StudyOutcome(study.id, "done", str(study.image)))
                counts.done += 1
        batch_log.write(f"interrupted: the {counts.done} studies finished in this run are kept; rerun to resume")
    finished = {o.id for o in outcomes if o.status in ("done", "skipped")}
    order = {s.id: n for n, s in enumerate(studies)}
    errors = [o.error_row() for o in sorted(outcomes, key=lambda o: order[o.id]) if o.status == "failed"]
    tables = summary.collect(out, studies, finished, errors)
    paths = summary.write_tables(out, tables)
    paths["report"] = write_report(out, studies, tables, run_info, counts, interrupted)
    paths["log"] = out / BATCH_LOG_NAME
    batch_log.write(f"finished: {counts.done} done, {counts.skipped} skipped, {counts.failed} failed; "
                    f"report {paths['report']}")
    return BatchSummary(out, counts, outcomes, paths, interrupted)
