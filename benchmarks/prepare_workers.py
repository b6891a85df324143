"""Wall time of preparing training studies (``orbitseg train --workers``) with one and with N processes.

    python benchmarks/prepare_workers.py --cases 6 --workers 2 --repeats 2

Prepares ``--cases`` full-size phantom cases (seed 4242) on SV-Net's bundled grid (0.5 mm isotropic,
partial-volume targets) into a fresh cache each time, alternating one process and ``--workers``
processes, and prints the median seconds of each and their ratio. Spawning the workers (each imports
torch) is included, as ``orbitseg train`` pays it too.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from OrbitSegLib.training.data import GridSpec, prepare, studies_from_phantom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    spec = GridSpec((0.5, 0.5, 0.5), (48.0, 400.0), 16, None, True)
    studies = studies_from_phantom(args.cases, 4242)
    seconds: dict[int, list[float]] = {1: [], args.workers: []}
    for _ in range(args.repeats):
        for workers in seconds:
            with tempfile.TemporaryDirectory() as cache:
                start = time.perf_counter()
                prepare(studies, spec, cache, workers=workers)
                seconds[workers].append(time.perf_counter() - start)
    one, many = statistics.median(seconds[1]), statistics.median(seconds[args.workers])
    print(f"{args.cases} cases: 1 process {one:.1f} s ({one / args.cases:.1f} s per case), "
          f"{args.workers} processes {many:.1f} s; ratio {one / many:.2f}")


if __name__ == "__main__":
    main()
