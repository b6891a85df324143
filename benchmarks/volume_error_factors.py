"""What the model's volume errors follow, on a phantom evaluation (docs/accuracy.md).

    python benchmarks/volume_error_factors.py runs/eval-sv-net      # an `orbitseg evaluate --phantom` folder
    python benchmarks/volume_error_factors.py runs/eval-sv-net --json out.json
    python benchmarks/volume_error_factors.py runs/eval-x --studies data/studies.csv   # evaluated with --studies

Per structure, over the evaluation's eyes: the mean and SD of the volume difference (model − reference,
cm³) and its Pearson r with each case's scanner and tissue parameters (from the phantom's
``info.json`` beside each CT). For the optic nerve it also splits each eye's net difference (false
positives − misses, cm³) into the part within 3 mm of the labelled nerve's posterior end (where the
label stops at the optic canal's orbital opening) and the rest of the nerve, to tell an error in
where the nerve ends from an error in how thick it is.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from OrbitSegLib import structures
from OrbitSegLib.batch import read_studies
from OrbitSegLib.phantom.dataset import INFO_NAME, LABELS_NAME
from OrbitSegLib.tables import read_csv

POSTERIOR_MM = 3.0


def case_factors(info: dict) -> dict[str, float]:
    """A phantom case's scanner (mm, HU) and tissue (HU) parameters that could move a boundary."""
    scanner, hu = info["scanner"], info["hu"]
    return {"slice thickness": scanner["thickness"], "in-plane spacing": scanner["spacing"][0],
            "blur (PSF FWHM)": scanner["psf_fwhm"], "noise SD": scanner["noise_std"],
            "streaks": scanner["streaks"] * scanner["streak_amplitude"], "fat HU": hu["orbital_fat"],
            "rectus HU": hu["rectus"], "nerve HU": hu["nerve"], "CSF HU": hu["csf"], "dura HU": hu["dura"],
            "sclera HU": hu["sclera"], "vitreous HU": hu["vitreous"], "TAO": float(info["tao"])}


def case_folders(studies: Path) -> dict[str, Path]:
    """Study id -> the folder holding its phantom CT, ``info.json`` and reference ``labels.nii.gz``."""
    return {study.id: study.image.parent for study in read_studies(studies)}


def factor_correlations(evaluation: Path, folders: dict[str, Path]) -> list[dict]:
    """Per structure: eyes, mean and SD of the volume difference, and its r with every case factor."""
    factors = {i: case_factors(json.loads((f / INFO_NAME).read_text(encoding="utf-8"))) for i, f in folders.items()}
    rows = [r for r in read_csv(evaluation / "results" / "volumes.csv") if r.get("difference_cm3")]
    out = []
    for structure in structures.STRUCTURES:
        mine = [r for r in rows if r["structure"] == structure.key]
        difference = np.array([float(r["difference_cm3"]) for r in mine])
        r_by_factor = {}
        for name in next(iter(factors.values())):
            x = np.array([factors[r["id"]][name] for r in mine])
            if x.std() > 0:
                r_by_factor[name] = float(np.corrcoef(x, difference)[0, 1])
        out.append({"structure": structure.key, "eyes": len(mine), "mean_cm3": float(difference.mean()),
                    "sd_cm3": float(difference.std(ddof=1)), "r": r_by_factor})
    return out


def optic_nerve_ends(evaluation: Path, folders: dict[str, Path]) -> list[dict]:
    """Per eye: the optic nerve's net difference (cm³) within ``POSTERIOR_MM`` of its labelled posterior
    end and along the rest of it. The posterior end is the reference nerve's farthest extent along the
    axis from the globe's centroid to the reference nerve voxel farthest from it."""
    out = []
    for study_id, folder in folders.items():
        result = evaluation / "results" / study_id / "labels.nii.gz"
        if not result.is_file():
            continue
        reference = sitk.ReadImage(str(folder / LABELS_NAME))
        ref, seg = sitk.GetArrayFromImage(reference), sitk.GetArrayFromImage(sitk.ReadImage(str(result)))
        spacing = np.array(reference.GetSpacing())[::-1]  # [z, y, x] mm
        voxel_cm3 = float(np.prod(spacing)) / 1000.0
        for side in structures.SIDES:
            truth = ref == structures.label_value(side, "optic_nerve")
            globe = ref == structures.label_value(side, "globe")
            if not truth.any() or not globe.any():
                continue
            model = seg == structures.label_value(side, "optic_nerve")
            centre = np.argwhere(globe).mean(axis=0) * spacing
            points = np.argwhere(truth) * spacing - centre
            axis = points[np.argmax(np.linalg.norm(points, axis=1))]
            axis /= np.linalg.norm(axis)
            end = float((points @ axis).max())

            def near_end(mask):
                return (np.argwhere(mask) * spacing - centre) @ axis > end - POSTERIOR_MM

            false_pos, missed = near_end(model & ~truth), near_end(truth & ~model)
            posterior = (false_pos.sum() - missed.sum()) * voxel_cm3
            rest = ((~false_pos).sum() - (~missed).sum()) * voxel_cm3
            out.append({"id": study_id, "side": side, "posterior_cm3": float(posterior), "rest_cm3": float(rest)})
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evaluation", type=Path, help="an `orbitseg evaluate --phantom` output folder")
    parser.add_argument("--studies", type=Path, help="the phantom study list it evaluated (default: EVALUATION/data/studies.csv)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    folders = case_folders(args.studies or args.evaluation / "data" / "studies.csv")
    table = factor_correlations(args.evaluation, folders)
    print("| structure | eyes | volume difference, mean ± SD cm³ | strongest Pearson r with a case factor |")
    print("|---|---|---|---|")
    for t in table:
        top = sorted(t["r"].items(), key=lambda kv: -abs(kv[1]))[:3]
        print(f"| {t['structure'].replace('_', ' ')} | {t['eyes']} | {t['mean_cm3']:+.3f} ± {t['sd_cm3']:.3f} | "
              + ", ".join(f"{name} {r:+.2f}" for name, r in top) + " |")
    ends = optic_nerve_ends(args.evaluation, folders)
    posterior = np.array([e["posterior_cm3"] for e in ends])
    rest = np.array([e["rest_cm3"] for e in ends])
    print(f"\noptic nerve, {len(ends)} eyes, net difference (cm³): within {POSTERIOR_MM:g} mm of its posterior end "
          f"{posterior.mean():+.4f} ± {posterior.std(ddof=1):.4f}; the rest {rest.mean():+.4f} ± {rest.std(ddof=1):.4f}; "
          f"r with the eye's whole difference: {np.corrcoef(posterior, posterior + rest)[0, 1]:.2f} and "
          f"{np.corrcoef(rest, posterior + rest)[0, 1]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"factors": table, "optic_nerve_ends": ends}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
