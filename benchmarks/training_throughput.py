"""Training throughput (patches per second) of the training loop, against an older loop in the same run.

    python benchmarks/training_throughput.py --out benchmarks/results/training_throughput_cpu.json
    python benchmarks/training_throughput.py --device cuda --configs old-b4,new-b4,new-b16 --patches 256

Trains SV-Net as the bundled model is trained (0.5 mm isotropic grid, 80 × 80 × 48 patches, partial-volume
targets, augmentation on, Dice + cross-entropy) on ``--studies`` full-size phantom cases (seed 100),
one fold without validation, for ``--epochs`` epochs of ``--patches`` patches, and reads each epoch's
seconds from ``training_log.csv`` (the steps and the checkpoints of the epoch). The first epoch of
every run is a warm-up and is left out; the result is the median patches/s over the other epochs of
all ``--repeats`` runs.

Each configuration runs in a fresh process; the configurations are interleaved (A B A B ...), so a
busy machine slows them alike. A configuration is ``old`` or ``new``, optionally ``-float32`` (new
loop only: no mixed precision) and ``-b<N>`` (batch size, default 4):

- ``old``: the training package of ``--baseline``, a folder holding ``OrbitSeg/OrbitSegLib`` or a
  git commit to extract it from (default: the last commit of the loop that cut and augmented every
  patch on the CPU);
- ``new``: the package this script sits next to.

The prepared eyes are cached once (``--cache``) before the runs, so no run prepares data. The JSON
lists every epoch's seconds and training loss: with the same seed, ``old`` and ``new`` on a CPU draw
the same patches and augmentations and should give the same losses up to rounding.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "b6697f4"
"""The last commit whose training loop cut and augmented every patch on the CPU (NumPy arrays)."""
SPACING, INPUT_SIZE, PHANTOM_SEED = (0.5, 0.5, 0.5), (80, 80, 48), 100
CONFIG = re.compile(r"^(old|new)(-float32)?(?:-b(\d+))?$")


def child(args) -> None:
    """One training run in this process (PYTHONPATH chooses the package); prints its log rows as JSON."""
    from OrbitSegLib.inference import configure_threads
    from OrbitSegLib.training import TrainConfig, studies_from_phantom, train

    configure_threads(args.threads)
    spec = json.loads(args.child)
    extra = {"precision": "float32"} if spec["float32"] else {}
    config = TrainConfig(out_dir=spec["out"], architecture="sv-net", preset=args.preset, spacing=SPACING,
                         input_size=INPUT_SIZE, folds=1, epochs=args.epochs, batch_size=spec["batch"], lr=2e-4,
                         loss="dice_ce", samples_per_epoch=args.patches, soft_targets=True, seed=0,
                         device=args.device, resume=False, cache_dir=args.cache, **extra)
    train(config, studies_from_phantom(args.studies, PHANTOM_SEED))
    with open(Path(spec["out"]) / "training_log.csv", encoding="utf-8") as handle:
        rows = [{"seconds": float(r["seconds"]), "train_loss": float(r["train_loss"])} for r in csv.DictReader(handle)]
    print("ROWS " + json.dumps(rows))


def baseline_package(baseline: str, folder: Path) -> Path:
    """The folder to put on PYTHONPATH for ``old``: ``baseline``'s own ``OrbitSeg`` or one extracted from git."""
    if (Path(baseline) / "OrbitSeg" / "OrbitSegLib").is_dir():
        return Path(baseline).resolve() / "OrbitSeg"
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", baseline, "OrbitSeg"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder / "OrbitSeg"


