"""Batch throughput: studies per minute with 1 worker process against N worker processes.

    python benchmarks/batch_throughput.py --out /tmp/batch_bench [--cases 8] [--workers 1 2] [--repeats 3]
                                          [--model MODEL.pt] [--full]

Writes ``--cases`` small phantom cases (seed 99; with ``--full`` full-size ones at their drawn scanner
protocols) once, then runs the command ``orbitseg batch --force`` over them as a new process
for each worker count (threads split as the batch does: cores // workers each), ``--repeats`` times
with the worker counts interleaved, and prints a Markdown table of the median wall time and studies
per minute, and each count's ratio to the first. The wall time is what a user waits for: process
start-up, imports, worker start-up and model loading, the studies, the tables and the report.
Without ``--model`` it uses OrbitSeg's default-size SV-Net with random weights on a 0.5 × 0.5 × 1 mm
model grid, which costs what a trained default model costs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from OrbitSegLib import models
from OrbitSegLib.batch.runner import available_cores
from OrbitSegLib.phantom import write_dataset


def default_size_model(path: Path) -> Path:
    torch.manual_seed(0)
    net = models.create("sv-net")
    models.save_checkpoint(path, net, models.make_card(net, window=(48, 400), spacing=(0.5, 0.5, 1.0),
                                                       input_size=(96, 128, 32), training_data="random init (benchmark)"))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="runs per worker count (median reported)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--full", action="store_true", help="full-size phantom cases instead of small ones")
    args = parser.parse_args()
    kind = "full-size" if args.full else "small"
    studies = args.out / f"data-{kind}" / "studies.csv"
    if not studies.is_file():
        write_dataset(studies.parent, args.cases, 99, small=not args.full)
    model = args.model or str(default_size_model(args.out / "sv-net-random.pt"))
    print(f"{args.cases} {kind} phantom studies, model {model}, {available_cores()} cores "
          f"({os.cpu_count()} in the machine)\n")
    walls = {workers: [] for workers in args.workers}
    for _ in range(args.repeats):
        for workers in args.workers:
            command = [sys.executable, "-m", "OrbitSegLib.cli", "batch", str(studies), "--out",
                       str(args.out / f"results-{kind}-{workers}"), "--model", model, "--device", "cpu",
                       "--workers", str(workers), "--force", "--progress", "none"]
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8")
            walls[workers].append(time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(f"orbitseg batch failed ({done.returncode}): {done.stderr[-2000:]}")
    print(f"| workers | threads each | median wall time (s) of {args.repeats} | studies / minute | throughput ratio |")
    print("|---|---|---|---|---|")
    first = statistics.median(walls[args.workers[0]])
    for workers, seconds in walls.items():
        median = statistics.median(seconds)
        threads = max(1, available_cores() // workers)
        print(f"| {workers} | {threads} | {median:.1f} | {60 * args.cases / median:.1f} | {first / median:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
