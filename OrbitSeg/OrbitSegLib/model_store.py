"""Finding, listing and loading segmentation models (bundled, user folder, or a file path).

Search order for a model *name* (e.g. ``sv-net``): the folders in ``$ORBITSEG_MODELS``
(``os.pathsep``-separated), the user models folder (``~/.orbitseg/models``), then the bundled
``Resources/Models`` folder. A name resolves to ``<name>.pt``. A path to a ``.pt`` file is loaded as is.
:func:`register_model` copies a trained checkpoint into the user models folder under a checked name.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import OrbitSegError
from .imageio import atomic_path
from .inference import DeviceChoice, InferenceOptions, Predictor, select_device
from .models import checkpoint

log = logging.getLogger(__name__)

MODEL_SUFFIX = ".pt"
DEFAULT_MODEL = "sv-net"
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""What a user model's name may be: a plain file name."""


def bundled_model_dirs() -> list[Path]:
    """Candidate bundled model folders: the source checkout's and an installed extension's."""
    here = Path(__file__).resolve()
    return [here.parents[2] / "Resources" / "Models", here.parents[1] / "Resources" / "Models"]


def user_model_dir() -> Path:
    """Folder where trained models are saved for OrbitSeg to find (``~/.orbitseg/models``)."""
    return Path(os.environ.get("ORBITSEG_USER_MODELS", Path.home() / ".orbitseg" / "models"))


def model_dirs() -> list[Path]:
    """All folders searched for models, in priority order."""
    env = [Path(p) for p in os.environ.get("ORBITSEG_MODELS", "").split(os.pathsep) if p]
    return env + [user_model_dir()] + bundled_model_dirs()


def resolve_model(ref: str | os.PathLike) -> Path:
    """Path of a model given by name or path; :class:`OrbitSegError` lists what exists otherwise."""
    path = Path(ref)
    if path.suffix == MODEL_SUFFIX or path.exists():
        if not path.is_file():
            raise OrbitSegError(f"{path}: model file not found")
        return path
    for folder in model_dirs():
        candidate = folder / f"{ref}{MODEL_SUFFIX}"
        if candidate.is_file():
            return candidate
    available = ", ".join(sorted(available_models())) or "none"
    raise OrbitSegError(f"model {ref!r} not found; models are looked for as <name>.pt in "
                        f"{', '.join(str(d) for d in model_dirs())} (available: {available}); to install one, copy "
                        f"its .pt file into {user_model_dir()} (or a folder named in $ORBITSEG_MODELS), give the "
                        "path to the .pt file, or train one with 'orbitseg train'")


def available_models() -> dict[str, Path]:
    """Model name → file for every model found (earlier folders win)."""
    found: dict[str, Path] = {}
    for folder in model_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob(f"*{MODEL_SUFFIX}")):
                found.setdefault(path.stem, path)
    return found


@dataclass
class LoadedModel:
    """A model ready to predict: its network wrapped in a :class:`Predictor`, and its card."""

    name: str
    path: Path
    card: checkpoint.ModelCard
    predictor: Predictor

    @property
    def device(self) -> DeviceChoice:
        return self.predictor.device


def load_model(ref: str | os.PathLike = DEFAULT_MODEL, device: str | DeviceChoice = "auto",
               options: InferenceOptions = InferenceOptions()) -> LoadedModel:
    """Load a model by name or path onto a device (``auto|cuda|cpu``)."""
    choice = device if isinstance(device, DeviceChoice) else select_device(device)
    path = resolve_model(ref)
    network, card = checkpoint.load_checkpoint(path, device=str(choice.device))
    predictor = Predictor(network, card.architecture, card.head, choice, options=options)
    log.info("loaded model %s (%s) from %s on %s", path.stem, card.architecture, path, choice.device)
    return LoadedModel(path.stem, path, card, predictor)


def check_model_name(name: str) -> None:
    """Raise :class:`OrbitSegError` unless ``name`` can name a user model: a plain file name that does
    not hide a bundled model (checked before training starts, not only when the model is added)."""
    if not MODEL_NAME.match(name or ""):
        raise OrbitSegError(f"model name {name!r} is not a plain name (letters, digits, '.', '_', '-')")
    if any((folder / f"{name}{MODEL_SUFFIX}").is_file() for folder in bundled_model_dirs()):
        raise OrbitSegError(f"model name {name!r} is taken by a bundled model; choose another name")


def register_model(source: str | os.PathLike, name: str, overwrite: bool = False) -> Path:
    """Copy a checked checkpoint into the user models folder as ``<name>.pt``; returns the new path.

    The checkpoint's model card is validated first. ``name`` must pass :func:`check_model_name`; an
    existing user model of that name is replaced only with ``overwrite``.
    """
    check_model_name(name)
    checkpoint.read_card(source)
    target = user_model_dir() / f"{name}{MODEL_SUFFIX}"
    if target.exists() and not overwrite:
        raise OrbitSegError(f"a model named {name!r} already exists in {target.parent}")
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target
