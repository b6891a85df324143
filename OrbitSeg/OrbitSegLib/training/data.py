"""Training data: studies (CT + reference) → per-eye volumes on the model grid.

Training uses exactly the inference preprocessing (:mod:`voi`, :mod:`preprocess`): each eye is
cropped, resampled to the model grid (left eyes mirrored), windowed; its reference is resampled with
nearest neighbour and turned into class indices 0..6, and, with ``GridSpec.soft_targets``, also into
partial-volume fractions per structure (:func:`preprocess.label_fractions`). The VOI comes from the
reference's globe centroids, jittered by a few mm as automatic detection would be, with the axial
range widened to cover every labelled voxel.

A reference need not annotate every structure (:func:`references.annotated_structures`): each eye records
which it annotates, and the loss leaves the others out for that eye rather than teach them as background.

Each eye also records its study's voxel spacings (:func:`qa.spacings`), from which training writes the
acquisition range into the model card.

Prepared eyes are cached as ``.npz`` files (image float16, classes uint8, fractions uint8 in 1/255,
annotated structures, the study's spacings), keyed by the study and the grid, so a second run starts
at once. Studies not in the cache can be prepared in several processes; the eyes are the same as
with one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import zipfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import qa, structures
from ..errors import OrbitSegError
from ..imageio import axial_axis, read_image
from ..preprocess import image_to_grid, label_fractions, labels_to_grid, model_grid
from ..references import annotated_structures
from ..segio import read_reference
from ..voi import VOI, crop, find_globes, voi_from_globes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridSpec:
    """The model grid a model is trained on: spacing (x, y, z) mm, window (level, width) HU,
    the size multiple the network needs, an optional fixed in-plane size (nx, ny), and whether the
    eyes carry partial-volume targets."""

    spacing: tuple[float, float, float]
    window: tuple[float, float]
    multiple: int
    inplane_size: tuple[int, int] | None = None
    soft_targets: bool = False

    def key(self) -> str:
        fields = asdict(self)
        if not self.soft_targets:  # the key of a grid without fractions is what it was before they existed
            del fields["soft_targets"]
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class EyeVolume:
    """One eye on the model grid: ``image`` float16 ``[z, y, x]`` in 0..1, ``classes`` uint8 ``[z, y, x]``,
    ``spacing_mm``: its study's CT voxel spacings (largest in-plane, between slices) in mm as
    :func:`qa.spacings` measures them, optionally ``fractions`` uint8 ``[S, z, y, x]``: each
    structure's partial-volume fraction in 1/255 (S = 6 structures in label order), and ``annotated``
    bool ``[S]``: the structures its reference annotates (the others are 0 in ``classes`` and
    ``fractions`` without being background)."""

    image: np.ndarray
    classes: np.ndarray
    case_id: str
    side: str
    spacing_mm: tuple[float, float]
    fractions: np.ndarray | None = None
    annotated: np.ndarray = field(default_factory=lambda: np.ones(len(structures.STRUCTURES), dtype=bool))

    @property
    def targets(self) -> np.ndarray:
        """What the loss compares with: ``fractions`` when the eye has them, else ``classes``."""
        return self.classes if self.fractions is None else self.fractions


@dataclass
class Study:
    """One training case: an id, a loader returning ``(ct, reference labelmap)``, and a cache key.
    Preparing in several processes needs a picklable loader (a module-level function or a
    ``functools.partial`` of one)."""

    case_id: str
    load: Callable[[], tuple[sitk.Image, sitk.Image]]
    source_key: str


def _read_pair(image_path: Path, reference_path: Path) -> tuple[sitk.Image, sitk.Image]:
    """A CT and its reference placed on the CT's grid (a reference cropped as Slicer saves it is padded)."""
    ct = read_image(image_path)
    return ct, read_reference(reference_path, ct)


def studies_from_list(path: str | os.PathLike) -> list[Study]:
    """Training studies of a study list, read by the one study-list reader (:func:`batch.studies.read_studies`:
    the same columns, checks and relative paths as batch mode); training also needs every study's
    reference, and both files to exist. The slice and side columns are not used (training finds the eyes).
    """
    from ..batch.studies import read_studies

    listed = read_studies(path)
    unreferenced = [s.id for s in listed if s.reference is None]
    if unreferenced:
        raise OrbitSegError(f"{path}: training needs a reference for every study (a reference column); "
                            f"none for {', '.join(unreferenced)}")
    studies = []
    for study in listed:
        for p in (study.image, study.reference):
            if not p.exists():
                raise OrbitSegError(f"{path}: study {study.id}: {p} not found")
        studies.append(Study(study.id, partial(_read_pair, study.image, study.reference),
                             _source_key(study.image, study.reference)))
    return studies


def _source_key(image: Path, reference: Path) -> str:
    """A study's cache key: both files' paths and modification times (an edited reference is prepared again)."""
    return f"{image.resolve()}:{image.stat().st_mtime_ns}:{reference.resolve()}:{reference.stat().st_mtime_ns}"


