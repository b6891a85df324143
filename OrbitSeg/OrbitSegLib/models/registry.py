"""Model registry: architecture names, their presets, and :func:`create`.

Presets per architecture:

- ``"paper"``: the published configuration (SV-Net 8,664,471 weights; SEQ-UNET 57,003,078 weights, 64×64 input).
- ``"default"``: the configuration of OrbitSeg's bundled models, sized to train on 2 CPU cores:

  - ``sv-net``: the paper's layout (17 kernel-3 convolutions, 5 levels) at half the widths
    (8, 16, 32, 64, 128): 2,167,375 weights.
  - ``seq-unet``: the paper's layout (3 encoder blocks, two 3-layer BiConvLSTMs) with widths 16, 32, 64,
    ConvLSTM hidden sizes 64 and 16: 1,167,894 weights; meant for native model-grid slices (e.g. 112×96)
    rather than the paper's 64×64.

A checkpoint stores the complete configuration, so ``create(name, **card.config)`` rebuilds its model
whatever the preset defaults are.
"""
from __future__ import annotations

import copy

from torch import nn

from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.models.seq_unet import SeqUNet
from OrbitSegLib.models.sv_net import SVNet

_CLASSES: dict[str, type[nn.Module]] = {"seq-unet": SeqUNet, "sv-net": SVNet}

NAMES: tuple[str, ...] = tuple(_CLASSES)
"""Registered architecture names."""

PRESETS: dict[str, dict[str, dict]] = {
    "seq-unet": {
        "paper": SeqUNet.paper_config(),
        "default": {**SeqUNet.paper_config(), "widths": [16, 32, 64], "lstm1_hidden": 64, "lstm2_hidden": 16},
    },
    "sv-net": {
        "paper": SVNet.paper_config(),
        "default": {**SVNet.paper_config(), "widths": [8, 16, 32, 64, 128]},
    },
}
"""Complete constructor arguments per architecture and preset name."""


def model_class(name: str) -> type[nn.Module]:
    """The class registered under ``name``; ``OrbitSegError`` lists the valid names."""
    try:
        return _CLASSES[name]
    except KeyError:
        raise OrbitSegError(f"unknown model {name!r}; valid models: {', '.join(NAMES)}") from None


def preset_config(name: str, preset: str = "default") -> dict:
    """A copy of the complete configuration of ``preset`` (``"default"`` or ``"paper"``) for model ``name``."""
    model_class(name)
    try:
        return copy.deepcopy(PRESETS[name][preset])
    except KeyError:
        raise OrbitSegError(f"unknown preset {preset!r} for {name}; valid presets: "
                            f"{', '.join(PRESETS[name])}") from None


def create(name: str, preset: str = "default", **config) -> nn.Module:
    """Build model ``name`` from ``preset``'s configuration, overridden by ``config``.

    The model has ``name``, ``head``, ``size_multiple`` and ``config`` (the complete, JSON-compatible
    constructor arguments) attributes. Unknown names, presets or configuration keys raise
    ``OrbitSegError``.
    """
    cls = model_class(name)
    full = preset_config(name, preset)
    unknown = sorted(set(config) - set(full))
    if unknown:
        raise OrbitSegError(f"unknown {name} configuration key(s) {', '.join(unknown)}; valid keys: "
                            f"{', '.join(full)}")
    full.update(config)
    return cls(**full)
