"""Generation time of each phantom setting (anatomy model x scanner world) and the sweep model's volumes,
for docs/phantom.md.

Rerun:  python benchmarks/phantom_settings.py [--cases 6] [--volume-cases 40]

Times ``--cases`` full cases of each setting (seed 2024, one process, one core) and reports the median and
largest seconds per case and the median grid size; then draws ``--volume-cases`` sweep-model heads
(small grids: the exact volumes come from the sub-voxel occupancy, so the grid hardly matters) and
tabulates their structure volumes, normal against TAO. Replaces the marked sections of docs/phantom.md
and writes benchmarks/results/phantom_settings.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "OrbitSeg"))

import numpy as np  # noqa: E402

from OrbitSegLib import structures  # noqa: E402
from OrbitSegLib.phantom import generate_case  # noqa: E402
from OrbitSegLib.phantom_settings import ANATOMY_MODELS, WORLDS  # noqa: E402

DOC = ROOT / "docs" / "phantom.md"
SEED = 2024


def timings(cases: int) -> list[dict]:
    rows = []
    for anatomy in ANATOMY_MODELS:
        for world in WORLDS:
            for small in (True, False):
                seconds, voxels, protocols = [], [], []
                for index in range(cases):
                    t0 = time.perf_counter()
                    case = generate_case(SEED, index, small=small, anatomy=anatomy, world=world)
                    seconds.append(time.perf_counter() - t0)
                    voxels.append(float(np.prod(case.info["size"])) / 1e6)
                    protocols.append(case.info["scanner"]["protocol"])
                rows.append({"anatomy": anatomy, "world": world, "small": small, "cases": cases,
                             "median_s": statistics.median(seconds), "max_s": max(seconds),
                             "median_mvoxels": statistics.median(voxels), "max_mvoxels": max(voxels),
                             "protocols": sorted(set(protocols))})
                print(rows[-1], file=sys.stderr)
    return rows


def sweep_volumes(cases: int) -> dict:
    out: dict[str, dict[str, list[float]]] = {"normal": {}, "tao": {}}
    for index in range(cases):
        info = generate_case(SEED, index, small=True, anatomy="sweep").info
        group = out["tao" if info["tao"] else "normal"]
        for side in structures.SIDES:
            for key, value in info["true_volumes_cm3"][side].items():
                group.setdefault(key, []).append(value)
            group.setdefault("hertel_mm", []).append(info["hertel_mm"][side])
            group.setdefault("orbit_depth_mm", []).append(info["geometry"][side]["orbit_depth_mm"])
            group.setdefault("axial_length_mm", []).append(info["geometry"][side]["axial_length_mm"])
    return out


def _fmt(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f} ({v.min():.2f}-{v.max():.2f})"


def timing_table(rows: list[dict]) -> str:
    lines = ["| anatomy | world | grid | cases | median s | max s | median M voxels | max M voxels |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['anatomy']} | {r['world']} | {'small=True' if r['small'] else 'full'} | {r['cases']} | "
                     f"{r['median_s']:.1f} | {r['max_s']:.1f} | {r['median_mvoxels']:.1f} | {r['max_mvoxels']:.1f} |")
    load = os.getloadavg()[0]
    lines += ["", f"Seed {SEED}, cases 0-{rows[0]['cases'] - 1} of each setting, one process on {platform.machine()}, "
                  f"{os.cpu_count()} cores, Python {platform.python_version()}, load average {load:.1f} at the end "
                  "(other jobs shared the machine: upper bounds)."]
    return "\n".join(lines)


def volume_table(vol: dict) -> str:
    keys = [s.key for s in structures.STRUCTURES] + ["axial_length_mm", "hertel_mm", "orbit_depth_mm"]
    names = {s.key: f"{s.display_name} (cm³)" for s in structures.STRUCTURES}
    names.update(axial_length_mm="globe axial length (mm)", hertel_mm="Hertel (mm)", orbit_depth_mm="orbit depth (mm)")
    lines = ["| quantity | normal: mean ± SD (min-max) | TAO: mean ± SD (min-max) |", "|---|---|---|"]
    for key in keys:
        lines.append(f"| {names[key]} | {_fmt(vol['normal'][key])} | {_fmt(vol['tao'][key])} |")
    n_normal, n_tao = len(vol["normal"]["globe"]) // 2, len(vol["tao"]["globe"]) // 2
    lines += ["", f"{n_normal + n_tao} sweep-model heads (seed {SEED}), {n_normal} normal and {n_tao} TAO, both eyes "
                  "each; exact volumes (sub-voxel occupancy)."]
    return "\n".join(lines)


def replace_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- phantom:{name}:start -->", f"<!-- phantom:{name}:end -->"
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--volume-cases", type=int, default=40)
    args = parser.parse_args()
    vol = sweep_volumes(args.volume_cases)
    rows = timings(args.cases)
    (ROOT / "benchmarks" / "results" / "phantom_settings.json").write_text(
        json.dumps({"timings": rows, "sweep_volumes": vol}, indent=1), encoding="utf-8")
    text = DOC.read_text(encoding="utf-8")
    text = replace_section(text, "setting-timings", timing_table(rows))
    text = replace_section(text, "sweep-volumes", volume_table(vol))
    DOC.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
