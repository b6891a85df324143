"""Training SEQ-UNET and SV-Net with k-fold cross-validation, checkpoints and resume.

Outputs in ``out_dir``:

- ``training_log.csv``: one row per fold and epoch (train/validation loss, validation Dice, seconds);
- ``fold<i>/last.pt``: after every epoch, with the optimizer state for resuming;
- ``fold<i>/best.pt``: the epoch with the best validation Dice (model selection);
- ``<name>.pt``: the best fold's best model, ready for ``orbitseg segment --model``; with ``ensemble``
  (all folds run), the ensemble of every fold's best model instead;
- TensorBoard events in ``tensorboard/`` when the ``tensorboard`` package is installed.

Every card records the acquisition range its weights were trained on (the span of the fold's training
studies' spacings, widened to the starting model's range when fine-tuning), so QA flags ``input`` by
the model's own range.

Every checkpoint is written atomically, so an interruption (Ctrl-C, cancel, crash) always leaves the
last good checkpoint; rerunning with ``resume=True`` continues from the saved epoch.
"""
from __future__ import annotations

import copy
import csv
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from monai.utils import set_determinism

from .. import structures
from ..errors import CancelledError, OrbitSegError
from ..inference import InferenceOptions, Predictor, select_device
from ..metrics import overlap
from ..model_store import resolve_model
from ..models import create, load_checkpoint, make_card, model_class, read_extra, save_checkpoint, save_ensemble
from ..postprocess import scores_to_classes
from ..protocol import TRAINING_LOG_NAME
from ..qa import AcquisitionRange
from .augment import TensorEye, augmentation, augmented_patch, fit_inplane, seq_unet_batch, sv_net_batch
from .data import EyeVolume, GridSpec, Study, prepare
from .losses import SegmentationLoss, known_channels

log = logging.getLogger(__name__)

PAPER_LR = {"sv-net": 1e-4, "seq-unet": 5e-5}
PAPER_BATCH = {"sv-net": 4, "seq-unet": 32}
DEFAULT_INPUT_SIZE = {"sv-net": (80, 80, 32), "seq-unet": (80, 80, 3)}
SEQ_PATCH_DEPTH = 8
"""SEQ-UNET trains on 8-slice patches, i.e. 6 triplets per augmented patch."""

LOG_COLUMNS = ("fold", "epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds")


