"""A small phantom batch and a screenshot of its report (docs/images/batch_report.png).

    python benchmarks/batch_report_demo.py --model MODEL.pt --out /tmp/batch_demo \
        [--cases 8] [--seed 2024] [--screenshot docs/images/batch_report.png]

Writes ``--cases`` small phantom cases with their references and a ``group`` column (TAO or normal,
from each case's info.json), adds one study whose CT is missing (to show how failures are reported),
runs ``orbitseg batch`` on them, and renders ``report.html`` with headless Chromium
(``apt-get install chromium``) into the screenshot.

The docs' screenshot used a demonstration SV-Net trained for ten minutes on 16 other small phantom
cases (``orbitseg phantom --out ph16 --cases 16 --seed 11 --small``, then ``orbitseg train --studies
ph16/studies.csv --model sv-net --folds 1 --epochs 250 --spacing 1 1 2 --input-size 48 64 16
--lr 1e-3 --loss dice_ce --out train``); any model works.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from OrbitSegLib.cli import main as orbitseg
from OrbitSegLib.phantom import write_dataset


def write_study_list(folder: Path, cases: int, seed: int) -> Path:
    """Phantom cases plus a ``group`` column and one study with a missing CT."""
    source = write_dataset(folder, cases, seed, small=True)
    with open(source, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        info = json.loads((folder / row["id"] / "info.json").read_text(encoding="utf-8"))
        row["group"] = "TAO" if info["tao"] else "normal"
    rows.append({"id": "lost_scan", "image": "lost_scan/ct.nii.gz", "group": "TAO"})
    path = folder / "demo_studies.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def screenshot(report: Path, png: Path, width: int = 1280, scale: float = 0.75) -> None:
    """Render the whole of ``report`` with headless Chromium (no network, a throw-away profile) into ``png``:
    a tall window, cropped below the page's end, scaled by ``scale`` and reduced to 256 colours."""
    from PIL import Image
    import numpy as np

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("no Chromium found: apt-get install chromium")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        raw = Path(profile) / "page.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
                        "--hide-scrollbars", f"--window-size={width},12000", f"--screenshot={raw}",
                        report.resolve().as_uri()], check=True, capture_output=True, timeout=180)
        image = Image.open(raw).convert("RGB")
    pixels = np.asarray(image).astype(int)
    content = np.nonzero((np.abs(pixels - pixels[-1, -1]).sum(axis=-1) > 10).any(axis=1))[0]
    image = image.crop((0, 0, width, min(image.height, int(content.max()) + 24)))
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    image.quantize(256, method=Image.Quantize.FASTOCTREE).save(png, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model name or .pt file")
    parser.add_argument("--out", type=Path, required=True, help="work folder (cases in data/, batch in results/)")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--screenshot", type=Path, default=None, help="PNG to write (default: OUT/report.png)")
    parser.add_argument("--scale", type=float, default=0.75, help="scale of the screenshot (1 = 1280 pixels wide)")
    args = parser.parse_args()
    studies = args.out / "data" / "demo_studies.csv"
    if not studies.is_file():
        studies = write_study_list(args.out / "data", args.cases, args.seed)
    code = orbitseg(["batch", str(studies), "--out", str(args.out / "results"), "--model", args.model])
    print(f"orbitseg batch exited with {code} (1 is expected: the demo has one missing study)")
    screenshot(args.out / "results" / "report.html", args.screenshot or args.out / "report.png", scale=args.scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
