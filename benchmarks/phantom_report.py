"""Figures, volume statistics and timings of the synthetic orbital CT phantom (docs/phantom.md).

    python benchmarks/phantom_report.py                 # figures + 50-case table + timings
    python benchmarks/phantom_report.py --figures-only  # just the PNGs
    python benchmarks/phantom_report.py --cases 10      # a quicker table

Writes PNGs to docs/images/, the statistics to docs/images/phantom_stats.json and rewrites the
generated sections of docs/phantom.md (between ``<!-- phantom:NAME:start -->`` and ``:end -->``).
Single process: the timings are one-core figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from pathlib import Path

import matplotlib
import numpy as np
import SimpleITK as sitk

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from OrbitSegLib import structures  # noqa: E402
from OrbitSegLib.phantom import generate_case  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "phantom.md"
IMAGES = ROOT / "docs" / "images"
WINDOW = (-160.0, 240.0)  # level 40, width 400 (soft tissue)

# Literature ranges (reference sheet): normal volumes and the TAO enlargement of the recti.
LITERATURE = {
    "globe": "6.5-8.5",
    "superior_rectus": "~0.5 (normal)",
    "inferior_rectus": "~0.6 (normal)",
    "medial_rectus": "~0.7 (normal)",
    "lateral_rectus": "~0.65 (normal)",
    "optic_nerve": "0.5-0.7",
}


def _arrays(case):
    return sitk.GetArrayFromImage(case.ct).astype(np.float32), sitk.GetArrayFromImage(case.labels)


def _contours(ax, labels, extent):
    for value, _, key in structures.label_table():
        mask = labels == value
        if mask.any():
            ax.contour(mask.astype(np.float32), levels=[0.5], colors=[structures.structure(key).color],
                       linewidths=0.9, extent=extent, origin="upper")


def _views(case):
    """Axial through the right optic nerve, coronal behind the globes, sagittal through the right orbit."""
    ct, lab = _arrays(case)
    dx, dy, dz = case.ct.GetSpacing()
    on = structures.label_value("right", "optic_nerve")
    globe = structures.label_value("right", "globe")
    sr = structures.label_value("right", "superior_rectus")
    k_on, j_on, i_on = np.nonzero(lab == on)
    kg, jg, ig = np.nonzero(lab == globe)
    _, _, i_sr = np.nonzero(lab == sr)
    k = int(np.median(k_on))
    j = int(np.median(jg) + 13.0 / dy)
    i = int(np.median(i_sr))
    any_label = np.nonzero(lab)
    k0, k1 = any_label[0].min(), any_label[0].max()
    j0, j1 = any_label[1].min(), any_label[1].max()
    i0, i1 = any_label[2].min(), any_label[2].max()
    pad_i, pad_j, pad_k = int(14 / dx), int(14 / dy), int(10 / dz)
    ii = slice(max(i0 - pad_i, 0), min(i1 + pad_i, ct.shape[2]))
    jj = slice(max(j0 - pad_j, 0), min(j1 + pad_j, ct.shape[1]))
    kk = slice(max(k0 - pad_k, 0), min(k1 + pad_k, ct.shape[0]))
    views = []
    a, l = ct[k, jj, ii], lab[k, jj, ii]
    views.append(("axial", a, l, [0, a.shape[1] * dx, a.shape[0] * dy, 0]))
    a, l = ct[kk, j, ii][::-1], lab[kk, j, ii][::-1]
    views.append(("coronal", a, l, [0, a.shape[1] * dx, a.shape[0] * dz, 0]))
    a, l = ct[kk, jj, i][::-1], lab[kk, jj, i][::-1]
    views.append(("sagittal", a, l, [0, a.shape[1] * dy, a.shape[0] * dz, 0]))
    return views


def case_figure(case, title: str, path: Path) -> None:
    views = _views(case)
    widths = [v[3][1] for v in views]
    fig, axes = plt.subplots(2, 3, figsize=(17, 10.5), gridspec_kw={"width_ratios": widths})
    for col, (name, img, lab, extent) in enumerate(views):
        for row in range(2):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], extent=extent, interpolation="nearest")
            if row == 1:
                _contours(ax, lab, extent)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}{' + reference' if row else ''}", fontsize=10)
    info = case.info
    sp = info["spacing"]
    fig.suptitle(f"{title}: {sp[0]:.2f} x {sp[1]:.2f} x {sp[2]:.2f} mm (slice thickness "
                 f"{info['scanner']['thickness']:.2f} mm), noise {info['scanner']['noise_std']:.0f} HU, "
                 f"tao={info['tao']}", fontsize=11)
    handles = [matplotlib.lines.Line2D([], [], color=s.color, label=s.display_name) for s in structures.STRUCTURES]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    fig.savefig(path, dpi=80)
    plt.close(fig)


CONFUSER_COLOURS = {
    "levator": (1.0, 0.55, 0.0), "superior_oblique": (0.9, 0.0, 0.9), "superior_oblique_tendon": (0.9, 0.0, 0.9),
    "trochlea": (1.0, 1.0, 1.0), "inferior_oblique": (0.55, 0.25, 1.0), "lacrimal_gland": (0.6, 1.0, 0.2),
    "superior_ophthalmic_vein": (0.1, 0.3, 1.0), "ophthalmic_artery": (1.0, 0.1, 0.1),
}


def _tissue_slice(scene, axis: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise one slice of a case's grid (axis 1: coronal j, axis 0: sagittal i); returns the
    dominant layer per voxel ``[k, other]`` and the layer names."""
    from scipy import stats

    from OrbitSegLib.phantom.render import Grid, rasterise

    g = scene.grid
    size, origin = list(g.size), list(g.origin)
    size[axis] = 1
    origin[axis] += index * g.spacing[axis]
    raster = rasterise(scene.layers, Grid(tuple(size), g.spacing, tuple(origin), g.rotation, g.translation))
    top = raster.top.copy()
    if raster.mixed.size:
        top.ravel()[raster.mixed] = stats.mode(raster.sub_layers, axis=1, keepdims=False).mode
    return top.squeeze(), [layer.name for layer in scene.layers]


