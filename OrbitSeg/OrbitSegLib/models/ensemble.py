"""An ensemble of networks of one architecture and configuration, averaged in probability.

Every OrbitSeg head is a per-channel sigmoid, so the ensemble's output is the logit of the members'
mean sigmoid: applying the head's sigmoid to it gives exactly the averaged probabilities, and the
:class:`~OrbitSegLib.inference.Predictor` treats an ensemble like a single network.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from OrbitSegLib.errors import OrbitSegError

LOGIT_EPS = 1e-6
"""Probabilities are clamped to ``[eps, 1 - eps]`` before the logit, keeping the output finite."""


class Ensemble(nn.Module):
    """``members`` (at least two, same ``name`` and ``config``) averaged in sigmoid space.

    Input and output shapes are those of the members (SV-Net ``(B, C, D, H, W)`` logits, SEQ-UNET
    ``(B, C, H, W)``); ``name``, ``head``, ``config`` and ``size_multiple`` are the members'.
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise OrbitSegError(f"an ensemble needs at least two models, got {len(members)}")
        first = members[0]
        for other in members[1:]:
            if other.name != first.name or other.config != first.config:
                raise OrbitSegError(f"ensemble members differ: {first.name} {first.config} and "
                                    f"{other.name} {other.config}")
        self.members = nn.ModuleList(members)
        self.name, self.head = first.name, first.head
        self.config, self.size_multiple = first.config, first.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for member in self.members:
            probability = torch.sigmoid(member(x).float())
            total = probability if total is None else total.add_(probability)
        return torch.logit(total / len(self.members), eps=LOGIT_EPS)


def member_count(model: nn.Module) -> int:
    """How many networks ``model`` averages: its members for an :class:`Ensemble`, else 1."""
    return len(model.members) if isinstance(model, Ensemble) else 1


def members_of(model: nn.Module) -> list[nn.Module]:
    """The single networks in ``model``: an ensemble's members, or ``[model]``."""
    return list(model.members) if isinstance(model, Ensemble) else [model]
