"""Losses: the papers' (SV-Net: voxel-wise sigmoid cross-entropy; SEQ-UNET: Dice) and Dice + CE.

Each loss takes logits ``(B, C, *spatial)`` and class indices ``(B, *spatial)``. For heads without a
background channel (SEQ-UNET) the targets are the one-hot structure channels only. The levator class
(phantom training data) is background for every output channel; with ``levator=True`` the logits carry
one more channel, last, whose target is the levator (:mod:`.auxiliary`).
"""
from __future__ import annotations

import torch
from monai.losses import DiceLoss

from ..errors import OrbitSegError
from ..structures import LEVATOR_CLASS
from .augment import one_hot

LOSSES = ("paper", "dice", "bce", "dice_ce")


class SegmentationLoss(torch.nn.Module):
    """``kind``: ``bce`` (sigmoid cross-entropy over one-hot channels), ``dice`` (soft Dice over
    the batch), ``dice_ce`` (their sum), or ``paper`` (bce for SV-Net, dice for SEQ-UNET)."""

    def __init__(self, kind: str, architecture: str, num_classes: int, has_background: bool,
                 levator: bool = False):
        super().__init__()
        if kind not in LOSSES:
            raise OrbitSegError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
        if kind == "paper":
            kind = "bce" if architecture == "sv-net" else "dice"
        self.kind = kind
        self.num_classes = num_classes
        self.has_background = has_background
        self.levator = levator
        self.dice = DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-4, smooth_dr=1e-4)
        self.bce = torch.nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        target = one_hot(classes, LEVATOR_CLASS + 1)
        levator = target[:, LEVATOR_CLASS:]
        target = torch.cat([target[:, :1] + levator, target[:, 1:self.num_classes]]
                           + ([levator] if self.levator else []), dim=1)
        if not self.has_background:
            target = target[:, 1:]
        logits = logits.float()
        loss = logits.new_zeros(())
        if self.kind in ("bce", "dice_ce"):
            loss = loss + self.bce(logits, target)
        if self.kind in ("dice", "dice_ce"):
            loss = loss + self.dice(logits, target)
        return loss
