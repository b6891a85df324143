"""``orbitseg adapt``: fine-tune a model on a site's few corrected studies, with no choices to make.

Everything :class:`TrainConfig` asks for is set here, once, for 2–20 studies (how the defaults were
chosen and what they give: docs/training.md, "Adapting to a site"):

- the starting model's own grid, window and patch size (its card), so adaptation changes what the model
  has learnt, not what it sees;
- a fixed budget of :data:`SAMPLES_PER_EPOCH` patches for :data:`EPOCHS` epochs whatever the number of
  studies, so the run takes about the same time for 2 studies as for 20;
- :data:`LEARNING_RATE` with a cosine decay, Dice + cross-entropy loss, the usual augmentation;
- with :data:`HOLDOUT_FROM` studies or more, one eye of the last study is held back (its left, or its
  right where it has no left eye): each epoch is
  measured on it, the best epoch is kept, the run stops after :data:`PATIENCE` epochs without a
  better one, and the agreement on that eye before and after adapting is reported. With fewer
  studies every eye trains and the last epoch is kept.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import site_cases, structures
from ..errors import OrbitSegError
from ..model_store import resolve_model
from ..models import read_card
from ..imageio import atomic_path
from ..protocol import adapt_work_dir, adapted_model_path
from .data import studies_from_list
from .loop import ProgressFn, TrainConfig, train

EPOCHS = 8
SAMPLES_PER_EPOCH = 64
LEARNING_RATE = {"sv-net": 1e-3, "seq-unet": 3e-4}
LOSS = "dice_ce"
HOLDOUT_FROM = 4
"""Studies from which one eye is held back to choose the epoch and to report the agreement."""
PATIENCE = 3
MAX_STUDIES = 200
"""More than this is a training set: use ``orbitseg train``."""


@dataclass
class AdaptResult:
    """The adapted model, the held-back eye (study id, side) or ``None``, and the mean Dice over its
    structures of the starting and the adapted model on it, with the per-structure Dice of each."""

    model_path: Path
    studies: int
    holdout_eye: tuple[str, str] | None
    before: float | None = None
    after: float | None = None
    before_per_structure: dict | None = None
    after_per_structure: dict | None = None

    def summary(self) -> str:
        """Lines for the terminal: the model, and the held-back eye's agreement before and after."""
        lines = [f"Model saved: {self.model_path} (adapted on {self.studies} studies)"]
        if self.holdout_eye is None:
            lines.append(f"No eye was held back (fewer than {HOLDOUT_FROM} studies): the agreement on this "
                         f"site is not measured; check the model on a study it has not seen.")
            return "\n".join(lines)
        study, side = self.holdout_eye
        lines.append(f"Held-back eye {study} {structures.SIDE_ABBREVIATION[side]}: mean Dice {self.before:.3f} before, "
                     f"{self.after:.3f} after")
        for s in structures.STRUCTURES:
            if s.key in (self.after_per_structure or {}):
                lines.append(f"  {s.display_name:<16} {self.before_per_structure.get(s.key, float('nan')):.3f} → "
                             f"{self.after_per_structure[s.key]:.3f}")
        if self.after < self.before:
            lines.append("Adapting made the held-back eye worse: keep using the starting model, or correct more studies.")
        else:
            lines.append("One eye is a small check: before relying on the adapted model, compare it with the starting "
                         "model on a few studies neither has seen (orbitseg evaluate).")
        return "\n".join(lines)


def adapt_config(init: str, model_path: str | os.PathLike, studies: int, site_name: str, *,
                 holdout_eyes: tuple[tuple[str, str], ...], device: str = "auto", workers: int = 1) -> TrainConfig:
    """The training run ``adapt`` makes of ``init`` (a model name or ``.pt`` path) for ``studies`` studies."""
    card = read_card(resolve_model(init))
    if card.members > 1:
        raise OrbitSegError(f"cannot adapt {init}: it is an ensemble of {card.members} networks; start from one of them")
    model_path = Path(model_path)
    return TrainConfig(
        out_dir=str(adapt_work_dir(model_path)), architecture=card.architecture, init=str(init), name=model_path.stem,
        spacing=tuple(card.spacing), window=tuple(card.window), input_size=tuple(card.input_size),
        fixed_inplane_size=card.fixed_inplane_size, folds=1, epochs=EPOCHS, samples_per_epoch=SAMPLES_PER_EPOCH,
        lr=LEARNING_RATE[card.architecture], lr_schedule="cosine", loss=LOSS, device=device,
        holdout_eyes=holdout_eyes, patience=PATIENCE if holdout_eyes else None,
        cache_dir=str(adapt_work_dir(model_path) / "prepared"), prepare_workers=workers,
        description=f"{card.description or card.architecture}, adapted to {site_name} ({studies} corrected studies)")


def adapt(site: str | os.PathLike, model_path: str | os.PathLike, init: str = "sv-net", *, device: str = "auto",
          workers: int = 1, progress: ProgressFn | None = None, cancel=None) -> AdaptResult:
    """Fine-tune ``init`` on the studies of ``site`` (a site folder, :mod:`site_cases`, or a study list
    with ``id,image,reference``) and write the result to ``model_path`` (``.pt``).

    The work folder beside it (:func:`protocol.adapt_work_dir`) keeps the checkpoints, the training log
    and the prepared studies; running again resumes there.
    """
    model_path = adapted_model_path(model_path)
    listed = site_cases.study_list(site)
    studies = studies_from_list(listed)
    if not 1 <= len(studies) <= MAX_STUDIES:
        raise OrbitSegError(f"adapt takes 1 to {MAX_STUDIES} corrected studies, {listed} has {len(studies)}; "
                            f"for more, train with orbitseg train --init")
    last = studies[-1].case_id
    holdout = ((last, "left"), (last, "right")) if len(studies) >= HOLDOUT_FROM else ()
    site_name = listed.resolve().parent.name
    config = adapt_config(init, model_path, len(studies), site_name, holdout_eyes=holdout, device=device,
                          workers=workers)
    ids = ", ".join(s.case_id for s in studies)
    description = f"site data {listed} ({len(studies)} corrected studies: {ids})"
    result = train(config, studies, data_description=description, progress=progress, cancel=cancel)
    with atomic_path(model_path) as tmp:
        shutil.copyfile(result.model_path, tmp)
    m = result.metrics
    return AdaptResult(model_path, len(studies), result.holdout_eye,
                       m.get("start_val_dice"), m.get("val_dice"),
                       m.get("start_val_dice_per_structure"), m.get("val_dice_per_structure"))
