"""Leave-one-generator-out evaluation: one model on fresh cases of each phantom setting (anatomy model x
scanner world), so a model trained on one generator is also measured on the other.

Rerun:  python benchmarks/generalization.py --model sv-net --cases 8 --settings sweep:wide \
            --out benchmarks/results/generalization

For each ``ANATOMY:WORLD`` setting, :func:`evaluation.phantom_studies` generates the cases once (kept in
``OUT/<anatomy>-<world>/data``; the generation time is measured) and :func:`evaluation.evaluate` runs the
batch mode with the references and writes its usual report there (``accuracy.md``,
``overlap_summary.csv``, ``headline.json``). This script only gathers, per setting and structure (sides
pooled): IoU and Dice (mean, 95% CI from ``overlap_summary.csv``), volume bias % (mean with the same
study bootstrap, :func:`evaluation.study_bootstrap_ci`), MAE and Pearson R with its CI
(:func:`tables.agreement_rows`), and per setting the TAO mean Dice and the structures not found on an
eye (:func:`found`), into ``OUT/generalization.json`` and ``OUT/generalization.md``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "OrbitSeg"))

from OrbitSegLib import structures  # noqa: E402
from OrbitSegLib.batch import BatchConfig  # noqa: E402
from OrbitSegLib.evaluation import evaluate, phantom_studies, study_bootstrap_ci  # noqa: E402
from OrbitSegLib.inference import InferenceOptions, configure_threads  # noqa: E402
from OrbitSegLib.phantom_settings import ANATOMY_MODELS, WORLDS  # noqa: E402
from OrbitSegLib.tables import agreement_rows, read_csv  # noqa: E402


def _setting(text: str) -> tuple[str, str]:
    anatomy, _, world = text.partition(":")
    if anatomy not in ANATOMY_MODELS or world not in WORLDS:
        raise argparse.ArgumentTypeError(f"ANATOMY:WORLD with ANATOMY in {ANATOMY_MODELS} and WORLD in {WORLDS}")
    return anatomy, world


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def per_structure(out: Path) -> list[dict]:
    """Per-structure numbers (sides pooled) of one evaluated setting folder."""
    volumes = [r for r in read_csv(out / "results" / "volumes.csv") if r.get("reference_volume_cm3", "") != ""]
    overlap = {r["structure"]: r for r in read_csv(out / "overlap_summary.csv") if r["side"] == "both"}
    agreement = {a["structure"]: a for a in agreement_rows(volumes) if a["side"] == "both"}
    table = []
    for s in structures.STRUCTURES:
        if s.key not in overlap:
            continue
        o, a = overlap[s.key], agreement[s.key]
        rows = [r for r in volumes if r["structure"] == s.key]
        bias = [_number(r["relative_error_pct"]) for r in rows]
        bias = [b for b in bias if b is not None]
        bias_ci = study_bootstrap_ci(rows, "relative_error_pct")
        table.append({
            "structure": s.key, "n": int(o["n"]),
            "iou": _number(o["iou_mean"]), "iou_ci": [_number(o["iou_ci_low"]), _number(o["iou_ci_high"])],
            "dice": _number(o["dice_mean"]), "dice_ci": [_number(o.get("dice_ci_low")), _number(o.get("dice_ci_high"))],
            "volume_bias_pct": sum(bias) / len(bias) if bias else None, "volume_bias_pct_ci": list(bias_ci),
            "mae_cm3": a["mae"], "pearson_r": a["pearson_r"],
            "pearson_r_ci": [a["pearson_r_ci_low"], a["pearson_r_ci_high"]],
        })
    return table


MISSED_DICE = 0.1
"""A structure whose Dice with the reference is below this on an eye counts as not found there (empty,
or somewhere else)."""


def found(out: Path) -> dict:
    """Of one evaluated setting folder: the mean Dice over the five TAO structures (each structure's
    mean over the eyes, then their mean) and the structure rows (eye x structure) with Dice below
    :data:`MISSED_DICE`, as ``"study side structure"``."""
    rows = [r for r in read_csv(out / "results" / "volumes.csv") if _number(r.get("dice")) is not None]
    tao = [s.key for s in structures.STRUCTURES if s.key != "globe"]
    means = [sum(_number(r["dice"]) for r in rows if r["structure"] == k) / max(1, sum(r["structure"] == k for r in rows))
             for k in tao]
    missed = [f"{r['id']} {r['side']} {r['structure']}" for r in rows if _number(r["dice"]) < MISSED_DICE]
    return {"tao_mean_dice": sum(means) / len(means), "rows": len(rows), "missed": missed}


def _f(value, digits=3) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    lines = [f"# Leave-one-generator-out: {results['model']}", "",
             f"{results['cases']} cases per setting, phantom seed {results['seed']}; {results['machine']}.", ""]
    for setting in results["settings"]:
        lines += [f"## {setting['anatomy']} anatomy, {setting['world']} world", "",
                  f"TAO mean IoU {_f(setting['headline']['tao_mean_iou'])} (95% CI "
                  f"{_f(setting['headline']['tao_mean_iou_ci_low'])}–{_f(setting['headline']['tao_mean_iou_ci_high'])}), "
                  f"lowest structure {_f(setting['headline']['tao_min_iou'])}; generation "
                  f"{_f(setting['generation_s_per_case'], 1)} s/case, evaluation {_f(setting['evaluation_s_per_case'], 1)} "
                  f"s/case. TAO mean Dice (the five structures' means) {_f(setting['found']['tao_mean_dice'])}; "
                  f"not found (Dice < {MISSED_DICE:g}): {len(setting['found']['missed'])} of "
                  f"{setting['found']['rows']} structures" + "".join(f"; {m}" for m in setting['found']['missed'][:6]) +
                  (" …" if len(setting['found']['missed']) > 6 else "") + ".", "",
                  "| structure | n | IoU (95% CI) | Dice (95% CI) | volume bias % (95% CI) | MAE cm³ | Pearson R (95% CI) |",
                  "|---|---|---|---|---|---|---|"]
        for r in setting["structures"]:
            lines.append(f"| {structures.structure(r['structure']).display_name} | {r['n']} | {_f(r['iou'])} "
                         f"({_f(r['iou_ci'][0])}–{_f(r['iou_ci'][1])}) | {_f(r['dice'])} "
                         f"({_f(r['dice_ci'][0])}–{_f(r['dice_ci'][1])}) | {_f(r['volume_bias_pct'], 1)} "
                         f"({_f(r['volume_bias_pct_ci'][0], 1)}–{_f(r['volume_bias_pct_ci'][1], 1)}) | "
                         f"{_f(r['mae_cm3'])} | {_f(r['pearson_r'])} ({_f(r['pearson_r_ci'][0])}–{_f(r['pearson_r_ci'][1])}) |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sv-net", help="model name or .pt path")
    parser.add_argument("--cases", type=int, default=8, help="cases per setting")
    parser.add_argument("--seed", type=int, default=999, help="phantom seed (keep it apart from training seeds)")
    parser.add_argument("--settings", nargs="+", type=_setting, default=[("sweep", "wide"), ("classic", "default")],
                        metavar="ANATOMY:WORLD", help="phantom settings to evaluate on")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    out = Path(args.out)
    config = BatchConfig(model=args.model, device=args.device, options=InferenceOptions(), threads=args.threads)
    results = {"model": args.model, "cases": args.cases, "seed": args.seed, "settings": [],
               "machine": f"{platform.machine()}, {platform.python_version()}, device {args.device}"}
    for anatomy, world in args.settings:
        folder = out / f"{anatomy}-{world}"
        t0 = time.perf_counter()
        studies = phantom_studies(folder / "data", args.cases, args.seed, anatomy, world)
        t1 = time.perf_counter()
        headline = evaluate(studies, folder, config, f"{args.model} on {anatomy} anatomy, {world} world")
        t2 = time.perf_counter()
        results["settings"].append({"anatomy": anatomy, "world": world, "headline": headline,
                                    "generation_s_per_case": (t1 - t0) / args.cases,
                                    "evaluation_s_per_case": (t2 - t1) / args.cases,
                                    "structures": per_structure(folder), "found": found(folder)})
        print(f"{anatomy}/{world}: TAO mean IoU {_f(headline['tao_mean_iou'])}", file=sys.stderr)
    (out / "generalization.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    (out / "generalization.md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
