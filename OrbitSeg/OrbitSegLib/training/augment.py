"""Training patches: random windows of eye volumes, MONAI augmentation, and network-ready batches.

A *patch* is a ``[z, y, x]`` window of one eye volume with a fixed size (a random window where the
eye is larger, padding where it is smaller) and its targets (class map, or partial-volume fractions
per structure); the networks are fully convolutional, so they train on windows smaller than the eye
and predict on the whole eye. SV-Net trains on patches of ``depth`` slices; SEQ-UNET on the slice
triplets of a short patch, each labelled by its centre slice.

Patches are cut from :class:`TensorEye` volumes, the prepared eyes as torch tensors made once per run
(on a GPU when training there and they fit), and augmented where they lie: MONAI's transforms run on
torch tensors, on whatever device holds them; only their random parameters (and the Gaussian noise)
are drawn on the CPU, from the pipeline's NumPy random state.

Augmentation (MONAI, on the patch in 3D): translation, rotation, scaling, Gaussian noise,
intensity shift and scale, slight blur. No left–right flips: the model grid already mirrors the
left eye, and medial/lateral must stay distinguishable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai import transforms as T
from monai.utils import convert_to_tensor

from .data import EyeVolume


@dataclass(frozen=True)
class TensorEye:
    """One prepared eye as tensors on one device: ``image`` float16 ``[z, y, x]`` in 0..1, ``targets``
    classes uint8 ``[z, y, x]`` or fractions uint8 ``[S, z, y, x]`` in 1/255 (``soft``)."""

    image: torch.Tensor
    targets: torch.Tensor
    soft: bool

    @classmethod
    def of(cls, eye: EyeVolume, device: torch.device | str = "cpu") -> "TensorEye":
        """``eye``'s arrays on ``device`` (on the CPU, views of the arrays: no copy)."""
        return cls(torch.from_numpy(eye.image).to(device), torch.from_numpy(eye.targets).to(device),
                   eye.fractions is not None)

    @property
    def nbytes(self) -> int:
        return self.image.nbytes + self.targets.nbytes


def augmentation(seed: int, soft_targets: bool = False, patch_size: tuple[int, int, int] | None = None,
                 device: torch.device | str | None = None) -> T.Compose:
    """The MONAI pipeline over ``{"image": (1, z, y, x) float32, "label": (L, z, y, x)}`` tensors (or
    arrays); the label (classes, L = 1, or fractions, L = structures) is resampled with nearest
    neighbour or, for fractions, linearly. With ``patch_size`` ``(z, y, x)``, every patch must have that
    size and the affine's sampling grid is made once (on ``device``, where the patches lie) instead of
    for every patch on the CPU."""
    grid = {} if patch_size is None else {"spatial_size": tuple(patch_size), "cache_grid": True, "device": device}
    pipeline = T.Compose([
        T.RandAffined(keys=("image", "label"), prob=0.8, rotate_range=(0.17, 0.05, 0.05),
                      translate_range=(2, 6, 6), scale_range=(0.08, 0.08, 0.08),
                      mode=("bilinear", "bilinear" if soft_targets else "nearest"), padding_mode="border", **grid),
        T.RandGaussianSmoothd(keys="image", prob=0.2, sigma_x=(0.3, 0.9), sigma_y=(0.3, 0.9), sigma_z=(0.0, 0.6)),
        T.RandScaleIntensityd(keys="image", factors=0.06, prob=0.5),
        T.RandShiftIntensityd(keys="image", offsets=0.03, prob=0.5),
        T.RandGaussianNoised(keys="image", prob=0.5, std=0.03),
    ])
    pipeline.set_random_state(seed=seed)
    return pipeline


