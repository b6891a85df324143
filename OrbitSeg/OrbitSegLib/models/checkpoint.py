"""Checkpoint files with a model card.

A checkpoint is ``torch.save`` of a plain dict, loadable with ``torch.load(..., weights_only=True)``::

    {"format": "orbitseg-checkpoint", "format_version": 1,
     "card": {...},            # ModelCard as a JSON-compatible dict
     "state_dict": {...},      # tensors; floating ones float32 or float16 (half=True)
     "extra": {...}}           # optional caller data (e.g. optimizer state, epoch), tensors and plain types only

The card describes everything needed to use the weights correctly (architecture and its complete
configuration, label order, head, CT window, model grid) and carries a SHA-256 checksum of the stored
tensors, verified on load. Any problem with a file is an ``OrbitSegError`` naming the file.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from OrbitSegLib import __version__ as ORBITSEG_VERSION
from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.imageio import atomic_path
from OrbitSegLib.models.ensemble import Ensemble, member_count, members_of
from OrbitSegLib.models.registry import NAMES, create, model_class, preset_config
from OrbitSegLib.qa import AcquisitionRange, trained_range
from OrbitSegLib.structures import STRUCTURE_KEYS

FORMAT = "orbitseg-checkpoint"
FORMAT_VERSION = 1

BACKGROUND = "background"
HEAD_LABELS: dict[str, tuple[str, ...]] = {
    "sigmoid": (BACKGROUND, *STRUCTURE_KEYS),
    "sigmoid_nobg": STRUCTURE_KEYS,
}
"""Label order (class index -> key) of each head type: OrbitSeg's structure order, with or without background."""