def _tissue_rgb(top: np.ndarray, names: list[str], hu: np.ndarray) -> tuple[np.ndarray, set]:
    grey = np.clip((hu[top] - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1) * 0.55
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    shown = set()
    for value in np.unique(top):
        side, _, rest = names[value].partition("_")
        colour = CONFUSER_COLOURS.get(rest)
        if side in structures.SIDES and colour is None and structures.STRUCTURE_KEYS.count(rest):
            colour = tuple(0.5 + 0.5 * c for c in structures.structure(rest).color)
        if colour is not None:
            rgb[top == value] = colour
            shown.add(rest)
    return rgb, shown


def confuser_figure(seed: int, index: int, path: Path) -> None:
    """Coronal and sagittal cuts through the right superior rectus: CT, reference contours and the
    tissue map (labelled structures pale, confusers coloured) of the same slice."""
    from OrbitSegLib.phantom.case import case_scene
    from OrbitSegLib.phantom.materials import draw_materials

    kwargs = {"tao": False, "spacing": (0.3, 0.3, 0.6)}
    case = generate_case(seed, index, **kwargs)
    scene = case_scene(seed, index, **kwargs)
    hu, _ = draw_materials(np.random.default_rng(0)).tables([layer.material for layer in scene.layers])
    ct, lab = _arrays(case)
    dx, dy, dz = case.ct.GetSpacing()
    sr = structures.label_value("right", "superior_rectus")
    k_sr, j_sr, i_sr = np.nonzero(lab == sr)
    j, i = int(np.median(j_sr)), int(np.median(i_sr))
    kc = int(np.median(k_sr)) - int(6 / dz)
    ks = slice(max(kc - int(16 / dz), 0), kc + int(16 / dz))
    rows = []
    ic = slice(max(i - int(22 / dx), 0), i + int(22 / dx))
    top, names = _tissue_slice(scene, 1, j)
    rows.append(("coronal", ct[ks, j, ic], lab[ks, j, ic], top[ks, ic], dx))
    jc = slice(max(int(np.min(j_sr)) - int(22 / dy), 0), int(np.max(j_sr)) + int(4 / dy))
    top, _ = _tissue_slice(scene, 0, i)
    rows.append(("sagittal", ct[ks, jc, i], lab[ks, jc, i], top[ks, jc], dy))
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    shown_all = set()
    for row, (name, img, lb, tp, step) in enumerate(rows):
        img, lb, tp = img[::-1], lb[::-1], tp[::-1]
        extent = [0, img.shape[1] * step, img.shape[0] * dz, 0]
        rgb, shown = _tissue_rgb(tp, names, hu)
        shown_all |= shown
        for col in range(3):
            ax = axes[row, col]
            if col < 2:
                ax.imshow(img, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], extent=extent, interpolation="nearest")
            else:
                ax.imshow(rgb, extent=extent, interpolation="nearest")
            if col == 1:
                _contours(ax, lb, extent)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_title(f"{name} through the right superior rectus")
        axes[row, 1].set_title("reference labels")
        axes[row, 2].set_title("tissue map (confusers coloured)")
    handles = [matplotlib.patches.Patch(color=CONFUSER_COLOURS[k], label=k.replace("_", " ")) for k in CONFUSER_COLOURS
               if k in shown_all]
    handles += [matplotlib.patches.Patch(color=tuple(0.5 + 0.5 * c for c in s.color), label=s.display_name)
                for s in structures.STRUCTURES if s.key in shown_all]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def figures(seed: int) -> dict:
    out = {}
    for name, tao in (("normal", False), ("tao", True)):
        t0 = time.perf_counter()
        case = generate_case(seed, 0 if not tao else 1, tao=tao, spacing=(0.33, 0.33, 0.6))
        out[name] = {"seconds": round(time.perf_counter() - t0, 2), "info": case.info}
        case_figure(case, f"{'TAO' if tao else 'Normal'} case", IMAGES / f"phantom_{name}.png")
    confuser_figure(seed, 0, IMAGES / "phantom_confusers.png")
    case = generate_case(seed, 2, tao=True, spacing=(0.45, 0.45, 3.0))
    case_figure(case, "Routine head CT, TAO", IMAGES / "phantom_thick_slices.png")
    return out