def studies_from_folder(folder: str | os.PathLike) -> list[Study]:
    """Studies from a folder of case subfolders, each holding ``ct.*`` and ``reference.seg.nrrd`` or ``labels.*``."""
    folder = Path(folder)
    studies = []
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        cts = sorted(case.glob("ct.*"))
        refs = sorted(case.glob("reference.seg.nrrd")) or sorted(case.glob("labels.*"))
        if cts and refs:
            studies.append(Study(case.name, partial(_read_pair, cts[0], refs[0]), _source_key(cts[0], refs[0])))
    if not studies:
        raise OrbitSegError(f"{folder}: no case folders with ct.* and reference.seg.nrrd (or labels.*)")
    return studies


def studies_from_phantom(cases: int, seed: int, small: bool = False, anatomy: str = "classic",
                         world: str = "default") -> list[Study]:
    """Phantom cases generated on the fly (deterministic per seed and index; anatomy model and scanner
    world as in :func:`phantom.generate_case`)."""
    from ..phantom_settings import case_id

    setting = "" if (anatomy, world) == ("classic", "default") else f":{anatomy}:{world}"
    return [Study(case_id(seed, i, anatomy, world).replace("_", "-"),
                  partial(_phantom_pair, seed, i, small, anatomy, world), f"phantom:{seed}:{i}:{small}{setting}")
            for i in range(cases)]


def _phantom_pair(seed: int, index: int, small: bool, anatomy: str = "classic",
                  world: str = "default") -> tuple[sitk.Image, sitk.Image]:
    from ..phantom import generate_case

    case = generate_case(seed, index, small=small, anatomy=anatomy, world=world)
    return case.ct, case.labels


def globe_centres(labels: sitk.Image) -> dict[str, np.ndarray]:
    """Centroid (LPS mm) of each side's globe label; sides without a globe are left out."""
    array = sitk.GetArrayViewFromImage(labels)
    centres = {}
    for side in structures.SIDES:
        kji = np.argwhere(array == structures.label_value(side, "globe"))
        if len(kji):
            centres[side] = np.array(labels.TransformContinuousIndexToPhysicalPoint(kji.mean(axis=0)[::-1].tolist()))
    return centres


def training_voi(ct: sitk.Image, labels: sitk.Image, rng: np.random.Generator | None = None,
                 jitter_mm: float = 2.0) -> VOI:
    """A VOI around the reference's globes (jittered like detection), axially covering every label.

    An eye whose reference labels other structures but not its globe (a radiologist who corrected only
    the muscles) is placed where automatic detection (:func:`voi.find_globes`) finds its globe."""
    centres = globe_centres(labels)
    present = set(np.flatnonzero(np.bincount(sitk.GetArrayViewFromImage(labels).ravel())).tolist())
    unplaced = {side for value, side, _ in structures.label_table() if value in present} - set(centres)
    if unplaced:
        try:
            detected = find_globes(ct)
            centres = {side: centres.get(side, detected[side]) for side in structures.SIDES
                       if side in centres or side in unplaced}
        except OrbitSegError as error:
            log.warning("the reference labels the %s eye without its globe and detection failed (%s): "
                        "that eye is left out", " and ".join(sorted(unplaced)), error)
    if not centres:
        raise OrbitSegError("the reference has no globe label and no globe was detected, so the eyes cannot be located")
    if rng is not None:
        centres = {s: c + rng.normal(0.0, jitter_mm, 3) for s, c in centres.items()}
    voi = voi_from_globes(ct, centres)
    axis = axial_axis(ct)
    labelled = np.nonzero(sitk.GetArrayViewFromImage(labels).any(axis=tuple(a for a in range(3) if a != 2 - axis)))[0]
    last = ct.GetSize()[axis] - 1
    start = max(0, min(voi.start_slice, int(labelled.min()) - 2))
    end = min(last, max(voi.end_slice, int(labelled.max()) + 2))
    return voi.with_slices(start, end)


def eye_volumes(ct: sitk.Image, labels: sitk.Image, spec: GridSpec, voi: VOI, case_id: str = "") -> list[EyeVolume]:
    """Each labelled eye of a study on the model grid (image windowed, classes 0..6, the CT's spacings,
    fractions when ``spec.soft_targets``, the structures the reference annotates)."""
    eyes = []
    annotated = annotated_structures(labels)
    spacing_mm = qa.spacings(ct)
    for side in voi.boxes:
        lo, hi = voi.eye_box(side)
        lo = tuple(max(0, v) for v in lo)
        hi = tuple(min(n - 1, v) for v, n in zip(hi, ct.GetSize()))
        region = crop(ct, lo, hi)
        grid = model_grid(region, side, spec.spacing, spec.multiple, spec.inplane_size)
        image = image_to_grid(ct, grid, *spec.window).astype(np.float16)
        classes = structures.side_classes(labels_to_grid(labels, grid), side)
        fractions = None
        if spec.soft_targets:
            values = [structures.label_value(side, s.key) for s in structures.STRUCTURES]
            fractions = label_fractions(labels, grid, values)
            fractions = np.rint(fractions * 255).astype(np.uint8)
        known = np.array([(side, s.key) in annotated for s in structures.STRUCTURES])
        eyes.append(EyeVolume(image, classes, case_id, side, spacing_mm, fractions, known))
    return eyes