def prepare_cache(args) -> None:
    """Prepare the studies into ``args.cache`` as the runs will read them (same grid, data seed 0)."""
    from OrbitSegLib import models
    from OrbitSegLib.training.data import GridSpec, prepare, studies_from_phantom

    multiple = models.create("sv-net", args.preset).size_multiple
    spec = GridSpec(SPACING, (48.0, 400.0), multiple, None, True)
    prepare(studies_from_phantom(args.studies, PHANTOM_SEED), spec, args.cache, seed=0, workers=args.workers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--configs", default="old,new", help="comma-separated, e.g. old,new,new-b16")
    parser.add_argument("--baseline", default=BASELINE, help="folder with OrbitSeg/OrbitSegLib, or a git commit")
    parser.add_argument("--studies", type=int, default=4, help="full-size phantom cases (two eyes each)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is a warm-up")
    parser.add_argument("--patches", type=int, default=16, help="patches per epoch")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration, interleaved")
    parser.add_argument("--preset", default="default", choices=["default", "paper"], help="SV-Net size")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    parser.add_argument("--workers", type=int, default=1, help="processes preparing the studies")
    parser.add_argument("--cache", default=None, help="prepared-eye cache (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="JSON result file")
    parser.add_argument("--extract-baseline", default=None, metavar="DIR",
                        help="only extract --baseline's OrbitSeg into DIR (for a machine without the git history)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.extract_baseline:
        Path(args.extract_baseline).mkdir(parents=True, exist_ok=True)
        baseline_package(args.baseline, Path(args.extract_baseline))
        return 0
    if args.child:
        child(args)
        return 0
    sys.path.insert(0, str(ROOT / "OrbitSeg"))  # this process prepares the cache with the new package
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for name in configs:
        match = CONFIG.match(name)
        if not match or (match[1] == "old" and match[2]):
            parser.error(f"unknown configuration {name!r}")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        args.cache = args.cache or str(scratch / "cache")
        prepare_cache(args)
        packages = {"new": ROOT / "OrbitSeg"}
        if any(c.startswith("old") for c in configs):
            packages["old"] = baseline_package(args.baseline, scratch)
        runs: dict[str, list[list[dict]]] = {c: [] for c in configs}
        for repeat in range(args.repeats):
            for name in configs:
                kind, float32, batch = CONFIG.match(name).groups()
                spec = {"out": str(scratch / f"{name}-{repeat}"), "float32": bool(float32), "batch": int(batch or 4)}
                command = [sys.executable, __file__, "--child", json.dumps(spec)] + [
                    a for key in ("device", "studies", "epochs", "patches", "preset", "cache")
                    for a in (f"--{key}", str(getattr(args, key)))] + (
                    ["--threads", str(args.threads)] if args.threads else [])
                path = os.pathsep.join(filter(None, (str(packages[kind]), os.environ.get("PYTHONPATH"))))
                env = {**os.environ, "PYTHONPATH": path}  # the package first: its OrbitSegLib is imported
                done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", env=env)
                lines = [l for l in done.stdout.splitlines() if l.startswith("ROWS ")]
                if done.returncode or not lines:
                    print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
                    return 1
                runs[name].append(json.loads(lines[-1][5:]))
                rates = [args.patches / r["seconds"] for r in runs[name][-1][1:]]
                print(f"{name} run {repeat + 1}: " + ", ".join(f"{r:.2f}" for r in rates) + " patches/s", flush=True)
    results = {}
    for name, rows in runs.items():
        rates = [args.patches / r["seconds"] for run in rows for r in run[1:]]
        results[name] = {"median_patches_per_s": statistics.median(rates), "epochs_timed": len(rates),
                         "runs": rows}
    reference = results[configs[0]]["median_patches_per_s"]
    for name, result in results.items():
        result["ratio_to_" + configs[0]] = result["median_patches_per_s"] / reference
        print(f"{name:>16}: {result['median_patches_per_s']:.2f} patches/s ({result['ratio_to_' + configs[0]]:.2f}×)")
    import torch

    report = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "torch": torch.__version__, "cpus": os.cpu_count(),
                          "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
              "device": args.device, "baseline": args.baseline, "studies": args.studies, "epochs": args.epochs,
              "patches_per_epoch": args.patches, "repeats": args.repeats, "preset": args.preset,
              "spacing": SPACING, "input_size_xyz": INPUT_SIZE, "threads": args.threads, "results": results}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
