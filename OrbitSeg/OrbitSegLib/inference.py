"""Running a segmentation network on one eye's model-grid volume.

- Device choice ``auto|cuda|cpu`` (``gpu`` = ``cuda``): auto picks CUDA when present and says so
  in the log when it falls back to the CPU; mixed precision (float16 autocast) on CUDA.
- SV-Net (3D): by default the whole eye in one pass (the network is fully convolutional); or a MONAI
  sliding window of ``window`` slices along z over the full in-plane extent, with configurable
  overlap; ``window=32, step=1`` reproduces the paper's protocol (a 32-slice window moved one slice at
  a time, which computes each slice up to 32 times).
- SEQ-UNET (2D + ConvLSTM): consecutive-slice triplets ``(k-1, k, k+1)`` (edges replicated),
  batched ``batch_size`` triplets at a time.

Every path returns per-class scores ``[C, z, y, x]`` (float32, 0..1) with channel 0 = background,
so post-processing is one argmax: sigmoid heads without a background channel get a constant 0.5
background score, which is exactly "no class above 0.5 → background".
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from .errors import CancelledError, OrbitSegError
from .preprocess import grid_offsets

log = logging.getLogger(__name__)

HEADS = ("sigmoid", "softmax", "sigmoid_nobg")


@dataclass(frozen=True)
class DeviceChoice:
    """The device a run uses and a sentence for the user about how it was chosen."""

    device: torch.device
    note: str

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def name(self) -> str:
        """The device as a value a script can test: ``cpu`` or ``cuda:<index>``."""
        return f"cuda:{self.device.index or 0}" if self.is_cuda else "cpu"


def select_device(choice: str = "auto") -> DeviceChoice:
    """Resolve ``auto|cuda|gpu|cpu`` to a torch device.

    ``cuda`` without a usable GPU is an error (never a silent fallback); ``auto`` falls back to the
    CPU and its note says so (the caller shows the note once: the CLI on stderr, the panel in orange).
    """
    choice = (choice or "auto").lower()
    if choice == "gpu":
        choice = "cuda"
    if choice not in ("auto", "cuda", "cpu"):
        raise OrbitSegError(f"unknown device {choice!r}; use auto, cuda (gpu) or cpu")
    if choice == "cpu":
        return DeviceChoice(torch.device("cpu"), "CPU (as requested)")
    if torch.cuda.is_available():
        return DeviceChoice(torch.device("cuda"), f"GPU: {torch.cuda.get_device_name(0)} (CUDA, mixed precision)")
    built = f"torch {torch.__version__} built {'with CUDA ' + torch.version.cuda if torch.version.cuda else 'without CUDA'}"
    if choice == "cuda":
        raise OrbitSegError(f"a CUDA GPU was requested but none is usable ({built}); choose device auto or cpu")
    note = f"No CUDA GPU available ({built}): running on the CPU, which is slower"
    log.info(note)
    return DeviceChoice(torch.device("cpu"), note)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (default: the CPUs this process may use); returns the number."""
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, int(threads))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


@dataclass(frozen=True)
class InferenceOptions:
    """How to run a model.

    ``window``: SV-Net window depth in slices (``None``: the whole eye in one pass); ``overlap``: window
    overlap fraction along z; ``step``: window step in slices (overrides overlap; 1 = the paper's
    protocol); ``batch_size``: windows (SV-Net) or triplets (SEQ-UNET) per forward pass; ``blend``:
    MONAI blending of overlapping windows; ``grid_shifts``: test-time augmentation, the number of model
    grids (1, 2 or 4, see :data:`preprocess.GRID_SHIFTS`) whose scores the pipeline averages, each
    costing one more pass of the model.
    """

    window: int | None = None
    overlap: float = 0.5
    step: int | None = None
    batch_size: int = 4
    blend: str = "gaussian"
    grid_shifts: int = 1

    def __post_init__(self):
        grid_offsets(self.grid_shifts)  # an unsupported count is an error here, before any study is run
        if self.window is not None and self.window < 1:
            raise OrbitSegError(f"the window must be at least 1 slice, got {self.window}")
        if not 0.0 <= self.overlap < 1.0:
            raise OrbitSegError(f"the window overlap must be a fraction in [0, 1), got {self.overlap}")
        if self.step is not None and self.step < 1:
            raise OrbitSegError(f"the window step must be at least 1 slice, got {self.step}")
        if self.batch_size < 1:
            raise OrbitSegError(f"the batch size must be at least 1, got {self.batch_size}")