@dataclass
class TrainConfig:
    """Everything a training run needs besides its data. ``None`` fields take the paper's defaults.

    ``init`` (a model name or ``.pt`` path) starts every fold from that model's weights instead of a
    random initialisation (fine-tuning); its architecture must be ``architecture``, its
    configuration replaces ``preset`` and ``model_config``, and the cards' acquisition range spans its
    range and the training studies' (:func:`_trained_acquisition`). ``ensemble`` saves the average of all
    folds' best models as ``<name>.pt`` (all folds must run, ``folds`` ≥ 2). ``soft_targets`` trains on
    partial-volume fractions of the reference on the model grid instead of its nearest labels.
    ``seed`` drives the initialisation and the patches; ``data_seed`` (default: ``seed``) the prepared
    data (VOI jitter, and so the cache) and the fold split, so a later run can reuse a cache and its
    folds while drawing other patches. ``structure_weights`` (structure key → weight > 0, others 1)
    weight those structures' terms of the loss, e.g. ``{"superior_rectus": 2}`` for a structure the
    model finds hard. ``prepare_workers`` processes prepare the studies not yet cached (the data are
    the same with any number). ``precision``: ``auto`` runs the network in mixed precision where it
    fits (:func:`training_precision`: on a GPU), ``float32`` always in float32. ``holdout_eyes`` (study id,
    side) pairs in order of preference: the first one among the prepared eyes validates instead of
    folds (``folds`` 1; :attr:`TrainResult.holdout_eye` names it): every other eye trains, its fellow
    eye included; a fine-tuning run then also measures the starting model on it (epoch 0 of the log,
    ``start_val_dice`` in the metrics). ``patience`` stops a fold after that many epochs without a
    better validation score.
    """

    out_dir: str
    architecture: str = "sv-net"
    preset: str = "default"
    model_config: dict = field(default_factory=dict)
    init: str | None = None
    name: str | None = None
    spacing: tuple[float, float, float] = (0.5, 0.5, 1.0)
    window: tuple[float, float] = (48.0, 400.0)
    input_size: tuple[int, int, int] | None = None
    fixed_inplane_size: bool = False
    folds: int = 5
    fold: int | None = None
    epochs: int = 100
    batch_size: int | None = None
    lr: float | None = None
    lr_schedule: str = "constant"
    loss: str = "paper"
    samples_per_epoch: int | None = None
    augment: bool = True
    seed: int = 0
    data_seed: int | None = None
    device: str = "auto"
    resume: bool = True
    cache_dir: str | None = None
    half: bool = True
    description: str = ""
    ensemble: bool = False
    soft_targets: bool = False
    structure_weights: dict[str, float] = field(default_factory=dict)
    prepare_workers: int = 1
    precision: str = "auto"
    holdout_eyes: tuple[tuple[str, str], ...] = ()
    patience: int | None = None

    def class_weights(self) -> list[float]:
        """Loss weights per model class, background (1) first, then the structures in label order."""
        return [1.0] + [float(self.structure_weights.get(s.key, 1.0)) for s in structures.STRUCTURES]

    def resolved(self) -> "TrainConfig":
        """A copy with every default filled in and values checked."""
        model_class(self.architecture)
        c = TrainConfig(**asdict(self))
        c.name = c.name or f"{c.architecture}-custom"
        c.input_size = tuple(c.input_size or DEFAULT_INPUT_SIZE[c.architecture])
        c.batch_size = int(c.batch_size or PAPER_BATCH[c.architecture])
        c.lr = float(c.lr or PAPER_LR[c.architecture])
        c.data_seed = c.seed if c.data_seed is None else int(c.data_seed)
        if c.prepare_workers < 1:
            raise OrbitSegError(f"workers must be at least 1, got {c.prepare_workers}")
        if c.folds < 1:
            raise OrbitSegError(f"folds must be at least 1, got {c.folds}")
        if c.fold is not None and not 0 <= c.fold < c.folds:
            raise OrbitSegError(f"fold {c.fold} is outside 0..{c.folds - 1}")
        if c.epochs < 1:
            raise OrbitSegError(f"epochs must be at least 1, got {c.epochs}")
        if c.ensemble and (c.folds < 2 or c.fold is not None):
            raise OrbitSegError("an ensemble of fold models needs all folds of a cross-validation "
                                "(folds of at least 2, no single fold chosen)")
        unknown = sorted(set(c.structure_weights) - {s.key for s in structures.STRUCTURES})
        if unknown:
            raise OrbitSegError(f"no structure named {', '.join(unknown)}; weight one of "
                                f"{', '.join(s.key for s in structures.STRUCTURES)}")
        if any(not float(w) > 0 for w in c.structure_weights.values()):
            raise OrbitSegError(f"structure weights must be positive, got {c.structure_weights}")
        if c.precision not in ("auto", "float32"):
            raise OrbitSegError(f"unknown precision {c.precision!r}; use auto or float32")
        c.holdout_eyes = tuple((str(study), str(side)) for study, side in c.holdout_eyes)
        if c.holdout_eyes and (c.folds != 1 or any(side not in structures.SIDES for _, side in c.holdout_eyes)):
            raise OrbitSegError(f"a held-back eye (study, side in {structures.SIDES}) replaces the folds: "
                                f"folds must be 1, got {c.folds} and {c.holdout_eyes}")
        if c.patience is not None and c.patience < 1:
            raise OrbitSegError(f"patience must be at least 1 epoch, got {c.patience}")
        if c.lr_schedule not in ("constant", "cosine"):
            raise OrbitSegError(f"unknown learning-rate schedule {c.lr_schedule!r}; use constant or cosine")
        return c


@dataclass
class TrainResult:
    """The saved model, its validation metrics, per-fold best scores, and the held-back eye (study id,
    side) that validated, if one did."""

    model_path: Path
    best_fold: int
    fold_scores: dict[int, float]
    metrics: dict
    holdout_eye: tuple[str, str] | None = None


ProgressFn = Callable[[float, str], None]


def fold_split(case_ids: list[str], folds: int, seed: int) -> list[list[str]]:
    """Case ids shuffled deterministically and split into ``folds`` groups (validation sets)."""
    ids = sorted(set(case_ids))
    rng = np.random.default_rng(seed)
    rng.shuffle(ids)
    return [list(part) for part in np.array_split(np.array(ids, dtype=object), folds)] if folds > 1 else [[]]


