"""SV-Net: the 3D V-Net variant of Xu et al. 2020 (arXiv 2007.02091) for TAO orbital CT.

What the paper fixes, and this module follows: 3×3×3 convolutions, 17 of them, each followed by
BatchNorm and ReLU; 2×2×2 max pooling with stride 2 on the way down; a 1×1×1 convolution head giving
one logit per class (background included); about 8.6M weights; trained with voxel-wise sigmoid
cross-entropy over one-hot channels and read out by argmax.

What the paper leaves open (its Figure 2 is not in the text), chosen here after V-Net (Milletari 2016):

- **Layout** (paper configuration): 5 resolution levels, widths 16, 32, 64, 128, 256 (V-Net's widths).
  Encoder stages have 1, 2, 2, 2 and 2 (bottom) convolutions, decoder stages 2, 2, 2, 2: 9 + 8 = 17
  convolutions of kernel 3 (V-Net has 1, 2, 3, 3, 3 and 3, 3, 2, 1: 21 convolutions of kernel 5).
- **Upsampling**: a 2×2×2 transposed convolution with stride 2 (V-Net's up-convolution) + BatchNorm + ReLU
  halving the channels; it is not one of the 17 kernel-3 convolutions.
- **Skips**: as in V-Net, the upsampled features are concatenated with the encoder features of the same
  level, so a decoder stage works at twice its level's width (256, 128, 64, 32 channels).
- **Residuals** (``residual=True``): as in V-Net, each stage learns a residual. A stage's reference is its
  input when the widths match (decoder stages: the concatenation), otherwise the output of its first
  convolution (encoder stages ≥ 2 convolutions: that convolution plays V-Net's down-convolution role).
  The reference is added after the last convolution's BatchNorm and before its ReLU. Single-convolution
  stages have none. The residuals add no weights.

Paper configuration: 8,664,471 weights (``SVNet.paper_config()``), within 1% of the paper's 8.6M.

Input (B, in_channels, D, H, W) with D, H and W multiples of ``2 ** (len(widths) - 1)`` (16 in the paper
configuration; the paper's 32×256×256 crop works). Output logits (B, out_channels, D, H, W).
"""
from __future__ import annotations

import torch
from torch import nn

from OrbitSegLib.errors import OrbitSegError
from OrbitSegLib.structures import NUM_CLASSES


class _ConvBN(nn.Sequential):
    """3×3×3 convolution (no bias: BatchNorm follows) + BatchNorm3d."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm3d(out_channels))


class _Stage(nn.Module):
    """``n`` convolutions of kernel 3, each with BatchNorm + ReLU, optionally residual (see module doc).

    (B, in_channels, D, H, W) -> (B, width, D, H, W).
    """

    def __init__(self, in_channels: int, width: int, n: int, residual: bool):
        super().__init__()
        self.convs = nn.ModuleList(_ConvBN(in_channels if k == 0 else width, width) for k in range(n))
        self.residual_from = None
        if residual and n > 1:
            self.residual_from = "input" if in_channels == width else "first"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reference = x if self.residual_from == "input" else None
        last = len(self.convs) - 1
        for k, conv in enumerate(self.convs):
            x = conv(x)
            if k == last and self.residual_from is not None:
                x = x + reference
            x = torch.relu(x)
            if k == 0 and self.residual_from == "first":
                reference = x
        return x


class _Up(nn.Sequential):
    """2×2×2 transposed convolution, stride 2, + BatchNorm3d + ReLU.

    (B, C_in, D, H, W) -> (B, C_out, 2D, 2H, 2W).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.ConvTranspose3d(in_channels, out_channels, 2, stride=2, bias=False),
                         nn.BatchNorm3d(out_channels), nn.ReLU(inplace=True))


