"""The bundled sample case: a synthetic orbital CT (phantom) with its reference segmentation.

The files ship in ``Resources/SampleData``. Where they are missing (e.g. a wheel installed without
resources) the same case is generated from the phantom into the user's cache folder.
"""
from __future__ import annotations

import os
from pathlib import Path

SAMPLE_NAME = "OrbitSegSample"
SAMPLE_SEED = 20261123
SAMPLE_INDEX = 0
SAMPLE_TAO = True
"""The sample is a TAO case: enlarged muscle bellies, as a TAO clinic sees them."""


def bundled_sample_dirs() -> list[Path]:
    """Candidate folders of the bundled sample: the source checkout's and an installed extension's."""
    here = Path(__file__).resolve()
    return [here.parents[2] / "Resources" / "SampleData", here.parents[1] / "Resources" / "SampleData"]


def sample_files(folder: Path) -> dict[str, Path]:
    """Paths of the sample CT and reference inside ``folder``."""
    return {"image": folder / f"{SAMPLE_NAME}-CT.nrrd", "reference": folder / f"{SAMPLE_NAME}-reference.seg.nrrd"}


def generate_sample(folder: str | os.PathLike) -> dict[str, Path]:
    """Generate the sample case from the phantom into ``folder``; returns its paths."""
    from .imageio import write_image
    from .phantom import generate_case
    from .segio import write_seg_nrrd

    files = sample_files(Path(folder))
    case = generate_case(SAMPLE_SEED, SAMPLE_INDEX, tao=SAMPLE_TAO)
    write_image(case.ct, files["image"])
    write_seg_nrrd(case.labels, files["reference"])
    return files


def sample_case() -> dict[str, Path]:
    """The sample CT and reference paths: the bundled files, else a generated copy in the cache."""
    for folder in bundled_sample_dirs():
        files = sample_files(folder)
        if all(p.is_file() for p in files.values()):
            return files
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "orbitseg" / "sample"
    files = sample_files(cache)
    if all(p.is_file() for p in files.values()):
        return files
    return generate_sample(cache)