@dataclass
class ModelCard:
    """What a checkpoint's weights are and how to use them (JSON-serialisable).

    Attributes:
        architecture: registry name (``"sv-net"``, ``"seq-unet"``).
        config: the model's complete constructor arguments (``model.config``).
        labels: class index -> structure key; ``"background"`` at 0 when the head has a background channel.
        head: output head type (``"sigmoid"``: one-hot channels with background, argmax;
            ``"sigmoid_nobg"``: one sigmoid per structure, background where none exceeds 0.5).
        window: CT window ``[level, width]`` in HU used for the input intensity scaling.
        spacing: model grid spacing ``[x, y, z]`` in mm.
        input_size: training patch size ``[x, y, z]`` in voxels (SimpleITK order, like ``spacing``); for
            SEQ-UNET ``z`` is the number of slices in a sequence (3).
        fixed_inplane_size: ``True`` when every slice is resampled to exactly ``input_size[:2]`` in-plane,
            stretching the in-plane spacing (the SEQ-UNET paper's 64×64); ``False``: the model grid keeps
            ``spacing`` and any size that is a multiple of :attr:`size_multiple` works.
        members: how many networks of this configuration the checkpoint holds; more than one is an
            :class:`~OrbitSegLib.models.ensemble.Ensemble` whose sigmoid outputs are averaged.
        training_data: free-text description of the training data and run.
        training_acquisition: the voxel spacings of the scans the weights were trained on,
            ``{"inplane_mm": [low, high], "slice_mm": [low, high]}`` (mm; in-plane is each scan's
            largest in-plane spacing, :func:`OrbitSegLib.qa.spacings`), or ``None`` where not recorded
            (the bundled models, older files): :attr:`acquisition_range` is then
            :data:`OrbitSegLib.qa.TRAINED_ACQUISITION`. Training writes the span of the studies a fold
            trains on, widened to the starting model's range when fine-tuning; an ensemble or weight
            average records the span of its sources'. Scans outside it are flagged ``input``.
        metrics: held-out metrics, e.g. ``{"iou": {"globe": 0.93, ...}}``.
        description: one line shown in model lists.
        software: package versions that wrote the file (filled by :func:`save_checkpoint`).
        created: ISO 8601 creation time (UTC).
        checksum: SHA-256 of the stored tensors (filled by :func:`save_checkpoint`).
        format_version: checkpoint format version.
    """

    architecture: str
    config: dict
    labels: list
    head: str
    window: list
    spacing: list
    input_size: list
    fixed_inplane_size: bool = False
    members: int = 1
    training_data: str = ""
    training_acquisition: dict | None = None
    metrics: dict = field(default_factory=dict)
    description: str = ""
    software: dict = field(default_factory=dict)
    created: str = ""
    checksum: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def structures(self) -> list[str]:
        """Structure keys of the output channels, background excluded."""
        return [k for k in self.labels if k != BACKGROUND]

    @property
    def patch_depth(self) -> int:
        """Slices per model input: SV-Net's window depth, SEQ-UNET's sequence length."""
        return int(self.input_size[2])

    @property
    def inplane_size(self) -> tuple[int, int] | None:
        """``(nx, ny)`` when slices are resampled to a fixed in-plane size, else ``None``."""
        return (int(self.input_size[0]), int(self.input_size[1])) if self.fixed_inplane_size else None

    @property
    def acquisition_range(self) -> AcquisitionRange:
        """The acquisition range the weights were trained on (:func:`OrbitSegLib.qa.trained_range`: the
        recorded one, or the bundled models' for a card that records none)."""
        return trained_range(self.training_acquisition)

    @property
    def size_multiple(self) -> int:
        """What the model grid's sizes must be multiples of for this architecture and configuration."""
        return model_class(self.architecture).size_multiple_for(self.config)

    def identity(self) -> str:
        """Description (or architecture) and creation date: how other models' cards name this one."""
        return f"{self.description or self.architecture}, created {self.created[:10]}"

    def summary(self) -> str:
        """One line for model lists: description, grid, window, date, the acquisition range of the training
        scans, top-level scalar metrics and the held-out headline (recorded by ``orbitseg evaluate --record``)."""
        spacing = "×".join(f"{v:g}" for v in self.spacing)
        size = "×".join(str(v) for v in self.input_size)
        scalars = ", ".join(f"{k} {v:.3g}" for k, v in self.metrics.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool))
        parts = [self.description or self.architecture] + ([f"ensemble of {self.members}"] if self.members > 1 else [])
        parts += [f"{spacing} mm grid, patch {size}", f"window {self.window[0]:g}/{self.window[1]:g} HU",
                  f"created {self.created[:10] or '?'}", f"trained on scans of {self.acquisition_range.text()}"]
        held_out = self.metrics.get("held_out")
        if isinstance(held_out, dict) and "tao_mean_iou" in held_out:
            def number(key: str) -> str:  # None where the evaluation had nothing to measure it on
                value = held_out.get(key)
                return "–" if value is None else f"{value:.3f}"

            scalars += (", " if scalars else "") + (
                f"held-out ({held_out.get('data', '?')}): TAO mean IoU {number('tao_mean_iou')}, "
                f"globe IoU {number('globe_iou')}, muscle Dice {number('muscle_dice')}, "
                f"optic nerve Dice {number('optic_nerve_dice')}")
        return "; ".join(parts + ([scalars] if scalars else []))

    def to_dict(self) -> dict:
        """The card as a plain JSON-compatible dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> ModelCard:
        """Inverse of :meth:`to_dict`; ``ValueError`` names missing or unknown fields."""
        if not isinstance(data, dict):
            raise ValueError(f"model card is a {type(data).__name__}, not a dict")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing, unknown = sorted(required - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise ValueError(f"model card has missing fields {missing} / unknown fields {unknown}")
        return cls(**data)


def software_versions() -> dict:
    """Versions of python, torch, monai and orbitseg in this environment."""
    try:
        monai = importlib.metadata.version("monai")
    except importlib.metadata.PackageNotFoundError:
        monai = None
    return {"python": platform.python_version(), "torch": torch.__version__, "monai": monai,
            "orbitseg": ORBITSEG_VERSION}


def make_card(model: nn.Module, *, window, spacing, input_size, fixed_inplane_size: bool = False,
              training_data: str = "", acquisition: AcquisitionRange | None = None, metrics: dict | None = None,
              description: str = "") -> ModelCard:
    """A card for a registry model: architecture, configuration, head and labels come from the model.

    ``window``: (level, width) HU; ``spacing``: (x, y, z) mm; ``input_size``: training patch (x, y, z) voxels;
    ``acquisition``: the spacings of the training scans (``None``: not recorded, see
    :attr:`ModelCard.training_acquisition`).
    """
    card = ModelCard(architecture=model.name, config=model.config, labels=list(HEAD_LABELS[model.head]),
                     head=model.head, window=list(window), spacing=list(spacing), input_size=list(input_size),
                     fixed_inplane_size=bool(fixed_inplane_size), members=member_count(model),
                     training_data=training_data,
                     training_acquisition=acquisition.to_dict() if acquisition is not None else None,
                     metrics=metrics or {}, description=description,
                     software=software_versions(),
                     created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return ModelCard.from_dict(card.to_dict())


def tensors_checksum(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 hex digest over the tensors in key order: name, dtype, shape and raw bytes of each."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def check_card(card: ModelCard, source: str) -> None:
    """Validate a card's fields (not against weights); ``OrbitSegError`` names ``source`` and the problem."""
    if card.format_version != FORMAT_VERSION:
        raise OrbitSegError(f"{source}: unknown checkpoint format version {card.format_version!r} "
                            f"(this OrbitSeg reads version {FORMAT_VERSION})")
    if card.architecture not in NAMES:
        raise OrbitSegError(f"{source}: unknown architecture {card.architecture!r}; valid: {', '.join(NAMES)}")
    expected_head = model_class(card.architecture).head
    if card.head != expected_head:
        raise OrbitSegError(f"{source}: head {card.head!r} does not match {card.architecture} ({expected_head!r})")
    if list(card.labels) != list(HEAD_LABELS[card.head]):
        raise OrbitSegError(f"{source}: label order {list(card.labels)} is not OrbitSeg's "
                            f"{list(HEAD_LABELS[card.head])}")
    expected_keys = set(preset_config(card.architecture))
    if not isinstance(card.config, dict) or set(card.config) != expected_keys:
        keys = sorted(card.config) if isinstance(card.config, dict) else card.config
        raise OrbitSegError(f"{source}: {card.architecture} configuration keys {keys} are not "
                            f"{sorted(expected_keys)}")
    if not isinstance(card.members, int) or isinstance(card.members, bool) or card.members < 1:
        raise OrbitSegError(f"{source}: members {card.members!r} is not a positive integer")
    if card.config["out_channels"] != len(card.labels):
        raise OrbitSegError(f"{source}: configuration out_channels does not match the {len(card.labels)} labels")
    try:
        _check_grid_fields(card, source)
    except TypeError:
        raise OrbitSegError(f"{source}: window, spacing or input_size of the card are not numbers") from None
    if card.training_acquisition is not None:
        try:
            AcquisitionRange.from_dict(card.training_acquisition)
        except ValueError as exc:
            raise OrbitSegError(f"{source}: training_acquisition of the card: {exc}") from None


