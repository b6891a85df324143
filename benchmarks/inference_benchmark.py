"""End-to-end speed, per-stage time and peak memory of OrbitSeg's models, against the papers' protocols.

Rerun:  python benchmarks/inference_benchmark.py --out benchmarks/results/inference.json

For each configuration a fresh child process loads the model once, segments every held-out phantom
case once as a warm-up and then ``--runs`` more times (read → VOI → resample → model → post-processing
→ write, both eyes, through :func:`pipeline.run_segmentation`), and reports the median seconds per
study and per stage, the peak resident memory (RSS) of the process and, on CUDA, the peak GPU memory.
Accuracy (IoU per structure against the phantom reference) comes from the same runs, so the fast
settings and the papers' protocols are compared on the same cases, and their output labelmaps are
compared voxel for voxel:

- ``sv-net``: the bundled SV-Net, whole eye in one pass;
- ``sv-net-step1``: the same weights with the paper's protocol, a 32-slice window moved one slice at a time;
- ``sv-net-shift2``: the same weights, whole eye, averaged over two model grids half a voxel apart
  (``--grid-shifts 2``, test-time augmentation);
- ``seq-unet``: the bundled SEQ-UNET with the default options (4 slice triplets per forward pass);
- ``seq-unet-single``: the same weights, one triplet at a time (the paper's code);
- ``--paper``: the papers' full-size networks (random weights: speed and memory only), each with the
  fast and the paper's protocol: SV-Net with 8.66M weights on a 0.35 × 0.35 × 0.5 mm grid (the
  paper's data), SEQ-UNET with 57M weights on 64×64 slices.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "sv-net": {"model": "sv-net", "options": {}},
    "sv-net-step1": {"model": "sv-net", "options": {"window": 32, "step": 1, "blend": "constant"}},
    "sv-net-shift2": {"model": "sv-net", "options": {"grid_shifts": 2}},
    "seq-unet": {"model": "seq-unet", "options": {}},
    "seq-unet-single": {"model": "seq-unet", "options": {"batch_size": 1}},
}
PAPER_CONFIGS = {
    "sv-net-paper": {"paper": "sv-net", "options": {}},
    "sv-net-paper-step1": {"paper": "sv-net", "options": CONFIGS["sv-net-step1"]["options"]},
    "seq-unet-paper": {"paper": "seq-unet", "options": {}},
    "seq-unet-paper-single": {"paper": "seq-unet", "options": {"batch_size": 1}},
}
PAIRS = (("sv-net", "sv-net-step1"), ("sv-net-shift2", "sv-net-step1"), ("sv-net", "sv-net-shift2"),
         ("seq-unet", "seq-unet-single"),
         ("sv-net-paper", "sv-net-paper-step1"), ("seq-unet-paper", "seq-unet-paper-single"))
"""(fast, baseline) pairs whose speed ratio and output difference are reported."""


def paper_model(architecture: str, folder: Path) -> Path:
    """A randomly initialised checkpoint of a paper-size network on the paper's input grid."""
    from OrbitSegLib import models

    net = models.create(architecture, "paper")
    if architecture == "sv-net":  # 256×256 in-plane crop at ~0.35 mm, 32-slice windows at 0.5 mm (the paper's data)
        card = models.make_card(net, window=(48, 400), spacing=(0.35, 0.35, 0.5), input_size=(256, 256, 32))
    else:  # 64×64 slices, native-like 1 mm slice spacing
        card = models.make_card(net, window=(48, 400), spacing=(0.5, 0.5, 1.0), input_size=(64, 64, 3),
                                fixed_inplane_size=True)
    path = folder / f"{architecture}-paper.pt"
    models.save_checkpoint(path, net, card)
    return path


def differing_voxels(first: Path, second: Path) -> int:
    """Voxels whose label differs between two configurations' outputs, summed over the studies."""
    import SimpleITK as sitk

    total, found = 0, 0
    for labels in sorted(first.glob("*/labels.nii.gz")):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(labels)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(second / labels.parent.name / labels.name)))
        total += int((a != b).sum())
        found += 1
    if not found:
        raise SystemExit(f"no outputs to compare in {first}")
    return total