class SVNet(nn.Module):
    """SV-Net (see the module docstring for the layout).

    Args:
        in_channels: input channels (1: CT).
        out_channels: classes, background included (``structures.NUM_CLASSES`` = 7).
        widths: encoder widths per resolution level, finest first; ``len(widths) - 1`` poolings.
        encoder_convs: kernel-3 convolutions per encoder level (``len(widths)`` entries, the last is the bottom).
        decoder_convs: kernel-3 convolutions per decoder level, finest first (``len(widths) - 1`` entries).
        residual: V-Net style residual stages.

    The defaults are the paper configuration. ``forward``: (B, in_channels, D, H, W) float ->
    (B, out_channels, D, H, W) logits; D, H, W multiples of :attr:`size_multiple`.
    """

    name = "sv-net"
    head = "sigmoid"
    """Per-channel sigmoid over one-hot channels including background; labels by argmax."""

    def __init__(self, in_channels: int = 1, out_channels: int = NUM_CLASSES,
                 widths=(16, 32, 64, 128, 256), encoder_convs=(1, 2, 2, 2, 2), decoder_convs=(2, 2, 2, 2),
                 residual: bool = True):
        super().__init__()
        widths, encoder_convs, decoder_convs = list(widths), list(encoder_convs), list(decoder_convs)
        if len(widths) < 2 or min(widths) < 1:
            raise OrbitSegError(f"SV-Net widths {widths}: need at least 2 positive widths")
        if len(encoder_convs) != len(widths) or len(decoder_convs) != len(widths) - 1:
            raise OrbitSegError(f"SV-Net needs {len(widths)} encoder_convs and {len(widths) - 1} decoder_convs "
                                f"for widths {widths}, got {encoder_convs} and {decoder_convs}")
        if min(encoder_convs + decoder_convs) < 1:
            raise OrbitSegError("SV-Net stages need at least one convolution each")
        self.config = {"in_channels": int(in_channels), "out_channels": int(out_channels), "widths": widths,
                       "encoder_convs": encoder_convs, "decoder_convs": decoder_convs, "residual": bool(residual)}
        self.size_multiple = self.size_multiple_for(self.config)

        self.encoder = nn.ModuleList()
        channels = in_channels
        for width, n in zip(widths, encoder_convs):
            self.encoder.append(_Stage(channels, width, n, residual))
            channels = width
        self.pool = nn.MaxPool3d(2, stride=2)
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(len(widths) - 1)):
            self.ups.append(_Up(channels, widths[level]))
            channels = 2 * widths[level]
            self.decoder.append(_Stage(channels, channels, decoder_convs[level], residual))
        self.classifier = nn.Conv3d(channels, out_channels, 1)

    @staticmethod
    def size_multiple_for(config: dict) -> int:
        """What D, H and W must be multiples of for a configuration: ``2 ** (len(widths) - 1)``."""
        return 2 ** (len(config["widths"]) - 1)

    @staticmethod
    def paper_config() -> dict:
        """Constructor arguments of the paper configuration (8,664,471 weights)."""
        return {"in_channels": 1, "out_channels": NUM_CLASSES, "widths": [16, 32, 64, 128, 256],
                "encoder_convs": [1, 2, 2, 2, 2], "decoder_convs": [2, 2, 2, 2], "residual": True}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, D, H, W) -> logits (B, out_channels, D, H, W)."""
        if x.dim() != 5 or x.shape[1] != self.config["in_channels"]:
            raise OrbitSegError(f"SV-Net expects input (B, {self.config['in_channels']}, D, H, W), "
                                f"got {tuple(x.shape)}")
        if any(s % self.size_multiple for s in x.shape[2:]):
            raise OrbitSegError(f"SV-Net input size {tuple(x.shape[2:])} (D, H, W) must be multiples of "
                                f"{self.size_multiple}")
        skips = []
        for level, stage in enumerate(self.encoder):
            if level:
                x = self.pool(x)
            x = stage(x)
            skips.append(x)
        skips.pop()
        for up, stage in zip(self.ups, self.decoder):
            x = stage(torch.cat((up(x), skips.pop()), dim=1))
        return self.classifier(x)
