"""Superior rectus accuracy against the levator's thickness, on a phantom evaluation (docs/accuracy.md).

    python benchmarks/superior_rectus_levator.py runs/eval-sv-net            # an `orbitseg evaluate --phantom` folder
    python benchmarks/superior_rectus_levator.py runs/eval-sv-net --json out.json

The levator palpebrae superioris lies on the superior rectus with muscle density and no fat plane,
so where the two meet the image does not show the boundary. This reads the evaluation's per-eye
rows (``results/volumes.csv``), recomputes each phantom eye's anatomy from its seed and index (ids
``phantom_SEED_INDEX``), and reports the superior rectus's IoU and volume error by the ratio of the
levator's thickness to the rectus belly's thickness (both mm): the thicker the levator relative to
the rectus, the larger the share of the muscle complex whose label the image leaves open.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from OrbitSegLib.phantom.case import case_anatomy
from OrbitSegLib.tables import read_csv

RATIO_BINS = (0.0, 0.4, 0.5, 0.6, 0.8, 1.5)
PHANTOM_ID = re.compile(r"^phantom_(\d+)_(\d+)$")


def superior_rectus_rows(evaluation: Path) -> list[dict]:
    """The evaluation's superior rectus rows with the eye's levator / rectus belly thickness ratio."""
    rows = [r for r in read_csv(evaluation / "results" / "volumes.csv")
            if r["structure"] == "superior_rectus" and r.get("iou")]
    if not rows:
        raise SystemExit(f"no superior rectus rows with a reference in {evaluation / 'results' / 'volumes.csv'}")
    out = []
    for row in rows:
        match = PHANTOM_ID.match(row["id"])
        if match is None:
            raise SystemExit(f"{row['id']!r} is not a phantom case id (phantom_SEED_INDEX)")
        orbit = case_anatomy(int(match[1]), int(match[2])).orbits[row["side"]]
        levator = orbit.levator["thick"]
        belly = orbit.muscles["superior_rectus"].belly_thick
        out.append({"id": row["id"], "side": row["side"], "iou": float(row["iou"]),
                    "difference_cm3": float(row["difference_cm3"]), "levator_mm": levator,
                    "belly_mm": belly, "ratio": levator / belly})
    return out


def by_ratio(rows: list[dict]) -> list[dict]:
    """Eyes, mean and median IoU and mean volume difference (cm³) per bin of the thickness ratio."""
    ratio = np.array([r["ratio"] for r in rows])
    table = []
    for low, high in zip(RATIO_BINS[:-1], RATIO_BINS[1:]):
        inside = [r for r, x in zip(rows, ratio) if low < x <= high]
        if inside:
            iou = np.array([r["iou"] for r in inside])
            table.append({"ratio": f"{low:.1f}–{high:.1f}", "eyes": len(inside), "iou_mean": float(iou.mean()),
                          "iou_median": float(np.median(iou)),
                          "difference_cm3_mean": float(np.mean([r["difference_cm3"] for r in inside]))})
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evaluation", type=Path, help="an `orbitseg evaluate --phantom` output folder")
    parser.add_argument("--json", type=Path, help="also write the rows and the table here")
    args = parser.parse_args(argv)
    rows = superior_rectus_rows(args.evaluation)
    table = by_ratio(rows)
    iou = np.array([r["iou"] for r in rows])
    ratio = np.array([r["ratio"] for r in rows])
    r = float(np.corrcoef(ratio, iou)[0, 1])
    print(f"superior rectus, {len(rows)} eyes: IoU mean {iou.mean():.3f}, median {np.median(iou):.3f}; "
          f"Pearson r (levator/belly thickness ratio, IoU) = {r:.2f}")
    print("| levator / rectus belly thickness | eyes | IoU mean | IoU median | volume difference, mean cm³ |")
    print("|---|---|---|---|---|")
    for t in table:
        print(f"| {t['ratio']} | {t['eyes']} | {t['iou_mean']:.3f} | {t['iou_median']:.3f} | "
              f"{t['difference_cm3_mean']:+.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"pearson_r": r, "table": table, "eyes": rows}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