def child(args) -> dict:
    """Run one configuration in this process; returns its measurements."""
    import numpy as np
    import torch

    from OrbitSegLib import structures
    from OrbitSegLib.inference import InferenceOptions, configure_threads
    from OrbitSegLib.model_store import load_model
    from OrbitSegLib.pipeline import run_segmentation
    from OrbitSegLib.tables import read_csv

    threads = configure_threads(args.threads)
    spec = json.loads(args.child)
    model_ref = spec["model"]
    options = InferenceOptions(**spec["options"])
    started = time.perf_counter()
    model = load_model(model_ref, args.device, options)
    load_seconds = time.perf_counter() - started
    studies = read_csv(args.studies)
    base = Path(args.studies).parent
    totals, stages, ious = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs + 1):
            for study in studies:
                out_dir = Path(args.keep) / study["id"] if run == 0 else Path(tmp) / study["id"]
                begin = time.perf_counter()
                result = run_segmentation(base / study["image"], out_dir, model,
                                          reference_path=base / study["reference"],
                                          start_slice=int(study["start_slice"]), end_slice=int(study["end_slice"]))
                elapsed = time.perf_counter() - begin
                if run == 0:
                    for row in result.rows:
                        ious.setdefault(row["structure"], []).append(row["iou"])
                    continue  # warm-up run: accuracy only
                totals.append(elapsed)
                for stage, seconds in result.timings.items():
                    stages.setdefault(stage, []).append(seconds)
    out = {
        "model": str(model.path), "options": spec["options"], "device": model.device.note, "threads": threads,
        "load_model_s": load_seconds, "studies": len(studies), "runs": args.runs,
        "median_study_s": statistics.median(totals),
        "median_stage_s": {k: statistics.median(v) for k, v in stages.items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "iou": {k: float(np.nanmean(v)) for k, v in ious.items()},
        "tao_mean_iou": float(np.nanmean([np.nanmean(ious[k]) for k in structures.TAO_KEYS])),
    }
    if torch.cuda.is_available() and model.device.is_cuda:
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=5, help="held-out phantom cases")
    parser.add_argument("--seed", type=int, default=999, help="phantom seed of the held-out cases")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per case after the warm-up")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), help=f"subset of {list(CONFIGS)}")
    parser.add_argument("--paper", action="store_true", help="also time the papers' full-size networks")
    parser.add_argument("--data", default="benchmarks/data/heldout", help="where the held-out cases are written")
    parser.add_argument("--out", default="benchmarks/results/inference.json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--studies", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--keep", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0

    from OrbitSegLib.evaluation import phantom_studies

    studies = phantom_studies(args.data, args.cases, args.seed)
    configs = {name: CONFIGS[name] for name in args.configs}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.paper:
            for name, spec in PAPER_CONFIGS.items():
                configs[name] = {"model": str(paper_model(spec["paper"], Path(tmp))), "options": spec["options"]}
        for name, spec in configs.items():
            command = [sys.executable, __file__, "--child", json.dumps(spec), "--studies", str(studies),
                       "--runs", str(args.runs), "--device", args.device, "--keep", str(Path(tmp) / name)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            print(f"== {name}", file=sys.stderr, flush=True)
            done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8")
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                raise SystemExit(f"{name} failed")
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            r = results[name]
            print(f"   {r['median_study_s']:.2f} s/study, peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"TAO mean IoU {r['tao_mean_iou']:.3f}, {r['device']}", file=sys.stderr, flush=True)
        ratios = {}
        for fast, slow in PAIRS:
            if fast in results and slow in results:
                ratios[f"{slow} / {fast}"] = {
                    "study": results[slow]["median_study_s"] / results[fast]["median_study_s"],
                    "model_stage": results[slow]["median_stage_s"]["model"] / results[fast]["median_stage_s"]["model"],
                    "tao_mean_iou_difference": results[fast]["tao_mean_iou"] - results[slow]["tao_mean_iou"],
                    "differing_voxels": differing_voxels(Path(tmp) / fast, Path(tmp) / slow),
                }
    report = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "python": platform.python_version(), "cpus": len(__import__("os").sched_getaffinity(0))},
              "cases": args.cases, "seed": args.seed, "runs": args.runs, "results": results, "ratios": ratios}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(ratios, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