def statistics(seed: int, n_cases: int) -> dict:
    rows = []
    for index in range(n_cases):
        t0 = time.perf_counter()
        case = generate_case(seed, index)
        seconds = time.perf_counter() - t0
        info = case.info
        rows.append({"index": index, "tao": info["tao"], "volumes": info["volumes_cm3"], "seconds": seconds,
                     "protocol": info["scanner"]["protocol"], "spacing": info["spacing"], "size": info["size"],
                     "enlargement": info["enlargement"], "proptosis": info["proptosis_mm"],
                     "hertel": info["hertel_mm"], "true_volumes": info["true_volumes_cm3"]})
        print(f"case {index}: {info['scanner']['protocol']} {info['spacing']} tao={info['tao']} {seconds:.1f} s", flush=True)
    return {"seed": seed, "cases": rows}


def timings(seed: int) -> list[dict]:
    out = []
    for label, kwargs in (("small=True (tests)", {"small": True}),
                          ("0.35 x 0.35 x 1.0 mm", {"spacing": (0.35, 0.35, 1.0)}),
                          ("0.45 x 0.45 x 3.0 mm", {"spacing": (0.45, 0.45, 3.0)}),
                          ("0.25 x 0.25 x 0.5 mm", {"spacing": (0.25, 0.25, 0.5)})):
        times, sizes = [], []
        for index in range(3):
            t0 = time.perf_counter()
            case = generate_case(seed + 1, index, **kwargs)
            times.append(time.perf_counter() - t0)
            sizes.append(int(np.prod(case.info["size"])))
        out.append({"grid": label, "mean_s": round(float(np.mean(times)), 2), "max_s": round(float(np.max(times)), 2),
                    "voxels_m": round(float(np.mean(sizes)) / 1e6, 1)})
        print(out[-1], flush=True)
    return out


