"""Writing phantom cases and a study list that the batch mode runs directly."""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..imageio import atomic_path, write_image
from ..phantom_settings import case_id
from ..segio import write_labelmap, write_seg_nrrd
from .case import PhantomCase, generate_case

if TYPE_CHECKING:
    from ..batch.studies import Study

STUDY_COLUMNS = ("id", "image", "reference", "start_slice", "end_slice")
CT_NAME, SEG_NAME, LABELS_NAME, INFO_NAME = "ct.nii.gz", "reference.seg.nrrd", "labels.nii.gz", "info.json"


def write_case(case: PhantomCase, out_dir: str | os.PathLike, case_id: str) -> dict:
    """Write ``out_dir/case_id/{ct.nii.gz, reference.seg.nrrd, labels.nii.gz, info.json}``.

    Returns the study-list row (paths relative to ``out_dir``).
    """
    out_dir = Path(out_dir)
    folder = out_dir / case_id
    folder.mkdir(parents=True, exist_ok=True)
    write_image(case.ct, folder / CT_NAME)
    write_seg_nrrd(case.labels, folder / SEG_NAME)
    write_labelmap(case.labels, folder / LABELS_NAME)
    with atomic_path(folder / INFO_NAME) as tmp:
        tmp.write_text(json.dumps({"id": case_id, **case.info}, indent=1), encoding="utf-8")
    return {"id": case_id, "image": f"{case_id}/{CT_NAME}", "reference": f"{case_id}/{SEG_NAME}",
            "start_slice": case.info["start_slice"], "end_slice": case.info["end_slice"]}


def exact_volumes(studies: Iterable[Study]) -> dict[str, dict[str, dict[str, float]]]:
    """The phantom's exact volumes (cm³, from the sub-voxel occupancy, not the labelmap) of the cases in a
    study list (:func:`batch.read_studies`): ``{study id: {side: {structure key: cm³}}}``.

    A case's ``info.json`` lies beside its image, as :func:`write_case` leaves it; studies without one
    (any list of real CT) are left out, so the result is empty for a list with no phantom cases.
    """
    out = {}
    for study in studies:
        info = study.image.parent / INFO_NAME
        if study.image.is_file() and info.is_file():
            exact = json.loads(info.read_text(encoding="utf-8")).get("true_volumes_cm3")
            if exact:
                out[study.id] = exact
    return out


def write_dataset(out_dir: str | os.PathLike, n_cases: int, seed: int, *, small: bool = False,
                  progress: Callable[[int, int], None] | None = None, anatomy: str = "classic",
                  world: str = "default") -> Path:
    """Generate cases 0..n_cases-1 of series ``seed`` (anatomy model and scanner world as in
    :func:`generate_case`), write them and ``out_dir/studies.csv``.

    Case ids are :func:`case_id`. ``progress(done, total)`` is called after each case.
    Returns the study-list path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n_cases):
        case = generate_case(seed, index, small=small, anatomy=anatomy, world=world)
        rows.append(write_case(case, out_dir, case_id(seed, index, anatomy, world)))
        if progress is not None:
            progress(index + 1, n_cases)
    path = out_dir / "studies.csv"
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=STUDY_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return path
