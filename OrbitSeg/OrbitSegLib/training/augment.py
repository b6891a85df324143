"""Training patches: random windows of eye volumes, MONAI augmentation, and network-ready batches.

A *patch* is a ``[z, y, x]`` window of one eye volume with a fixed size (a random window where the
eye is larger, padding where it is smaller) and its targets (class map, or partial-volume fractions
per structure); the networks are fully convolutional, so they train on windows smaller than the eye
and predict on the whole eye. SV-Net trains on patches of ``depth`` slices; SEQ-UNET on the slice
triplets of a short patch, each labelled by its centre slice.

Augmentation (MONAI, on the patch in 3D): translation, rotation, scaling, Gaussian noise,
intensity shift and scale, slight blur. No left–right flips: the model grid already mirrors the
left eye, and medial/lateral must stay distinguishable.
"""
from __future__ import annotations

import numpy as np
import torch
from monai import transforms as T

from .data import EyeVolume


def augmentation(seed: int, soft_targets: bool = False) -> T.Compose:
    """The MONAI pipeline over ``{"image": (1, z, y, x) float32, "label": (L, z, y, x)}``; the label
    (classes, L = 1, or fractions, L = structures) is resampled with nearest neighbour or, for
    fractions, linearly."""
    pipeline = T.Compose([
        T.RandAffined(keys=("image", "label"), prob=0.8, rotate_range=(0.17, 0.05, 0.05),
                      translate_range=(2, 6, 6), scale_range=(0.08, 0.08, 0.08),
                      mode=("bilinear", "bilinear" if soft_targets else "nearest"), padding_mode="border"),
        T.RandGaussianSmoothd(keys="image", prob=0.2, sigma_x=(0.3, 0.9), sigma_y=(0.3, 0.9), sigma_z=(0.0, 0.6)),
        T.RandScaleIntensityd(keys="image", factors=0.06, prob=0.5),
        T.RandShiftIntensityd(keys="image", offsets=0.03, prob=0.5),
        T.RandGaussianNoised(keys="image", prob=0.5, std=0.03),
    ])
    pipeline.set_random_state(seed=seed)
    return pipeline


def fit_inplane(array: np.ndarray, size_yx: tuple[int, int], fill: float) -> np.ndarray:
    """Centre-crop or pad the last two axes of ``array`` to ``size_yx`` (with ``fill``)."""
    out = array
    for axis, target in zip((-2, -1), size_yx):
        n = out.shape[axis]
        if n > target:
            start = (n - target) // 2
            out = np.take(out, np.arange(start, start + target), axis=axis)
        elif n < target:
            before = (target - n) // 2
            pad = [(0, 0)] * out.ndim
            pad[axis] = (before, target - n - before)
            out = np.pad(out, pad, constant_values=fill)
    return out


def sample_patch(eye: EyeVolume, depth: int, size_yx: tuple[int, int], rng: np.random.Generator):
    """A random ``depth`` × ``size_yx`` window of an eye: ``(image float32 [z, y, x], targets)``, the
    targets being classes uint8 ``[z, y, x]`` or, for an eye with fractions, fractions float32
    ``[S, z, y, x]`` in 0..1.

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
        pad = ((before, depth - n - before), (0, 0), (0, 0))
        image = np.pad(image, pad, mode="edge")
        targets = np.pad(targets, ((0, 0),) * (targets.ndim - 3) + pad)
    window = []
    for n_axis, size in zip(image.shape[1:], size_yx):
        start = int(rng.integers(0, n_axis - size + 1)) if n_axis > size else 0
        window.append(slice(start, start + size))
    image, targets = image[:, window[0], window[1]], targets[..., window[0], window[1]]
    targets = fit_inplane(targets, size_yx, 0)
    return (fit_inplane(image.astype(np.float32), size_yx, 0.0),
            targets.astype(np.uint8) if eye.fractions is None else targets.astype(np.float32) / np.float32(255))


def augmented_patch(eye: EyeVolume, depth: int, size_yx: tuple[int, int], rng: np.random.Generator,
                    pipeline: T.Compose | None):
    """:func:`sample_patch`, then ``pipeline`` (if any, made with ``soft_targets`` matching the eye):
    image float32 ``[z, y, x]`` and targets as :func:`sample_patch` gives them."""
    image, targets = sample_patch(eye, depth, size_yx, rng)
    if pipeline is None:
        return image, targets
    soft = targets.ndim == 4
    out = pipeline({"image": image[None], "label": targets if soft else targets[None].astype(np.float32)})
    image = np.asarray(out["image"][0], dtype=np.float32)
    if soft:
        return image, np.clip(np.asarray(out["label"], dtype=np.float32), 0.0, 1.0)
    return image, np.rint(np.asarray(out["label"][0])).astype(np.uint8)


def one_hot(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, *spatial)`` class indices → ``(B, num_classes, *spatial)`` float one-hot."""
    return torch.nn.functional.one_hot(classes.long(), num_classes).movedim(-1, 1).float()


def sv_net_batch(patches: list[tuple[np.ndarray, np.ndarray]]):
    """SV-Net batch: input ``(B, 1, z, y, x)``, targets ``(B, z, y, x)`` classes or ``(B, S, z, y, x)`` fractions."""
    images = torch.from_numpy(np.stack([p[0] for p in patches]))[:, None]
    targets = torch.from_numpy(np.stack([p[1] for p in patches]))
    return images, targets


def seq_unet_batch(patches: list[tuple[np.ndarray, np.ndarray]]):
    """SEQ-UNET batch from short patches: every interior slice ``k`` gives the triplet ``(k-1, k, k+1)``.

    Returns input ``(B, 3, 1, y, x)`` and the centre slices' targets: classes ``(B, y, x)`` or
    fractions ``(B, S, y, x)``.
    """
    images, targets = [], []
    for image, label in patches:
        for k in range(1, image.shape[0] - 1):
            images.append(image[k - 1:k + 2])
            targets.append(label[..., k, :, :])
    return torch.from_numpy(np.stack(images))[:, :, None], torch.from_numpy(np.stack(targets))
