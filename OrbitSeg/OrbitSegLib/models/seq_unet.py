"""SEQ-UNET: the sequential 2D U-Net with bidirectional ConvLSTMs of Chung et al. (JoVE 2022, doi 10.3791/64500).

Layout, following the paper and the authors' public code (github.com/SleepyChild1005/OrbitSeg,
``model/sensor3d_model_multilabel.py``):

1. Input: a sequence of ``slices`` (3) consecutive axial slices, (B, T, 1, H, W).
2. Encoder: 3 blocks of widths 64, 128, 256; each block is two 3×3 convolutions, each followed by
   BatchNorm and ELU. The same 2D layers process every slice (T is folded into the batch). Blocks 1, 2, 3
   run at full, 1/2 and 1/4 resolution; each is followed by 2×2 max pooling.
3. First bidirectional ConvLSTM at 1/8 resolution: hidden 512, 3 layers, forward and backward hidden
   states summed (:class:`~OrbitSegLib.models.convlstm.BiConvLSTM`).
4. Decoder: nearest-neighbour ×2 upsampling, concatenation with the encoder block of that resolution,
   then two 3×3 conv + BatchNorm + ELU (widths 256, 128) and, at full resolution, one (width 64), as in
   the authors' code.
5. Second bidirectional ConvLSTM at full resolution: hidden 64, 3 layers.
6. The output is summed over the sequence and a 1×1 convolution gives one logit per structure (6, no
   background channel). A per-class sigmoid is applied at use time; a pixel whose six probabilities are
   all ≤ 0.5 is background (``head = "sigmoid_nobg"``).

Deviations from the authors' code, all minor: the 1×1 head has a bias (one weight per class); the
ConvLSTMs' forward and backward passes share their cells as in that code, but
``tied_directions=False`` gives each direction its own.

The paper resizes slices to 64×64; any H, W that are multiples of 8 work. The paper configuration has
57,003,078 weights (:meth:`SeqUNet.paper_config`).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.models.convlstm import BiConvLSTM
from OrbitSegLib.structures import STRUCTURES


def _conv_bn_elu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ELU(inplace=True)]


def _block(in_channels: int, out_channels: int, n: int) -> nn.Sequential:
    """``n`` × (3×3 conv + BatchNorm2d + ELU): (N, C_in, H, W) -> (N, C_out, H, W)."""
    layers = _conv_bn_elu(in_channels, out_channels)
    for _ in range(n - 1):
        layers += _conv_bn_elu(out_channels, out_channels)
    return nn.Sequential(*layers)


class SeqUNet(nn.Module):
    """SEQ-UNET (see the module docstring).

    Args:
        in_channels: channels per slice (1: CT).
        out_channels: structures, no background channel (6).
        slices: sequence length T the model is trained for (3: the centre slice and its neighbours).
        widths: the three encoder block widths.
        lstm1_hidden, lstm1_layers: first BiConvLSTM (1/8 resolution).
        lstm2_hidden, lstm2_layers: second BiConvLSTM (full resolution).
        tied_directions: the ConvLSTM directions share their cells (as in the authors' code).

    The defaults are the paper configuration. ``forward``: (B, slices, in_channels, H, W) ->
    logits (B, out_channels, H, W) of the sequence's centre slice; H, W multiples of 8.
    """

    name = "seq-unet"
    head = "sigmoid_nobg"
    """Per-class sigmoid without a background channel: background where no class exceeds 0.5."""
    size_multiple = 8

    def __init__(self, in_channels: int = 1, out_channels: int = len(STRUCTURES), slices: int = 3,
                 widths=(64, 128, 256), lstm1_hidden: int = 512, lstm1_layers: int = 3,
                 lstm2_hidden: int = 64, lstm2_layers: int = 3, tied_directions: bool = True):
        super().__init__()
        widths = list(widths)
        if len(widths) != 3 or min(widths) < 1:
            raise OrbitSegError(f"SEQ-UNET needs 3 positive encoder widths, got {widths}")
        if slices < 1:
            raise OrbitSegError(f"SEQ-UNET slices must be at least 1, got {slices}")
        self.config = {"in_channels": int(in_channels), "out_channels": int(out_channels), "slices": int(slices),
                       "widths": widths, "lstm1_hidden": int(lstm1_hidden), "lstm1_layers": int(lstm1_layers),
                       "lstm2_hidden": int(lstm2_hidden), "lstm2_layers": int(lstm2_layers),
                       "tied_directions": bool(tied_directions)}
        w1, w2, w3 = widths
        self.encoder = nn.ModuleList([_block(in_channels, w1, 2), _block(w1, w2, 2), _block(w2, w3, 2)])
        self.lstm1 = BiConvLSTM(w3, lstm1_hidden, lstm1_layers, tied_directions=tied_directions)
        self.decoder = nn.ModuleList([_block(lstm1_hidden + w3, w3, 2), _block(w3 + w2, w2, 2),
                                      _block(w2 + w1, w1, 1)])
        self.lstm2 = BiConvLSTM(w1, lstm2_hidden, lstm2_layers, tied_directions=tied_directions)
        self.classifier = nn.Conv2d(lstm2_hidden, out_channels, 1)
        # Prior of the sigmoid heads: each structure covers a small part of a slice, so start at
        # p = sigmoid(-2) ≈ 0.12 instead of 0.5 everywhere (faster, steadier early training with Dice loss).
        nn.init.constant_(self.classifier.bias, -2.0)

    @staticmethod
    def size_multiple_for(config: dict) -> int:
        """What H and W must be multiples of (three poolings): 8."""
        return 8

    @staticmethod
    def paper_config() -> dict:
        """Constructor arguments of the paper configuration (64×64 input; 57,003,078 weights)."""
        return {"in_channels": 1, "out_channels": len(STRUCTURES), "slices": 3, "widths": [64, 128, 256],
                "lstm1_hidden": 512, "lstm1_layers": 3, "lstm2_hidden": 64, "lstm2_layers": 3,
                "tied_directions": True}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, in_channels, H, W) with T = ``slices`` -> logits (B, out_channels, H, W)."""
        c = self.config
        if x.dim() != 5 or x.shape[1] != c["slices"] or x.shape[2] != c["in_channels"]:
            raise OrbitSegError(f"SEQ-UNET expects input (B, {c['slices']}, {c['in_channels']}, H, W), "
                                f"got {tuple(x.shape)}")
        b, t = x.shape[:2]
        if any(s % self.size_multiple for s in x.shape[3:]):
            raise OrbitSegError(f"SEQ-UNET input size {tuple(x.shape[3:])} (H, W) must be multiples of 8")
        y = x.reshape(b * t, *x.shape[2:])
        skips = []
        for block in self.encoder:
            y = block(y)
            skips.append(y)
            y = F.max_pool2d(y, 2)
        y = self.lstm1(y.reshape(b, t, *y.shape[1:])).flatten(0, 1)
        for block in self.decoder:
            y = block(torch.cat((F.interpolate(y, scale_factor=2.0, mode="nearest"), skips.pop()), dim=1))
        y = self.lstm2(y.reshape(b, t, *y.shape[1:]))
        return self.classifier(y.sum(dim=1))
