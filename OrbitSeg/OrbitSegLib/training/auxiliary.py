"""The auxiliary levator head: one more 1×1 convolution on the network's last feature map, trained to
find the levator palpebrae superioris, the confuser lying on the superior rectus.

The shared features then have to tell the levator from the rectus, which is what limits the superior
rectus. The head is the same as one more output channel of the network's classifier, but it lives
outside the network: saved models keep OrbitSeg's output channels, and inference does not change.
Its weights are kept in ``last.pt`` for resuming only.
"""
from __future__ import annotations

import torch
from torch import nn


class LevatorHead(nn.Module):
    """A 1×1 convolution (3D for SV-Net, 2D for SEQ-UNET) on the input of ``network.classifier``.

    ``head(network, images)`` runs the network and returns its logits with the levator logit appended
    as the last channel: ``(B, out_channels + 1, *spatial)``.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        classifier = network.classifier
        conv = nn.Conv3d if isinstance(classifier, nn.Conv3d) else nn.Conv2d
        self.conv = conv(classifier.in_channels, 1, 1)
        self._features: torch.Tensor | None = None
        classifier.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self._features = inputs[0]

    def forward(self, network: nn.Module, images: torch.Tensor) -> torch.Tensor:
        logits = network(images)
        features, self._features = self._features, None
        return torch.cat([logits, self.conv(features).to(logits.dtype)], dim=1)
