"""Learning curve of ``orbitseg adapt``: a site whose CT differs from the training world corrects 0, 1, 2, 4
and 8 studies; how well does the adapted model segment the site's other studies?

Rerun:  python benchmarks/adapt_curve.py --out benchmarks/results/adapt_curve --threads 2

The site is phantom cases of a setting the bundled models never trained on (default: the sweep anatomy
model, ``phantom.sweep``, in the default scanner world, seed 8080; the bundled models trained on the
classic anatomy only). Cases ``0..P-1`` are the pool of corrected studies (the first ``n`` are used for
``n`` corrected studies, so the sets are nested), cases ``P..P+T-1`` the site's other studies, which no
run sees. Each ``n`` runs ``training.adapt`` with its defaults (timed, wall clock) and
:func:`evaluation.evaluate` on the other studies; ``n = 0`` is the starting model itself.

Writes ``OUT/adapt_curve.json``, ``OUT/adapt_curve.md`` and the plot ``--plot`` (default
``docs/images/adapt_curve.png``): TAO mean IoU with its 95 % CI, and every structure's volume bias.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "OrbitSeg"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generalization import _f, per_structure  # noqa: E402
from OrbitSegLib import structures  # noqa: E402
from OrbitSegLib.batch import BatchConfig  # noqa: E402
from OrbitSegLib.evaluation import evaluate, phantom_studies  # noqa: E402
from OrbitSegLib.inference import InferenceOptions, configure_threads  # noqa: E402
from OrbitSegLib.phantom_settings import ANATOMY_MODELS, WORLDS  # noqa: E402
from OrbitSegLib.training.adapt import adapt  # noqa: E402


def _subset(studies: Path, rows: list[dict], path: Path) -> Path:
    """A study list of ``rows`` (paths made absolute against ``studies``' folder)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "image": str(studies.parent / row["image"]),
                             "reference": str(studies.parent / row["reference"])})
    return path


def plot(results: dict, path: Path) -> None:
    """TAO mean IoU (with CI) and each structure's volume bias against the number of corrected studies."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    points = results["points"]
    n = [p["studies"] for p in points]
    figure = Figure(figsize=(9, 3.6), dpi=110)
    left, right = figure.subplots(1, 2)
    iou = [p["headline"]["tao_mean_iou"] for p in points]
    low = [p["headline"]["tao_mean_iou_ci_low"] or v for p, v in zip(points, iou)]
    high = [p["headline"]["tao_mean_iou_ci_high"] or v for p, v in zip(points, iou)]
    left.fill_between(n, low, high, alpha=0.25, color="tab:blue", label="95 % CI")
    left.plot(n, iou, "o-", color="tab:blue", label="TAO mean IoU")
    left.axhline(0.85, ls="--", color="grey", lw=1, label="target 0.85")
    left.set(xlabel="corrected studies", ylabel="TAO mean IoU on the site's other studies", xticks=n,
             title=f"{results['init']} adapted to a shifted site")
    left.legend(loc="lower right", fontsize=8)
    for s in structures.STRUCTURES:
        bias = [next(r["volume_bias_pct"] for r in p["structures"] if r["structure"] == s.key) for p in points]
        right.plot(n, bias, "o-", label=s.display_name, ms=3)
    right.axhspan(-10, 10, color="grey", alpha=0.15, label="±10 %")
    right.set(xlabel="corrected studies", ylabel="volume bias (%)", xticks=n, title="volume bias per structure")
    right.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def markdown(results: dict) -> str:
    lines = [f"# Adapting {results['init']} to a shifted site", "",
             f"Site: {results['anatomy']} anatomy, {results['world']} world, seed {results['seed']}; "
             f"{results['pool']} corrected studies in the pool, {results['test']} other studies measured; "
             f"{results['machine']}.", "",
             "| corrected studies | TAO mean IoU (95% CI) | lowest structure IoU | volume bias % per structure "
             "(globe, SR, IR, MR, LR, ON) | adapt time (s) | held-back eye Dice before → after |",
             "|---|---|---|---|---|---|"]
    for p in results["points"]:
        h = p["headline"]
        bias = ", ".join(f"{r['volume_bias_pct']:+.1f}" for r in p["structures"])
        held = (f"{_f(p['before'])} → {_f(p['after'])}" if p.get("after") is not None else "–")
        lines.append(f"| {p['studies']} | {_f(h['tao_mean_iou'])} ({_f(h['tao_mean_iou_ci_low'])}–"
                     f"{_f(h['tao_mean_iou_ci_high'])}) | {_f(h['tao_min_iou'])} | {bias} | "
                     f"{_f(p.get('adapt_seconds'), 0)} | {held} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", default="sv-net", help="the model to adapt")
    parser.add_argument("--anatomy", default="sweep", choices=ANATOMY_MODELS)
    parser.add_argument("--world", default="default", choices=WORLDS)
    parser.add_argument("--seed", type=int, default=8080, help="the site's phantom seed")
    parser.add_argument("--pool", type=int, default=8, help="cases that may be corrected")
    parser.add_argument("--test", type=int, default=8, help="the site's other cases, measured")
    parser.add_argument("--studies", type=int, nargs="+", default=[0, 1, 2, 4, 8], help="corrected studies per point")
    parser.add_argument("--data", default=None, help="folder of the site's cases (default OUT/data)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--plot", default="docs/images/adapt_curve.png")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    studies = phantom_studies(args.data or out / "data", args.pool + args.test, args.seed, args.anatomy, args.world)
    with open(studies, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    test = _subset(studies, rows[args.pool:], out / "site_other_studies.csv")
    results = {"init": args.init, "anatomy": args.anatomy, "world": args.world, "seed": args.seed, "pool": args.pool,
               "test": args.test, "machine": f"{platform.machine()}, {platform.python_version()}, device {args.device}",
               "points": []}
    for n in sorted(args.studies):
        point = {"studies": n}
        model = args.init
        if n:
            corrected = _subset(studies, rows[:n], out / f"corrected_{n}.csv")
            started = time.perf_counter()
            result = adapt(corrected, out / "models" / f"site-{n}.pt", args.init, device=args.device)
            point.update(adapt_seconds=time.perf_counter() - started, before=result.before, after=result.after)
            model = str(result.model_path)
        folder = out / f"eval-{n}"
        config = BatchConfig(model=model, device=args.device, options=InferenceOptions(), threads=args.threads)
        point["headline"] = evaluate(test, folder, config, f"{args.init} adapted on {n} corrected studies")
        point["structures"] = per_structure(folder)
        results["points"].append(point)
        print(f"{n} studies: TAO mean IoU {_f(point['headline']['tao_mean_iou'])}", file=sys.stderr)
        (out / "adapt_curve.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    (out / "adapt_curve.md").write_text(markdown(results), encoding="utf-8")
    plot(results, Path(args.plot))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