def fit_inplane(tensor: torch.Tensor, size_yx: tuple[int, int], fill: float) -> torch.Tensor:
    """Centre-crop or pad (with ``fill``) the last two axes of ``tensor`` to ``size_yx``."""
    pad = []
    for axis, target in zip((-2, -1), size_yx):
        n = tensor.shape[axis]
        if n > target:
            tensor = tensor.narrow(axis, (n - target) // 2, target)
        before = max(0, (target - n) // 2)
        pad = [before, max(0, target - n - before)] + pad  # torch.nn.functional.pad lists the last axis first
    return torch.nn.functional.pad(tensor, pad, value=fill) if any(pad) else tensor


def sample_patch(eye: TensorEye, depth: int, size_yx: tuple[int, int], rng: np.random.Generator):
    """A random ``depth`` × ``size_yx`` window of an eye, on the eye's device: ``(image float32 [z, y, x],
    targets)``, the targets being classes uint8 ``[z, y, x]`` or, for an eye with fractions, fractions
    float32 ``[S, z, y, x]`` in 0..1.

    The window's position is uniform along every axis where the eye is larger than the window; where it
    is smaller the eye is padded (edge values along z, zeros in-plane).
    """
    image, targets = eye.image, eye.targets
    n = image.shape[0]
    if n >= depth:
        start = int(rng.integers(0, n - depth + 1))
        image, targets = image[start:start + depth], targets[..., start:start + depth, :, :]
    else:
        before = (depth - n) // 2
        image = image[(torch.arange(depth, device=image.device) - before).clamp(0, n - 1)]
        targets = torch.nn.functional.pad(targets, (0, 0, 0, 0, before, depth - n - before))
    window = []
    for n_axis, size in zip(image.shape[1:], size_yx):
        start = int(rng.integers(0, n_axis - size + 1)) if n_axis > size else 0
        window.append(slice(start, start + size))
    image = fit_inplane(image[:, window[0], window[1]].float(), size_yx, 0.0)
    targets = fit_inplane(targets[..., window[0], window[1]], size_yx, 0)
    return image, (targets.float() / 255 if eye.soft else targets)


def augmented_patch(eye: TensorEye, depth: int, size_yx: tuple[int, int], rng: np.random.Generator,
                    pipeline: T.Compose | None, device: torch.device | str | None = None):
    """:func:`sample_patch`, moved to ``device`` (default: the eye's), then ``pipeline`` (if any, made
    with ``soft_targets`` matching the eye) there: image float32 ``[z, y, x]`` and targets as
    :func:`sample_patch` gives them."""
    image, targets = (to_device(t, device) for t in sample_patch(eye, depth, size_yx, rng))
    if pipeline is None:
        return image, targets
    out = pipeline({"image": image[None], "label": targets if eye.soft else targets[None].float()})
    image = convert_to_tensor(out["image"][0], dtype=torch.float32, track_meta=False)
    label = convert_to_tensor(out["label"], dtype=torch.float32, track_meta=False)
    return image, (label.clamp(0.0, 1.0) if eye.soft else torch.round(label[0]).to(torch.uint8))


def to_device(tensor: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """``tensor`` on ``device`` (``None``: where it is); from the CPU to a GPU through pinned memory,
    without waiting for the copy."""
    if device is None:
        return tensor
    if tensor.device.type == "cpu" and torch.device(device).type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def one_hot(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, *spatial)`` class indices → ``(B, num_classes, *spatial)`` float one-hot."""
    return torch.nn.functional.one_hot(classes.long(), num_classes).movedim(-1, 1).float()


def sv_net_batch(patches: list[tuple[torch.Tensor, torch.Tensor]]):
    """SV-Net batch: input ``(B, 1, z, y, x)``, targets ``(B, z, y, x)`` classes or ``(B, S, z, y, x)`` fractions."""
    return torch.stack([p[0] for p in patches])[:, None], torch.stack([p[1] for p in patches])


def seq_unet_batch(patches: list[tuple[torch.Tensor, torch.Tensor]]):
    """SEQ-UNET batch from short patches: every interior slice ``k`` gives the triplet ``(k-1, k, k+1)``.

    Returns input ``(B, 3, 1, y, x)`` and the centre slices' targets: classes ``(B, y, x)`` or
    fractions ``(B, S, y, x)``.
    """
    images, targets = [], []
    for image, label in patches:
        for k in range(1, image.shape[0] - 1):
            images.append(image[k - 1:k + 2])
            targets.append(label[..., k, :, :])
    return torch.stack(images)[:, :, None], torch.stack(targets)