def _fmt(values) -> str:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return "-"
    return f"{v.mean():.2f} ± {v.std():.2f} ({v.min():.2f}-{v.max():.2f})"


def volume_table(stats: dict) -> str:
    lines = ["| structure | literature (cm³) | normal: mean ± SD (min-max) | TAO: mean ± SD (min-max) | TAO / normal |",
             "|---|---|---|---|---|"]
    for s in structures.STRUCTURES:
        normal, tao = [], []
        for row in stats["cases"]:
            for side in structures.SIDES:
                (tao if row["tao"] else normal).append(row["volumes"][side][s.key])
        ratio = np.mean(tao) / np.mean(normal) if normal and tao else float("nan")
        lines.append(f"| {s.display_name} | {LITERATURE[s.key]} | {_fmt(normal)} | {_fmt(tao)} | {ratio:.2f} |")
    n_tao = sum(r["tao"] for r in stats["cases"])
    hertel = {flag: [row["hertel"][side] for row in stats["cases"] if row["tao"] == flag for side in structures.SIDES]
              for flag in (False, True)}
    gap = [abs(row["volumes"][side][s.key] - row["true_volumes"][side][s.key]) / row["true_volumes"][side][s.key]
           for row in stats["cases"] for side in structures.SIDES for s in structures.STRUCTURES]
    lines.append("")
    lines.append(f"Hertel distance (corneal apex to lateral rim, mm): normal {_fmt(hertel[False])}, "
                 f"TAO {_fmt(hertel[True])}. Labelmap volume vs exact volume: mean absolute difference "
                 f"{100 * np.mean(gap):.1f}% (max {100 * np.max(gap):.1f}%).")
    lines.append("")
    lines.append(f"{len(stats['cases'])} cases (seed {stats['seed']}), {len(stats['cases']) - n_tao} normal and {n_tao} TAO, "
                 "both eyes each; volumes are labelmap voxel counts x voxel volume on each case's own grid.")
    return "\n".join(lines)


def timing_table(stats: dict, timed: list[dict]) -> str:
    lines = ["| grid | voxels (M) | mean s | max s |", "|---|---|---|---|"]
    for t in timed:
        lines.append(f"| {t['grid']} | {t['voxels_m']} | {t['mean_s']} | {t['max_s']} |")
    by_protocol: dict[str, list[float]] = {}
    for row in stats.get("cases", []):
        by_protocol.setdefault(row["protocol"], []).append(row["seconds"])
    lines.append("")
    lines.append("Over the table's cases (random protocols): " + ", ".join(
        f"{p} {np.mean(v):.1f} s mean ({len(v)} cases)" for p, v in sorted(by_protocol.items())) + ".")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines.append(f"Measured in one process (one core) on {platform.machine()}, {os.cpu_count()} cores, Python "
                 f"{platform.python_version()}, with a load average of {load:.1f} at the end of the run (other jobs "
                 "sharing the machine make these upper bounds).")
    return "\n".join(lines)


def replace_section(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- phantom:{name}:start -->\n).*?(\n<!-- phantom:{name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"docs/phantom.md lacks the section markers for {name}")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--figures-only", action="store_true")
    args = parser.parse_args()
    IMAGES.mkdir(parents=True, exist_ok=True)
    fig_info = figures(args.seed)
    if args.figures_only:
        return
    stats = statistics(args.seed, args.cases)
    timed = timings(args.seed)
    (IMAGES / "phantom_stats.json").write_text(json.dumps({"stats": stats, "timings": timed,
                                                           "figures": {k: v["seconds"] for k, v in fig_info.items()}},
                                                          indent=1), encoding="utf-8")
    text = DOC.read_text(encoding="utf-8")
    text = replace_section(text, "volumes", volume_table(stats))
    text = replace_section(text, "timings", timing_table(stats, timed))
    DOC.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