def _check_grid_fields(card: ModelCard, source: str) -> None:
    if len(card.window) != 2 or not card.window[1] > 0:
        raise OrbitSegError(f"{source}: window {card.window} is not [level, width > 0] in HU")
    if len(card.spacing) != 3 or not all(s > 0 for s in card.spacing):
        raise OrbitSegError(f"{source}: spacing {card.spacing} is not three positive mm values (x, y, z)")
    if len(card.input_size) != 3 or not all(isinstance(s, int) and s > 0 for s in card.input_size):
        raise OrbitSegError(f"{source}: input_size {card.input_size} is not three positive integers (x, y, z)")
    multiple = model_class(card.architecture).size_multiple_for(card.config)
    if any(s % multiple for s in card.input_size[:2]):
        raise OrbitSegError(f"{source}: input_size {card.input_size} in-plane is not a multiple of {multiple}")


def _check_model_matches_card(model: nn.Module, card: ModelCard, source: str) -> None:
    if card.architecture != model.name or card.config != model.config:
        raise OrbitSegError(f"{source}: card describes {card.architecture} {card.config}, but the model is "
                            f"{model.name} {model.config}")
    if card.members != member_count(model):
        raise OrbitSegError(f"{source}: card describes {card.members} network(s), but the model has "
                            f"{member_count(model)}")


