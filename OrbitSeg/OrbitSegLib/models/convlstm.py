"""Convolutional LSTM (Shi et al. 2015) and the bidirectional stack used by SEQ-UNET.

PyTorch has no ConvLSTM, so this module provides one:

- :class:`ConvLSTMCell`: one time step; a single convolution over ``concat(x, h)`` computes all four
  gates (input, forget, output, candidate) at once.
- :class:`BiConvLSTM`: a stack of bidirectional layers over a sequence ``(B, T, C, H, W)``. Each layer
  runs the sequence forwards and backwards and **sums** the two hidden states per time step; the sum is
  the next layer's input. This is the layout of the SEQ-UNET authors' public code
  (github.com/SleepyChild1005/OrbitSeg, ``BiConvLSTM.py``).

By default (``tied_directions=True``, as in the authors' code) the forward and backward passes of a
layer share one cell. The two directions then run as one batch of ``2B`` sequences, which halves the
number of convolution calls. With ``tied_directions=False`` each direction has its own cell.
"""
from __future__ import annotations

import torch
from torch import nn


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step.

    Args:
        input_channels: channels of ``x``.
        hidden_channels: channels of the hidden state ``h`` and the cell state ``c``.
        kernel_size: odd kernel size of the gate convolution (padding keeps H, W).
    """

    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvLSTM kernel_size must be odd, got {kernel_size}")
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(input_channels + hidden_channels, 4 * hidden_channels,
                               kernel_size, padding=kernel_size // 2, bias=True)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: (N, C_in, H, W); ``state``: ``(h, c)``, each (N, C_hidden, H, W). Returns the new ``(h, c)``."""
        h, c = state
        i, f, o, g = self.gates(torch.cat((x, h), dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def first_step(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step from zero state, ``self(x, (0, 0))``, skipping the convolution of the zero ``h``.

        ``x``: (N, C_in, H, W). Returns ``(h, c)``, each (N, C_hidden, H, W).
        """
        weight = self.gates.weight[:, : x.shape[1]]
        gates = nn.functional.conv2d(x, weight, self.gates.bias, padding=self.gates.padding)
        i, _, o, g = gates.chunk(4, dim=1)
        c = torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def run(self, sequence: torch.Tensor) -> torch.Tensor:
        """Run the cell over a sequence from zero state.

        ``sequence``: (N, T, C_in, H, W). Returns the hidden states (N, T, C_hidden, H, W).
        """
        h, c = self.first_step(sequence[:, 0])
        outputs = [h]
        for step in range(1, sequence.shape[1]):
            h, c = self(sequence[:, step], (h, c))
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class BiConvLSTM(nn.Module):
    """Stack of bidirectional ConvLSTM layers whose directions are summed.

    Args:
        input_channels: channels of the input sequence.
        hidden_channels: hidden channels of every layer (also the output channels).
        num_layers: number of stacked bidirectional layers.
        kernel_size: gate convolution kernel size.
        tied_directions: share one cell between the forward and the backward pass of a layer.

    Input (B, T, C_in, H, W); output (B, T, C_hidden, H, W): for every time step the sum of the forward
    and backward hidden states of the last layer.
    """

    def __init__(self, input_channels: int, hidden_channels: int, num_layers: int = 1,
                 kernel_size: int = 3, tied_directions: bool = True):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"BiConvLSTM needs at least one layer, got {num_layers}")
        self.tied_directions = tied_directions
        channels = [input_channels] + [hidden_channels] * num_layers
        self.forward_cells = nn.ModuleList(
            ConvLSTMCell(channels[k], hidden_channels, kernel_size) for k in range(num_layers))
        self.backward_cells = None if tied_directions else nn.ModuleList(
            ConvLSTMCell(channels[k], hidden_channels, kernel_size) for k in range(num_layers))

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        """(B, T, C_in, H, W) -> (B, T, C_hidden, H, W)."""
        x = sequence
        for k, cell in enumerate(self.forward_cells):
            reversed_x = x.flip(1)
            if self.backward_cells is None:
                both = cell.run(torch.cat((x, reversed_x), dim=0))
                forward_h, backward_h = both.chunk(2, dim=0)
            else:
                forward_h = cell.run(x)
                backward_h = self.backward_cells[k].run(reversed_x)
            x = forward_h + backward_h.flip(1)
        return x
