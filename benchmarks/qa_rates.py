"""How often QA raises a false alarm on clean cases, and how often it catches broken results (docs/qa.md).

    python benchmarks/qa_rates.py --out runs/qa --cases 50 --seed 2718 --broken 12

- **Clean**: the bundled SV-Net on ``--cases`` fresh phantom cases (normal and TAO; seed never used
  for training or for choosing a QA threshold): the share of eyes with an ``implausible`` flag (false
  alarms), and of structures flagged ``uncertain``, with their IoU against the reference
  (:func:`evaluation.qa_numbers`).
- **Broken**, each on the first ``--broken`` cases, the share of eyes caught (an ``implausible`` flag,
  or for a scan outside the trained range an ``input`` flag):
  - a model trained for one epoch (on 4 other phantom cases);
  - wrong slices: the VOI's end slice set to the middle of the orbit (the upper half missing);
  - thick slices: the CT resampled to 5 mm slices;
  - a tilted series: the CT written as a DICOM series of a gantry tilted 20° (read back, corrected
    and flagged ``input``); its volumes are compared with the straight scan's.

Writes ``OUT/qa_rates.json`` and prints a summary.
"""
from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from OrbitSegLib import cli
from OrbitSegLib.batch import BatchConfig, run_batch
from OrbitSegLib.evaluation import phantom_studies, qa_numbers
from OrbitSegLib.imageio import write_image
from OrbitSegLib.phantom.dicom import write_tilted_series
from OrbitSegLib.tables import read_csv


def batch_rows(studies: Path, out: Path, model: str = "sv-net") -> list[dict]:
    """Volume rows of a batch run (finished studies are reused)."""
    run_batch(studies, out, BatchConfig(model=model))
    return read_csv(out / "volumes.csv")


def eyes(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    grouped = defaultdict(list)
    for row in rows:
        grouped[(row["id"], row["side"])].append(row)
    return grouped


def caught(rows: list[dict], codes=("implausible",)) -> dict:
    """Share of eyes with any of ``codes``, and the reasons' tally."""
    grouped = eyes(rows)
    hits = [key for key, eye in grouped.items() if any(set(r["qa"].split(";")) & set(codes) for r in eye)]
    reasons = defaultdict(int)
    for row in rows:
        for part in (row.get("qa_reasons") or "").split("; "):
            if part.startswith("implausible: "):
                words = part[len("implausible: "):]
                key = ("found in pieces" if words.startswith("found in pieces") else
                       "reaches a VOI face" if words.startswith("reaches") else
                       "empty" if words.startswith(("empty", "nearly empty")) else
                       "too large" if "more than the" in words else
                       "asymmetric" if "differ" in words else "misplaced")
                reasons[f"{row['structure']}: {key}"] += 1
    return {"eyes": len(grouped), "flagged": len(hits), "rate": len(hits) / max(len(grouped), 1),
            "flagged_eyes": sorted(f"{i} {s}" for i, s in hits), "reasons": dict(sorted(reasons.items()))}


def write_list(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def one_epoch_model(out: Path) -> Path:
    model = out / "one-epoch" / "one-epoch.pt"
    if not model.is_file():
        cli.main(["train", "--phantom", "4", "--phantom-seed", "424242", "--model", "sv-net", "--epochs", "1",
                  "--folds", "1", "--samples-per-epoch", "8", "--spacing", "0.5", "0.5", "0.5",
                  "--input-size", "64", "64", "48", "--name", "one-epoch", "--out", str(model.parent),
                  "--progress", "none"])
    return model


def thick(study: dict, folder: Path, slice_mm: float = 5.0) -> dict:
    image = sitk.ReadImage(study["image"])
    spacing = (*image.GetSpacing()[:2], slice_mm)
    size = [image.GetSize()[0], image.GetSize()[1], int(image.GetSize()[2] * image.GetSpacing()[2] / slice_mm)]
    resampled = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing,
                              image.GetDirection(), -1024.0, image.GetPixelID())
    return {"id": study["id"], "image": str(write_image(resampled, folder / f"{study['id']}.nii.gz"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--seed", type=int, default=2718)
    parser.add_argument("--broken", type=int, default=12)
    args = parser.parse_args()
    out = Path(args.out)
    studies_path = phantom_studies(out / "data", args.cases, args.seed)
    studies = [{**r, "image": str((studies_path.parent / r["image"]).resolve()),
                "reference": str((studies_path.parent / r["reference"]).resolve())} for r in read_csv(studies_path)]
    results = {"cases": args.cases, "seed": args.seed, "broken_cases": args.broken}

    clean = batch_rows(studies_path, out / "clean")
    results["clean"] = {"implausible": caught(clean), "uncertain": qa_numbers(clean),
                        "input": caught(clean, ("input",))["rate"]}
    subset = studies[:args.broken]

    model = one_epoch_model(out)
    rows = batch_rows(write_list(out / "lists" / "subset.csv", [{"id": s["id"], "image": s["image"]} for s in subset]),
                      out / "one_epoch", str(model))
    results["one_epoch_model"] = caught(rows)

    wrong = [{"id": s["id"], "image": s["image"], "start_slice": s["start_slice"],
              "end_slice": (int(s["start_slice"]) + int(s["end_slice"])) // 2} for s in subset]
    results["wrong_slices"] = caught(batch_rows(write_list(out / "lists" / "wrong.csv", wrong), out / "wrong_slices"))

    thick_list = [thick(s, out / "thick_data") for s in subset]
    rows = batch_rows(write_list(out / "lists" / "thick.csv", thick_list), out / "thick_slices")
    results["thick_slices"] = {"implausible": caught(rows), "input": caught(rows, ("input",)),
                               "implausible_or_input": caught(rows, ("implausible", "input"))["rate"]}

    tilted = [{"id": s["id"], "image": str(write_tilted_series(sitk.ReadImage(s["image"]), out / "tilted_data" / s["id"],
                                                               20.0, 1.0))} for s in subset]
    rows = batch_rows(write_list(out / "lists" / "tilted.csv", tilted), out / "tilted")
    straight = {(r["id"], r["side"], r["structure"]): float(r["volume_cm3"]) for r in clean}
    differences = defaultdict(list)
    for row in rows:
        reference = straight[(row["id"], row["side"], row["structure"])]
        differences[row["structure"]].append(100.0 * (float(row["volume_cm3"]) - reference) / reference)
    results["tilted_series"] = {"input": caught(rows, ("input",)), "implausible": caught(rows),
                                "median_abs_volume_difference_pct_vs_straight": {
                                    k: float(np.median(np.abs(v))) for k, v in differences.items()}}
    (out / "qa_rates.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