def train(config: TrainConfig, studies: list[Study], *, data_description: str = "",
          progress: ProgressFn | None = None, cancel: Callable[[], bool] | None = None) -> TrainResult:
    """Train (all folds, or ``config.fold``) and save the best model (or the folds' ensemble) as
    ``out_dir/<name>.pt``."""
    config = config.resolved()
    start = _load_start(config)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_determinism(seed=config.seed)
    device = select_device(config.device)
    log.info("training %s on %s", config.architecture, device.note)
    probe = _new_model(config, start)
    spec = GridSpec(tuple(config.spacing), tuple(config.window), probe.size_multiple,
                    tuple(config.input_size[:2]) if config.fixed_inplane_size else None, config.soft_targets)
    if progress:
        progress(0.0, f"Preparing {len(studies)} studies")
    eyes = prepare(studies, spec, config.cache_dir, seed=config.data_seed, workers=config.prepare_workers,
                   progress=(lambda d, t: progress(0.1 * d / t, f"Prepared {d}/{t} studies")) if progress else None)
    _report_annotations(eyes)
    tensors = _tensor_eyes(eyes, device)
    groups = _validation_eyes(config, eyes)
    to_run = [config.fold] if config.fold is not None else list(range(len(groups)))
    scores: dict[int, float] = {}
    fold_metrics: dict[int, dict] = {}
    for n, fold in enumerate(to_run):
        validation = groups[fold]
        train_eyes = [e for e in eyes if (e.case_id, e.side) not in validation]
        train_tensors = [t for e, t in zip(eyes, tensors) if (e.case_id, e.side) not in validation]
        val_eyes = [e for e in eyes if (e.case_id, e.side) in validation]
        if not train_eyes:
            raise OrbitSegError("no eye is left to train on: give more studies, or hold none back")

        def fold_progress(fraction: float, message: str, n=n):
            if progress:
                progress(0.1 + 0.9 * (n + fraction) / len(to_run), message)

        scores[fold], fold_metrics[fold] = _train_fold(config, fold, train_eyes, train_tensors, val_eyes, device,
                                                       out, start, data_description, fold_progress, cancel)
    best_fold = max(scores, key=lambda f: scores[f])
    final = out / f"{config.name}.pt"
    if config.ensemble:
        save_ensemble(final, [out / f"fold{f}" / "best.pt" for f in to_run], description=config.description)
    else:
        shutil.copyfile(out / f"fold{best_fold}" / "best.pt", final.with_suffix(".tmp"))
        final.with_suffix(".tmp").replace(final)
    if progress:
        progress(1.0, f"Saved {final}")
    holdout = next(iter(groups[0])) if config.holdout_eyes else None
    return TrainResult(final, best_fold, scores, fold_metrics[best_fold], holdout)


def _validation_eyes(config: TrainConfig, eyes: list[EyeVolume]) -> list[set[tuple[str, str]]]:
    """Each fold's validation eyes as ``(study id, side)``: the first of the held-back eyes that was
    prepared, or the eyes of the fold's studies (:func:`fold_split`)."""
    keys = {(e.case_id, e.side) for e in eyes}
    if config.holdout_eyes:
        prepared = [eye for eye in config.holdout_eyes if eye in keys]
        if not prepared:
            raise OrbitSegError(f"none of the eyes to hold back {list(config.holdout_eyes)} is among the prepared eyes")
        return [{prepared[0]}]
    groups = fold_split([e.case_id for e in eyes], config.folds, config.data_seed)
    return [{k for k in keys if k[0] in set(group)} for group in groups]


