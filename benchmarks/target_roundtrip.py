"""How much a perfect model loses to its training targets: the round trip reference → model grid → CT grid.

    python benchmarks/target_roundtrip.py --cases 12 --seed 999 --spacing 0.5 [--json out.json]

A network trained with OrbitSeg learns the targets it is given on the model grid, and its scores are
resampled linearly back onto the CT grid and argmaxed (:func:`pipeline.segment_image`). This script
replaces the network by its targets themselves, for phantom cases generated from ``--seed``, and
reports the IoU per structure (both eyes, mean over eyes) against the CT-grid reference for:

- ``nearest``: the nearest reference label at every model-grid point, one-hot (``orbitseg train``'s
  default targets, :func:`preprocess.labels_to_grid`);
- ``partial-volume``: each structure's fraction around every model-grid point
  (``orbitseg train --soft-targets``, :func:`preprocess.label_fractions`).

It is the ceiling a model could reach if it reproduced its targets exactly, on the model grid of the
given isotropic spacing (mm). Eyes are cropped as in training (around the reference's globes, axially
covering every label, no jitter).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import SimpleITK as sitk

from OrbitSegLib import structures
from OrbitSegLib.metrics import overlap
from OrbitSegLib.phantom import generate_case
from OrbitSegLib.postprocess import scores_to_classes
from OrbitSegLib.preprocess import label_fractions, labels_to_grid, model_grid, scores_to_crop
from OrbitSegLib.training.data import training_voi
from OrbitSegLib.voi import crop

TARGETS = ("nearest", "partial-volume")


def eye_targets(labels, grid, side: str, kind: str) -> np.ndarray:
    """The targets of one eye on the model grid as scores ``[C, z, y, x]`` (channel 0: background)."""
    values = [structures.label_value(side, s.key) for s in structures.STRUCTURES]
    if kind == "nearest":
        nearest = labels_to_grid(labels, grid)
        fractions = np.stack([(nearest == v) for v in values]).astype(np.float32)
    else:
        fractions = label_fractions(labels, grid, values)
    background = np.clip(1.0 - fractions.sum(axis=0, keepdims=True), 0.0, 1.0)
    return np.concatenate([background, fractions])


def roundtrip_iou(seed: int, cases: int, spacing: float) -> dict[str, dict[str, float]]:
    """Mean IoU per target kind and structure over every eye of the cases."""
    scores: dict[str, dict[str, list[float]]] = {k: {s.key: [] for s in structures.STRUCTURES} for k in TARGETS}
    for index in range(cases):
        case = generate_case(seed, index)
        voi = training_voi(case.ct, case.labels)
        for side in voi.boxes:
            region = crop(case.labels, *voi.eye_box(side))
            reference = structures.side_classes(sitk.GetArrayFromImage(region), side)
            grid = model_grid(region, side, (spacing, spacing, spacing), 16)
            for kind in TARGETS:
                classes = scores_to_classes(scores_to_crop(eye_targets(case.labels, grid, side, kind), grid, region))
                for s in structures.STRUCTURES:
                    truth = reference == s.class_index
                    if truth.any():
                        scores[kind][s.key].append(overlap(classes == s.class_index, truth)["iou"])
        print(f"case {index + 1}/{cases}", flush=True)
    return {k: {s: float(np.mean(v)) for s, v in per.items() if v} for k, per in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--seed", type=int, default=999)
    parser.add_argument("--spacing", type=float, default=0.5, help="isotropic model grid spacing (mm)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    result = roundtrip_iou(args.seed, args.cases, args.spacing)
    names = " | ".join(s.key.replace("_", " ") for s in structures.STRUCTURES)
    print(f"| targets ({args.spacing:g} mm grid) | {names} |")
    for kind, per in result.items():
        print(f"| {kind} | " + " | ".join(f"{per[s.key]:.3f}" for s in structures.STRUCTURES) + " |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"seed": args.seed, "cases": args.cases, "spacing_mm": args.spacing, "iou": result}, handle,
                      indent=2)


if __name__ == "__main__":
    main()
