"""Real-CT plausibility check: each model on the real head CT of ``../shared/realct`` (no labels), its
volumes against adult norms (:data:`qa.NORMAL_RANGES_CM3`, sources there) and its overlay.

Rerun:  python benchmarks/realct_check.py --ct ../shared/realct/stanford_cthead_ct.nii.gz \
            --models sv-net seq-unet --out OUT --threads 2

Runs batch mode (the one pipeline, automatic VOI) on a one-study list per model into ``OUT/<model>``,
copies each ``overlay.png`` to ``--images``/``realct_<model>.png`` and writes ``OUT/realct.md``: per
structure and side, each model's volume (cm³), whether it lies in the adult normal range, and its QA
flags. A plausibility check, not accuracy: nothing here says where the true boundaries are.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "OrbitSeg"))

from OrbitSegLib import structures  # noqa: E402
from OrbitSegLib.batch import BatchConfig, run_batch  # noqa: E402
from OrbitSegLib.inference import InferenceOptions, configure_threads  # noqa: E402
from OrbitSegLib.protocol import OVERLAY_NAME, VOLUMES_NAME  # noqa: E402
from OrbitSegLib.qa import NORMAL_RANGES_CM3  # noqa: E402
from OrbitSegLib.tables import read_csv  # noqa: E402

STUDY = "realct"


def segment(ct: Path, model: str, out: Path, threads: int | None) -> dict[tuple[str, str], dict]:
    """Volume rows of ``model`` on ``ct`` by ``(side, structure)``, from batch mode into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    studies = out / "studies.csv"
    studies.write_text(f"id,image\n{STUDY},{ct.resolve()}\n", encoding="utf-8")
    run_batch(studies, out, BatchConfig(model=model, device="cpu", options=InferenceOptions(), threads=threads))
    return {(r["side"], r["structure"]): r for r in read_csv(out / STUDY / VOLUMES_NAME)}


def markdown(ct: Path, results: dict[str, dict]) -> str:
    models = list(results)
    lines = [f"# Real-CT plausibility: {ct.name}", "",
             "Volumes (cm³) against adult normal ranges; ✓ inside, ✗ outside; QA flags in brackets.", "",
             "| structure | normal | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    inside = {m: 0 for m in models}
    for side in structures.SIDES:
        for s in structures.STRUCTURES:
            normal = NORMAL_RANGES_CM3[s.key]
            cells = []
            for m in models:
                row = results[m][(side, s.key)]
                volume = float(row["volume_cm3"])
                ok = normal.low <= volume <= normal.high
                inside[m] += ok
                cells.append(f"{volume:.2f} {'✓' if ok else '✗'} ({row['qa'] or 'no flag'})")
            lines.append(f"| {side} {s.display_name} | {normal.text()} | " + " | ".join(cells) + " |")
    lines += ["", "Inside the normal range: " + ", ".join(f"{m} {inside[m]} of 12" for m in models), "",
              "Sources of the normal ranges:", ""]
    lines += [f"- {s.display_name}: {NORMAL_RANGES_CM3[s.key].source}" for s in structures.STRUCTURES]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, default=Path("../shared/realct/stanford_cthead_ct.nii.gz"))
    parser.add_argument("--models", nargs="+", default=["sv-net", "seq-unet"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=Path, default=Path("docs/images"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    results = {}
    for model in args.models:
        folder = args.out / Path(model).stem
        results[Path(model).stem] = segment(args.ct, model, folder, args.threads)
        args.images.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / STUDY / OVERLAY_NAME, args.images / f"realct_{Path(model).stem}.png")
    text = markdown(args.ct, results)
    (args.out / "realct.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