def _train_fold(config: TrainConfig, fold: int, train_eyes: list[EyeVolume], train_tensors: list[TensorEye],
                val_eyes: list[EyeVolume], device, out: Path, start: _Start | None, data_description: str,
                progress: ProgressFn, cancel) -> tuple[float, dict]:
    fold_dir = out / f"fold{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed + fold)
    layout = torch.channels_last_3d if config.architecture == "sv-net" else torch.contiguous_format
    model = _new_model(config, start).to(device.device, memory_format=layout)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    start_epoch, best, best_metrics = 0, -math.inf, {}
    last = fold_dir / "last.pt"
    if config.resume and last.is_file():
        saved, _ = load_checkpoint(last, device=str(device.device))
        model.load_state_dict(saved.state_dict())
        extra = read_extra(last)
        optimizer.load_state_dict(extra["optimizer"])
        start_epoch, best, best_metrics = int(extra["epoch"]), float(extra["best"]), extra.get("best_metrics", {})
        log.info("fold %d: resuming after epoch %d (best validation Dice %.4f)", fold, start_epoch, best)
    loss_fn = SegmentationLoss(config.loss, config.architecture, structures.NUM_CLASSES,
                               has_background=model.head != "sigmoid_nobg", class_weights=config.class_weights())
    size_yx = (config.input_size[1], config.input_size[0])
    acquisition = _trained_acquisition(train_eyes, start)
    sequence = config.architecture == "seq-unet"
    depth = SEQ_PATCH_DEPTH if sequence else config.input_size[2]
    if start is not None and start_epoch == 0 and val_eyes:
        started = time.perf_counter()
        val_loss, val_dice, per_structure = _validate(model, config, val_eyes, loss_fn, device, depth, size_yx)
        best_metrics = {"start_val_dice": val_dice, "start_val_dice_per_structure": per_structure}
        _append_log(out / TRAINING_LOG_NAME, {"fold": fold, "epoch": 0, "train_loss": math.nan, "val_loss": val_loss,
                                              "val_dice": val_dice, "lr": 0.0,
                                              "seconds": time.perf_counter() - started})
        log.info("fold %d: the starting model's validation Dice %.4f", fold, val_dice)
    if start_epoch >= config.epochs or _out_of_patience(config, start_epoch, best_metrics):
        return best, best_metrics
    precision = training_precision(device.device) if config.precision == "auto" else None
    scaler = torch.amp.GradScaler("cuda", enabled=precision == torch.float16)
    writer = _tensorboard(out / "tensorboard" / f"fold{fold}")
    patches_per_step = max(1, config.batch_size // (depth - 2)) if sequence else config.batch_size
    samples = config.samples_per_epoch or len(train_eyes)
    steps = max(1, math.ceil(samples / patches_per_step))
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        lr = _learning_rate(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rng = np.random.default_rng([config.seed, fold, epoch])
        pipeline = (augmentation(int(rng.integers(2 ** 31)), config.soft_targets, (depth, *size_yx), device.device)
                    if config.augment else None)
        order = rng.permutation(np.resize(np.arange(len(train_eyes)), steps * patches_per_step))
        model.train()
        losses = []
        for step in range(steps):
            if cancel is not None and cancel():
                raise CancelledError(f"training cancelled; last good checkpoint: {last if last.is_file() else 'none yet'}")
            chosen = order[step * patches_per_step:(step + 1) * patches_per_step]
            patches = [augmented_patch(train_tensors[i], depth, size_yx, rng, pipeline, device.device)
                       for i in chosen]
            images, targets = (seq_unet_batch if sequence else sv_net_batch)(patches)
            known = _known(train_eyes[i] for i in chosen)
            if sequence:  # every patch gives depth - 2 slice triplets
                known = known.repeat_interleave(depth - 2, dim=0)
            with torch.autocast(device.device.type, dtype=precision, enabled=precision is not None):
                logits = model(images.contiguous(memory_format=layout))
            loss = loss_fn(logits.float(), targets, known)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
            progress((epoch - start_epoch + (step + 1) / steps) / (config.epochs - start_epoch),
                     f"fold {fold} epoch {epoch + 1}/{config.epochs} step {step + 1}/{steps} loss {losses[-1]:.4f}")
        train_loss = float(np.mean(losses))
        val_loss, val_dice, per_structure = _validate(model, config, val_eyes, loss_fn, device, depth, size_yx)
        score = val_dice if val_eyes else -train_loss
        improved = score > best
        if improved:
            quality = ({"val_dice": val_dice, "val_dice_per_structure": per_structure} if val_eyes
                       else {"train_loss": train_loss})
            start_metrics = {k: v for k, v in best_metrics.items() if k.startswith("start_")}
            best, best_metrics = score, {**start_metrics, **quality, "fold": fold, "epoch": epoch + 1}
        card = make_card(model, window=config.window, spacing=config.spacing, input_size=config.input_size,
                         fixed_inplane_size=config.fixed_inplane_size,
                         training_data=_describe(data_description, train_eyes, val_eyes, config, fold,
                                                 start.note if start else ""), acquisition=acquisition,
                         metrics=best_metrics if improved else {"val_dice": val_dice, "epoch": epoch + 1},
                         description=config.description or f"{config.architecture} trained by OrbitSegTraining")
        model.eval()
        extra = {"epoch": epoch + 1, "best": best, "best_metrics": best_metrics, "optimizer": optimizer.state_dict()}
        save_checkpoint(last, model, card, extra=extra)
        if improved:
            save_checkpoint(fold_dir / "best.pt", model, card, half=config.half)
        row = {"fold": fold, "epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
               "val_dice": val_dice, "lr": lr, "seconds": time.perf_counter() - started}
        _append_log(out / TRAINING_LOG_NAME, row)
        if writer is not None:
            for key in ("train_loss", "val_loss", "val_dice"):
                if not math.isnan(row[key]):
                    writer.add_scalar(key, row[key], epoch + 1)
            writer.flush()
        log.info("fold %d epoch %d: train loss %.4f, val loss %.4f, val Dice %.4f (%.0f s)", fold, epoch + 1,
                 train_loss, val_loss, val_dice, row["seconds"])
        if _out_of_patience(config, epoch + 1, best_metrics):
            log.info("fold %d: no better validation Dice for %d epochs; stopping early", fold, config.patience)
            break
    if writer is not None:
        writer.close()
    return best, best_metrics


def _out_of_patience(config: TrainConfig, epochs_done: int, best_metrics: dict) -> bool:
    """True when ``config.patience`` epochs have passed since the best one (``best_metrics["epoch"]``)."""
    return config.patience is not None and epochs_done - int(best_metrics.get("epoch", 0)) >= config.patience


def training_precision(device: torch.device) -> torch.dtype | None:
    """The autocast dtype the network trains in on ``device`` (weights, optimizer and loss stay float32):
    float16, with loss scaling, on a GPU; ``None`` (float32) on a CPU, where bfloat16 autocast, though
    twice as fast on a CPU with AVX512-BF16, made a tiny SV-Net's weights NaN within one epoch."""
    return torch.float16 if device.type == "cuda" else None


def _tensor_eyes(eyes: list[EyeVolume], device) -> list[TensorEye]:
    """The prepared eyes as tensors for cutting patches, made once per run: on the GPU when training there
    and they take at most half its free memory (patches are then cut and augmented without the CPU),
    otherwise views of the arrays in host memory (patches go to the GPU through pinned memory)."""
    host = [TensorEye.of(e) for e in eyes]
    if device.is_cuda and 2 * sum(t.nbytes for t in host) <= torch.cuda.mem_get_info(device.device)[0]:
        return [TensorEye.of(e, device.device) for e in eyes]
    return host


class _Start(NamedTuple):
    """The model a fine-tuning run starts from (loaded once per run), the note its cards get, and the
    acquisition range it was trained on (its card's)."""

    model: torch.nn.Module
    note: str
    acquisition: AcquisitionRange


def _trained_acquisition(train_eyes: list[EyeVolume], start: _Start | None) -> AcquisitionRange:
    """The acquisition range a fold's card records: the span of the spacings of the studies whose eyes
    it trains on (validation studies only choose the epoch, so they are left out), widened to the
    starting model's range when fine-tuning, since the model still knows what it started from."""
    trained = AcquisitionRange.spanning(eye.spacing_mm for eye in train_eyes)
    return trained if start is None else trained.hull(start.acquisition)


def _load_start(config: TrainConfig) -> _Start | None:
    """``config.init``'s model (float32, train mode) and a note naming it by file, description and
    date; ``None`` without ``init``."""
    if config.init is None:
        return None
    path = resolve_model(config.init)
    model, card = load_checkpoint(path)
    if card.members > 1:
        raise OrbitSegError(f"cannot fine-tune from {path}: it is an ensemble of {card.members} networks; "
                            f"start from one of the models it was made of")
    if card.architecture != config.architecture:
        raise OrbitSegError(f"cannot fine-tune {config.architecture} from {path}: it is a {card.architecture} model")
    if list(card.spacing) != list(config.spacing):
        log.info("fine-tuning %s, trained on a %s mm grid, on a %s mm grid", path, card.spacing, list(config.spacing))
    return _Start(model.train(), f"; fine-tuned from {path.name} ({card.identity()})", card.acquisition_range)


def _new_model(config: TrainConfig, start: _Start | None) -> torch.nn.Module:
    """A network for one fold: a copy of the starting model, or random weights."""
    if start is not None:
        return copy.deepcopy(start.model)
    return create(config.architecture, config.preset, **config.model_config)


@torch.inference_mode()
def _validate(model, config: TrainConfig, val_eyes: list[EyeVolume], loss_fn, device, depth: int,
              size_yx: tuple[int, int]) -> tuple[float, float, dict]:
    """Validation loss on centre patches and mean Dice over structures on whole eyes (inference path)."""
    if not val_eyes:
        return math.nan, math.nan, {}
    model.eval()
    predictor = Predictor(model, config.architecture, model.head, device, options=InferenceOptions(batch_size=4))
    losses, dice = [], {s.key: [] for s in structures.STRUCTURES}
    for eye in val_eyes:
        start = max(0, (eye.image.shape[0] - depth) // 2)
        image = fit_inplane(torch.from_numpy(eye.image[start:start + depth]).float(), size_yx, 0.0)
        classes = fit_inplane(torch.from_numpy(eye.classes[start:start + depth]), size_yx, 0)
        if config.architecture == "seq-unet":
            images, targets = seq_unet_batch([(image, classes)])
        else:
            images, targets = image[None, None], classes[None]
        known = _known([eye]).expand(len(images), -1)
        losses.append(float(loss_fn(model(images.to(device.device)), targets.to(device.device), known)))
        predicted = scores_to_classes(predictor.predict(eye.image.astype(np.float32)))
        for s, annotated in zip(structures.STRUCTURES, eye.annotated):
            if annotated and (eye.classes == s.class_index).any():
                dice[s.key].append(overlap(predicted == s.class_index, eye.classes == s.class_index)["dice"])
    model.train()
    per_structure = {k: float(np.mean(v)) for k, v in dice.items() if v}
    return float(np.mean(losses)), float(np.mean(list(per_structure.values()))), per_structure


def _known(eyes) -> torch.Tensor:
    """``(B, C)`` known loss channels (background first) of a batch's eyes (:func:`known_channels`)."""
    return known_channels(torch.from_numpy(np.stack([e.annotated for e in eyes])))


def _report_annotations(eyes: list[EyeVolume]) -> None:
    """Warn about structures that some eyes' references leave out (no loss for them on those eyes) and
    about a structure that no eye annotates (the model learns nothing about it)."""
    annotated = np.stack([e.annotated for e in eyes])
    for s, column in zip(structures.STRUCTURES, annotated.T):
        if not column.any():
            log.warning("no training reference annotates the %s: training leaves its output as the starting "
                        "model has it (untrained without --init)", s.display_name)
        elif not column.all():
            log.warning("the %s is annotated in %d of %d eyes; the others leave it out of the loss",
                        s.display_name, int(column.sum()), len(column))


def _learning_rate(config: TrainConfig, epoch: int) -> float:
    """The epoch's learning rate: constant, or cosine decay from ``lr`` to 2% of it over the epochs."""
    if config.lr_schedule == "constant":
        return config.lr
    return config.lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs)))


def _describe(data_description: str, train_eyes, val_eyes, config: TrainConfig, fold: int, init_note: str) -> str:
    n_train = len({e.case_id for e in train_eyes})
    n_val = len({e.case_id for e in val_eyes})
    seeds = f"seed {config.seed}" + ("" if config.data_seed == config.seed else f" (data seed {config.data_seed})")
    weights = "".join(f" {k} ×{w:g}" for k, w in sorted(config.structure_weights.items()))
    return (f"{data_description or 'user data'}; fold {fold} of {config.folds}: {n_train} training studies "
            f"({len(train_eyes)} eyes), {n_val} validation studies; loss {config.loss}{weights}, lr {config.lr:g} "
            f"({config.lr_schedule}), {'partial-volume' if config.soft_targets else 'nearest-label'} targets, "
            f"batch {config.batch_size}, {config.epochs} epochs, augmentation {'on' if config.augment else 'off'}, "
            f"{seeds}{init_note}")


def _append_log(path: Path, row: dict) -> None:
    new = not path.is_file()
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))

