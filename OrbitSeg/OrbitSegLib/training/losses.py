"""Losses: the papers' (SV-Net: voxel-wise sigmoid cross-entropy; SEQ-UNET: Dice) and Dice + CE.

Each loss takes logits ``(B, C, *spatial)`` and targets: class indices ``(B, *spatial)``, or
partial-volume fractions of the structures ``(B, C - 1, *spatial)`` in 0..1 (the background's being what
the structures leave). For heads without a background channel (SEQ-UNET) the targets are the structure
channels only. Optional channel weights (``(C,)``, background first) weight each channel's
cross-entropy and Dice terms; they are normalised to mean 1, so equal weights give the plain loss.

A reference need not annotate every structure. ``known`` (``(B, C)``, background first, 1 = annotated)
leaves each sample's unannotated channels out of both terms: their cross-entropy is not counted and
their voxels leave the Dice sums, so those channels get no gradient from that sample. A sample that
lacks any structure has an unknown background too (the missing structure's voxels would count as
background). A channel no sample knows drops out of the mean over channels.
"""
from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch.nn.functional import binary_cross_entropy_with_logits

from ..errors import OrbitSegError
from .augment import one_hot

LOSSES = ("paper", "dice", "bce", "dice_ce")


class SegmentationLoss(torch.nn.Module):
    """``kind``: ``bce`` (sigmoid cross-entropy over one-hot channels), ``dice`` (soft Dice over
    the batch), ``dice_ce`` (their sum), or ``paper`` (bce for SV-Net, dice for SEQ-UNET)."""

    def __init__(self, kind: str, architecture: str, num_classes: int, has_background: bool,
                 class_weights: list[float] | None = None):
        super().__init__()
        if kind not in LOSSES:
            raise OrbitSegError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
        if kind == "paper":
            kind = "bce" if architecture == "sv-net" else "dice"
        self.kind = kind
        self.num_classes = num_classes
        self.has_background = has_background
        self.dice = DiceLoss(sigmoid=False, batch=True, smooth_nr=1e-4, smooth_dr=1e-4, reduction="none")
        weights = torch.ones(num_classes) if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        if weights.shape != (num_classes,) or not bool((weights > 0).all()):
            raise OrbitSegError(f"class weights must be {num_classes} positive numbers, got {class_weights}")
        weights = weights if has_background else weights[1:]
        self.register_buffer("weights", weights / weights.mean())

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
        if targets.dim() == logits.dim():
            fractions = targets.float()
            background = (1.0 - fractions.sum(dim=1, keepdim=True)).clamp_(0.0, 1.0)
            target = torch.cat([background, fractions], dim=1)
        else:
            target = one_hot(targets, self.num_classes)
        if not self.has_background:
            target = target[:, 1:]
        logits = logits.float()
        weights = self.weights.to(logits.device)
        voxels = list(range(2, logits.dim()))
        if known is None:
            known = logits.new_ones(logits.shape[:2])
        else:
            known = known.to(logits.device, torch.float32)[:, (0 if self.has_background else 1):]
        present = known.sum(dim=0) > 0  # (C,): channels some sample annotates
        loss = logits.new_zeros(())
        if self.kind in ("bce", "dice_ce"):
            per_sample = binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=voxels)
            per_channel = (per_sample * known).sum(dim=0) / known.sum(dim=0).clamp(min=1.0)
            loss = loss + (per_channel * weights)[present].sum() / present.sum().clamp(min=1)
        if self.kind in ("dice", "dice_ce"):
            mask = known[(...,) + (None,) * len(voxels)]
            dice = self.dice(torch.sigmoid(logits) * mask, target * mask).flatten()
            loss = loss + (dice * weights)[present].sum() / present.sum().clamp(min=1)
        return loss


def known_channels(annotated: torch.Tensor) -> torch.Tensor:
    """``(B, S)`` structures annotated (bool, label order) → ``(B, C)`` known channels, background first:
    the background is known only where every structure is."""
    annotated = annotated.bool()
    return torch.cat([annotated.all(dim=1, keepdim=True), annotated], dim=1)