class Predictor:
    """A network in eval mode on a device, turning a windowed volume into class scores.

    ``architecture`` is ``"sv-net"`` (3D, input ``(B, 1, D, H, W)``) or ``"seq-unet"`` (input
    ``(B, 3, 1, H, W)``, output for the centre slice); ``head`` one of :data:`HEADS`.
    """

    def __init__(self, network: torch.nn.Module, architecture: str, head: str, device: DeviceChoice,
                 options: InferenceOptions = InferenceOptions()):
        if head not in HEADS:
            raise OrbitSegError(f"unknown model head {head!r}; expected one of {HEADS}")
        if architecture not in ("sv-net", "seq-unet"):
            raise OrbitSegError(f"unknown architecture {architecture!r}")
        if architecture == "sv-net" and options.window is not None and options.window % network.size_multiple:
            raise OrbitSegError(f"the window must be a multiple of {network.size_multiple} slices for this SV-Net "
                                f"(its poolings halve the depth), got {options.window}")
        self.network = network.to(device.device).eval()
        self.architecture = architecture
        self.head = head
        self.device = device
        self.options = options

    def _autocast(self):
        if self.device.is_cuda:
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C, ...)`` → scores ``(B, C', ...)`` with a background channel first."""
        logits = logits.float()
        if self.head == "softmax":
            return torch.softmax(logits, dim=1)
        scores = torch.sigmoid(logits)
        if self.head == "sigmoid_nobg":
            background = torch.full_like(scores[:, :1], 0.5)
            scores = torch.cat([background, scores], dim=1)
        return scores

    @torch.inference_mode()
    def predict(self, volume: np.ndarray, cancel: Callable[[], bool] | None = None) -> np.ndarray:
        """Scores ``[C, z, y, x]`` float32 for a windowed ``[z, y, x]`` float32 volume in 0..1."""
        if volume.ndim != 3:
            raise ValueError(f"expected a [z, y, x] volume, got shape {volume.shape}")
        if self.architecture == "sv-net":
            return self._predict_3d(volume, cancel)
        return self._predict_sequence(volume, cancel)

    def _predict_3d(self, volume: np.ndarray, cancel) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None].to(self.device.device)
        depth = min(self.options.window or volume.shape[0], volume.shape[0])
        overlap = self.options.overlap
        if self.options.step is not None:
            overlap = 1.0 - float(self.options.step) / depth
        overlap = min(max(overlap, 0.0), (depth - 1) / depth) if depth > 1 else 0.0

        def run(window: torch.Tensor) -> torch.Tensor:
            if cancel is not None and cancel():
                raise CancelledError("segmentation cancelled")
            with self._autocast():
                return self._activate(self.network(window))

        if depth == volume.shape[0]:  # the whole eye in one pass: no windows to place or blend
            return run(x)[0].float().cpu().numpy()
        from monai.inferers import sliding_window_inference  # imported here: MONAI adds ~1 s to start-up

        scores = sliding_window_inference(x, roi_size=(depth, -1, -1), sw_batch_size=self.options.batch_size,
                                          predictor=run, overlap=(overlap, 0.0, 0.0), mode=self.options.blend,
                                          sw_device=self.device.device, device=torch.device("cpu"))
        return scores[0].float().numpy()

    def _predict_sequence(self, volume: np.ndarray, cancel) -> np.ndarray:
        depth = volume.shape[0]
        x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)).to(self.device.device)
        batch = max(1, self.options.batch_size)
        out = None
        for start in range(0, depth, batch):
            if cancel is not None and cancel():
                raise CancelledError("segmentation cancelled")
            centres = torch.arange(start, min(start + batch, depth), device=x.device)
            index = torch.stack([centres - 1, centres, centres + 1], dim=1).clamp_(0, depth - 1)
            triplets = x[index][:, :, None]  # (B, 3, 1, H, W)
            with self._autocast():
                scores = self._activate(self.network(triplets)).cpu()
            if out is None:
                out = np.empty((scores.shape[1],) + volume.shape, dtype=np.float32)
            out[:, start:start + len(centres)] = scores.numpy().transpose(1, 0, 2, 3)
        return out
