"""Losses: the papers' (SV-Net: voxel-wise sigmoid cross-entropy; SEQ-UNET: Dice) and Dice + CE.

Each loss takes logits ``(B, C, *spatial)`` and targets: class indices ``(B, *spatial)``, or
partial-volume fractions of the structures ``(B, C - 1, *spatial)`` in 0..1 (the background's being what
the structures leave). For heads without a background channel (SEQ-UNET) the targets are the structure
channels only.
"""
from __future__ import annotations

import torch
from monai.losses import DiceLoss

from ..errors import OrbitSegError
from .augment import one_hot

LOSSES = ("paper", "dice", "bce", "dice_ce")


class SegmentationLoss(torch.nn.Module):
    """``kind``: ``bce`` (sigmoid cross-entropy over one-hot channels), ``dice`` (soft Dice over
    the batch), ``dice_ce`` (their sum), or ``paper`` (bce for SV-Net, dice for SEQ-UNET)."""

    def __init__(self, kind: str, architecture: str, num_classes: int, has_background: bool):
        super().__init__()
        if kind not in LOSSES:
            raise OrbitSegError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
        if kind == "paper":
            kind = "bce" if architecture == "sv-net" else "dice"
        self.kind = kind
        self.num_classes = num_classes
        self.has_background = has_background
        self.dice = DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-4, smooth_dr=1e-4)
        self.bce = torch.nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.dim() == logits.dim():
            fractions = targets.float()
            background = (1.0 - fractions.sum(dim=1, keepdim=True)).clamp_(0.0, 1.0)
            target = torch.cat([background, fractions], dim=1)
        else:
            target = one_hot(targets, self.num_classes)
        if not self.has_background:
            target = target[:, 1:]
        logits = logits.float()
        loss = logits.new_zeros(())
        if self.kind in ("bce", "dice_ce"):
            loss = loss + self.bce(logits, target)
        if self.kind in ("dice", "dice_ce"):
            loss = loss + self.dice(logits, target)
        return loss