def save_checkpoint(path, model: nn.Module, card: ModelCard, *, half: bool = False,
                    extra: dict | None = None) -> ModelCard:
    """Write ``model``'s weights with ``card`` to ``path`` atomically; returns the stored card.

    The stored card gets the current software versions and the checksum of the stored tensors.
    ``half``: store floating tensors as float16 (half the size; loaded back as float32); values outside
    float16's range are an error. ``extra``: optional dict of tensors and plain Python values (e.g. an
    optimizer state) returned by :func:`read_extra`.
    """
    path = Path(path)
    check_card(card, str(path))
    _check_model_matches_card(model, card, str(path))
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if half and tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
            if not torch.isfinite(tensor).all():
                raise OrbitSegError(f"{path}: weight {key} does not fit float16; save with half=False")
        state[key] = tensor.clone()
    stored = dataclasses.replace(card, software=software_versions(), checksum=tensors_checksum(state))
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "card": stored.to_dict(),
               "state_dict": state, "extra": extra or {}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
        try:
            torch.load(tmp, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # the file must load the way load_checkpoint reads it
            raise OrbitSegError(f"{path}: extra holds objects a weights-only load refuses "
                                f"({str(exc).strip().splitlines()[0][:200]})") from None
    return stored


def _read(path, mmap: bool) -> dict:
    path = Path(path)
    if not path.is_file():
        raise OrbitSegError(f"model file {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for foreign or damaged files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OrbitSegError(f"{path} is not a readable OrbitSeg checkpoint ({reason[:200]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise OrbitSegError(f"{path} is not an OrbitSeg checkpoint (no {FORMAT!r} header)")
    if "card" not in data:
        raise OrbitSegError(f"{path} has no model card")
    if data.get("format_version") != FORMAT_VERSION:
        raise OrbitSegError(f"{path}: unknown checkpoint format version {data.get('format_version')!r} "
                            f"(this OrbitSeg reads version {FORMAT_VERSION})")
    return data


def _verified_state(data: dict, card: ModelCard, path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, after checking they are there and match the card's checksum."""
    state = data.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise OrbitSegError(f"{path}: no weights (state_dict) in the checkpoint")
    if tensors_checksum(state) != card.checksum:
        raise OrbitSegError(f"{path}: checksum mismatch; the weights are damaged or were changed after saving")
    return state


def record_metrics(path, key: str, metrics: dict) -> ModelCard:
    """Store ``metrics`` under ``card.metrics[key]`` in the checkpoint at ``path``, in place and atomically.

    The weights are rewritten unchanged (their dtype and checksum stay as they are); ``metrics`` must be
    JSON-serialisable. Returns the updated card.
    """
    data = _read(path, mmap=False)
    card = _card_of(data, path)
    _verified_state(data, card, path)
    updated = dataclasses.replace(card, metrics={**card.metrics, key: json.loads(json.dumps(metrics))})
    data["card"] = updated.to_dict()
    with atomic_path(Path(path)) as tmp:
        torch.save(data, tmp)
    return updated


def _card_of(data: dict, path) -> ModelCard:
    try:
        card = ModelCard.from_dict(data["card"])
    except (TypeError, ValueError) as exc:
        raise OrbitSegError(f"{path}: invalid model card ({exc})") from None
    check_card(card, str(path))
    return card


def read_card(path) -> ModelCard:
    """The validated card of a checkpoint, without building the model (tensors are memory-mapped, not read)."""
    return _card_of(_read(path, mmap=True), path)


def read_extra(path) -> dict:
    """The ``extra`` dict stored with a checkpoint (e.g. optimizer state for resuming training)."""
    return _read(path, mmap=False).get("extra", {})


def load_checkpoint(path, device="cpu") -> tuple[nn.Module, ModelCard]:
    """Build the model a checkpoint describes, load and verify its weights; returns ``(model, card)``.

    The model is float32, in eval mode, on ``device``; a card with ``members > 1`` gives an
    :class:`~OrbitSegLib.models.ensemble.Ensemble`. Missing or invalid cards, unknown format versions,
    checksum mismatches and configurations that do not fit the weights raise ``OrbitSegError``.
    """
    model, card, _ = _load(path)
    return model.to(device).eval(), card


def _load(path) -> tuple[nn.Module, ModelCard, bool]:
    """``(model on the CPU, card, whether its floating weights are stored as float16)``."""
    data = _read(path, mmap=False)
    card = _card_of(data, path)
    state = _verified_state(data, card, path)
    try:
        networks = [create(card.architecture, **card.config) for _ in range(card.members)]
    except OrbitSegError as exc:
        raise OrbitSegError(f"{path}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise OrbitSegError(f"{path}: invalid {card.architecture} configuration in the card ({exc})") from None
    model = networks[0] if card.members == 1 else Ensemble(networks)
    half = all(t.dtype == torch.float16 for t in state.values() if t.is_floating_point())
    state = {k: t.float() if t.is_floating_point() else t for k, t in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise OrbitSegError(f"{path}: the card's {card.architecture} configuration does not fit the weights "
                            f"({detail[:300]})") from None
    return model, card, half


ENSEMBLE_FIELDS = ("architecture", "config", "labels", "head", "window", "spacing", "input_size",
                   "fixed_inplane_size")
"""Card fields that the models of an ensemble must share."""


def _compatible(sources) -> list[tuple[nn.Module, ModelCard, bool]]:
    """Load ``sources`` (paths) and check that they agree in :data:`ENSEMBLE_FIELDS`."""
    loaded = [_load(p) for p in sources]
    first = loaded[0][1]
    for source, (_, card, _) in zip(sources[1:], loaded[1:]):
        for name in ENSEMBLE_FIELDS:
            if getattr(card, name) != getattr(first, name):
                raise OrbitSegError(f"cannot combine {sources[0]} and {source}: their {name} differ "
                                    f"({getattr(first, name)} against {getattr(card, name)})")
    return loaded


def _combined_card(model: nn.Module, kind: str, sources, loaded, description: str) -> ModelCard:
    """The card of ``model`` made from ``loaded`` sources: the first's grid, the span of the sources'
    acquisition ranges, and training data ``"<kind>: "`` followed by every source's name, identity and
    training data."""
    first = loaded[0][1]
    provenance = " | ".join(f"{p.name} ({card.identity()}): {card.training_data or 'no training data recorded'}"
                            for p, (_, card, _) in zip(sources, loaded))
    acquisition = first.acquisition_range
    for _, card, _ in loaded[1:]:
        acquisition = acquisition.hull(card.acquisition_range)
    return make_card(model, window=first.window, spacing=first.spacing, input_size=first.input_size,
                     fixed_inplane_size=first.fixed_inplane_size, description=description,
                     training_data=f"{kind}: {provenance}", acquisition=acquisition)


def save_ensemble(path, sources, *, description: str = "") -> ModelCard:
    """Write the ensemble of the checkpoints ``sources`` to ``path``; returns the stored card.

    An ensemble among the sources contributes all its members. The sources must agree in
    :data:`ENSEMBLE_FIELDS` (one network configuration on one model grid). The new card names every
    source and its training data and records the span of their acquisition ranges (each source's, or
    the bundled models' where its card records none); held-out metrics are not carried over, since
    they describe the single models (``orbitseg evaluate --record`` measures the ensemble's own).
    Weights are stored as float16 when every source stores them so.
    """
    sources = [Path(p) for p in sources]
    loaded = _compatible(sources)
    networks = [net for model, _, _ in loaded for net in members_of(model)]
    if len(networks) < 2:
        raise OrbitSegError(f"an ensemble needs at least two models, got {len(networks)}")
    ensemble = Ensemble(networks)
    card = _combined_card(ensemble, f"ensemble of {len(networks)} networks, sigmoid outputs averaged",
                          sources, loaded, description)
    return save_checkpoint(path, ensemble, card, half=all(half for _, _, half in loaded))


def save_weight_average(path, sources, *, description: str = "") -> ModelCard:
    """Write one network whose weights are the mean of the networks ``sources`` (a "model soup").

    Unlike an ensemble it costs one network's time, but it only makes sense for networks fine-tuned
    from a common start (e.g. successive ``orbitseg train --init`` runs); judge it on cases of your
    own before use. The sources must be single networks agreeing in :data:`ENSEMBLE_FIELDS`;
    integer buffers (BatchNorm's batch counter) come from the first. Card as for :func:`save_ensemble`.
    """
    sources = [Path(p) for p in sources]
    if len(sources) < 2:
        raise OrbitSegError(f"a weight average needs at least two models, got {len(sources)}")
    loaded = _compatible(sources)
    for source, (_, card, _) in zip(sources, loaded):
        if card.members > 1:
            raise OrbitSegError(f"{source} is an ensemble of {card.members} networks; average single networks")
    states = [model.state_dict() for model, _, _ in loaded]
    model = loaded[0][0]
    model.load_state_dict({k: torch.stack([s[k] for s in states]).mean(0) if t.is_floating_point() else t
                           for k, t in states[0].items()})
    card = _combined_card(model, f"weight average of {len(sources)} networks", sources, loaded, description)
    return save_checkpoint(path, model, card, half=all(half for _, _, half in loaded))
