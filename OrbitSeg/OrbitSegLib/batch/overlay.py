"""Overlay snapshots: axial and coronal slices through each orbit with the segmentation drawn on top.

Each eye's VOI box is resampled onto an axis-aligned LPS grid of :data:`DISPLAY_SPACING` mm (any
scanner orientation looks the same) and shown in the radiological convention: the patient's right
on the viewer's left, anterior at the top of axial slices, superior at the top of coronal slices.
The axial slice is the one holding most of the globe, horizontal recti and optic nerve; the coronal
slice the one holding most of the four rectus muscles and the nerve (behind the globe, where TAO
enlarges the bellies). Colours come from :mod:`structures`.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import structures
from ..imageio import atomic_path
from ..preprocess import image_to_grid, labels_to_grid, model_grid
from ..voi import VOI, crop

DISPLAY_SPACING = 0.5
"""mm, isotropic display grid."""
DISPLAY_WINDOW = (40.0, 400.0)
"""Window level and width in HU: fat dark, muscle and globe grey, bone white."""

_AXIAL_KEYS = ("globe", "medial_rectus", "lateral_rectus", "optic_nerve")
_CORONAL_KEYS = ("superior_rectus", "inferior_rectus", "medial_rectus", "lateral_rectus", "optic_nerve")


def eye_views(image: sitk.Image, labelmap: sitk.Image, voi: VOI, side: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Axial and coronal slices of one eye: ``{"axial": (ct, labels), "coronal": (ct, labels)}``.

    ``ct`` is float32 windowed to 0..1, ``labels`` uint8 OrbitSeg label values, both ``[row, column]``
    ready to display (rows anterior→posterior for axial, superior→inferior for coronal; columns patient
    right→left).
    """
    lo, hi = voi.eye_box(side)
    region = crop(image, lo, hi)
    grid = model_grid(region, "right", (DISPLAY_SPACING,) * 3)  # "right": LPS-aligned, not mirrored
    ct = image_to_grid(region, grid, *DISPLAY_WINDOW)  # [z, y, x]
    labels = labels_to_grid(crop(labelmap, lo, hi), grid)
    values = {k: structures.label_value(side, k) for k in structures.STRUCTURE_KEYS}
    z = _busiest(labels, [values[k] for k in _AXIAL_KEYS], axis=0)
    y = _busiest(labels, [values[k] for k in _CORONAL_KEYS], axis=1)
    return {"axial": (ct[z], labels[z]), "coronal": (ct[::-1, y], labels[::-1, y])}


def _busiest(labels: np.ndarray, values: list[int], axis: int) -> int:
    """Index along ``axis`` with the most voxels of ``values`` (else of any label, else the middle)."""
    others = tuple(a for a in range(3) if a != axis)
    for mask in (np.isin(labels, values), labels > 0):
        counts = mask.sum(axis=others)
        if counts.max() > 0:
            return int(np.argmax(counts))
    return labels.shape[axis] // 2


def _label_colours() -> np.ndarray:
    """RGBA lookup table ``[13, 4]`` (float32) indexed by label value; 0 is transparent."""
    table = np.zeros((len(structures.label_table()) + 1, 4), dtype=np.float32)
    for value, _, key in structures.label_table():
        table[value, :3] = structures.structure(key).color
        table[value, 3] = 0.35
    return table


def render_overlay(image: sitk.Image, labelmap: sitk.Image, voi: VOI, sides: tuple[str, ...],
                   title: str = "") -> bytes:
    """PNG bytes: one column per eye (right first), rows axial and coronal, with a colour legend."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colours = _label_colours()
    views = {side: eye_views(image, labelmap, voi, side) for side in sides}
    figure = Figure(figsize=(2.4 * len(sides) + 0.2, 5.6), dpi=90, facecolor="black")
    axes = figure.subplots(2, len(sides), squeeze=False)
    for column, side in enumerate(sides):
        for row, plane in enumerate(("axial", "coronal")):
            ax = axes[row, column]
            ct, labels = views[side][plane]
            ax.imshow(ct, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
            ax.imshow(colours[labels], interpolation="nearest")
            for value in np.unique(labels[labels > 0]):
                colour = colours[value, :3]
                ax.contour(labels == value, levels=[0.5], colors=[tuple(colour)], linewidths=0.9)
            ax.set_title(f"{side.capitalize()} ({structures.SIDE_ABBREVIATION[side]}) {plane}",
                         color="white", fontsize=9, pad=3)
            ax.set_axis_off()
    handles = [Patch(facecolor=s.color, edgecolor="none", label=s.abbreviation) for s in structures.STRUCTURES]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8,
                  labelcolor="white", handlelength=1.0, columnspacing=0.8, handletextpad=0.3)
    if title:
        figure.suptitle(title, color="white", fontsize=10, y=0.985)
    figure.subplots_adjust(left=0.02, right=0.98, top=0.92 if title else 0.96, bottom=0.06, wspace=0.05, hspace=0.1)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="black")
    return buffer.getvalue()


def write_overlay(image: sitk.Image, labelmap: sitk.Image, voi: VOI, sides: tuple[str, ...],
                  path: str | os.PathLike, title: str = "") -> Path:
    """Write :func:`render_overlay`'s PNG atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(render_overlay(image, labelmap, voi, sides, title))
    return Path(path)