def prepare(studies: list[Study], spec: GridSpec, cache_dir: str | os.PathLike | None = None,
            progress: Callable[[int, int], None] | None = None, seed: int = 0, workers: int = 1) -> list[EyeVolume]:
    """Eye volumes of all studies, in study order, read from / written to ``cache_dir`` when given.

    ``workers`` > 1 prepares the studies that are not cached in that many (spawned) processes; the
    eyes are identical to one process's, since study ``n``'s VOI jitter is drawn from ``[seed, n]``
    (a script that calls this with ``workers`` > 1 needs the ``if __name__ == "__main__":`` guard).
    A study that cannot be prepared (unreadable files, no globe) is skipped with a warning.
    """
    if workers < 1:
        raise OrbitSegError(f"workers must be at least 1, got {workers}")
    cache = Path(cache_dir) if cache_dir else None
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    per_study: list[list[EyeVolume] | None] = [None] * len(studies)
    paths: list[Path | None] = [None] * len(studies)
    for n, study in enumerate(studies):
        if cache:
            key = hashlib.sha1(f"{study.source_key}|{spec.key()}|{seed}".encode()).hexdigest()[:16]
            paths[n] = cache / f"{study.case_id}-{key}.npz"
            per_study[n] = _read_cached(paths[n], study.case_id) if paths[n].is_file() else None
    todo = [n for n in range(len(studies)) if per_study[n] is None]
    done = len(studies) - len(todo)
    if progress is not None and done:
        progress(done, len(studies))
    jobs = ((studies[n], spec, [seed, n], paths[n]) for n in todo)
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_single_threaded) as pool:
            _collect(per_study, todo, pool.map(_prepare_study, *zip(*jobs)), progress, done)
    else:
        _collect(per_study, todo, (_prepare_study(*job) for job in jobs), progress, done)
    eyes = [eye for study_eyes in per_study for eye in study_eyes]
    if not eyes:
        raise OrbitSegError("no usable training studies (see the warnings above)")
    return eyes


def _collect(per_study, todo, outcomes, progress, done) -> None:
    """Fill ``per_study[n]`` in place for the studies ``todo`` from their ``(eyes, warning)`` outcomes,
    logging the warnings and reporting progress after the ``done`` studies already there."""
    for done, (n, (new, warning)) in enumerate(zip(todo, outcomes), start=done + 1):
        if warning:
            log.warning(warning)
        per_study[n] = new
        if progress is not None:
            progress(done, len(per_study))


def _single_threaded() -> None:
    """Worker initialiser: one SimpleITK thread per preparing process."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _prepare_study(study: Study, spec: GridSpec, rng_seed: list[int],
                   path: Path | None) -> tuple[list[EyeVolume], str | None]:
    """One study's eyes (written to ``path`` when given) and a warning or ``None``: no eyes and why when
    the study cannot be prepared, its eyes and why when they could not be cached."""
    try:
        ct, labels = study.load()
        new = eye_volumes(ct, labels, spec, training_voi(ct, labels, np.random.default_rng(rng_seed)), study.case_id)
    except OrbitSegError as exc:
        return [], f"skipping study {study.case_id}: {exc}"
    return new, _write_cached(path, new) if path is not None and new else None


def _write_cached(path: Path, eyes: list[EyeVolume]) -> str | None:
    """Write one study's eyes to the cache (atomically). A failure, such as a full disk, costs only
    the cache: it gives a warning and the eyes are still used."""
    kinds = ("image", "classes", "spacing_mm", "fractions", "annotated")
    arrays = {f"{kind}_{e.side}": getattr(e, kind) for e in eyes for kind in kinds if getattr(e, kind) is not None}
    tmp = path.with_suffix(".tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        return f"study {eyes[0].case_id} could not be cached ({exc}); training goes on, and a later run prepares it again"
    return None


def _read_cached(path: Path, case_id: str) -> list[EyeVolume] | None:
    """The eyes of one cached study, or ``None`` (prepared again, and the file rewritten) for a cache file
    written before eyes recorded their annotated structures or their study's spacings, or one that
    cannot be read (damaged by hand or by a disk error)."""
    try:
        with np.load(path) as data:
            sides = [s for s in structures.SIDES if f"image_{s}" in data]
            if not sides or any(f"{kind}_{s}" not in data for s in sides for kind in ("annotated", "spacing_mm")):
                return None
            return [EyeVolume(data[f"image_{s}"], data[f"classes_{s}"], case_id, s,
                              tuple(float(v) for v in data[f"spacing_mm_{s}"]),
                              data[f"fractions_{s}"] if f"fractions_{s}" in data else None, data[f"annotated_{s}"])
                    for s in sides]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("the cached eyes of study %s cannot be read (%s); preparing it again", case_id, exc)
        return None
