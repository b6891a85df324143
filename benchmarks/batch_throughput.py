"""Batch throughput: studies per minute with 1 worker process against N worker processes.

    python benchmarks/batch_throughput.py --out /tmp/batch_bench [--cases 8] [--workers 1 2] [--model MODEL.pt] [--full]

Writes ``--cases`` small phantom cases (seed 99; with ``--full`` full-size ones at their drawn scanner
protocols) once, then runs ``orbitseg batch --force`` over them
for each worker count (threads split as the batch does: cores // workers each) and prints a Markdown
table of wall time and studies per minute, including worker start-up (model load) and the report.
Without ``--model`` it uses OrbitSeg's default-size SV-Net with random weights on a 0.5 × 0.5 × 1 mm
model grid, which costs what a trained default model costs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from OrbitSegLib import models
from OrbitSegLib.batch import BatchConfig, run_batch
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
    print("| workers | threads each | wall time (s) | studies / minute |")
    print("|---|---|---|---|")
    for workers in args.workers:
        config = BatchConfig(model=model, device="cpu", workers=workers, force=True)
        start = time.perf_counter()
        summary = run_batch(studies, args.out / f"results-{kind}-{workers}", config)
        seconds = time.perf_counter() - start
        assert summary.counts.done == args.cases, summary.failed
        threads = max(1, available_cores() // workers)
        print(f"| {workers} | {threads} | {seconds:.1f} | {60 * args.cases / seconds:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
