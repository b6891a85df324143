"""One phantom case: anatomy + scanner -> CT (int16 HU), annotator labelmap and a description."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .. import structures
from ..phantom_settings import ANATOMY_MODELS
from .anatomy import RECTI, Anatomy, draw_anatomy
from .head import HeadBuilder
from .materials import draw_materials
from .orbit import OrbitBuilder, side_sign
from .render import Grid, Layer, rasterise
from .scanner import (Scanner, add_streaks, beam_hardening, blur, correlated_noise, draw_scanner, make_grid,
                      sharpen, texture_field, tilted_slice_blur)
from .sweep import SweepOrbitBuilder, draw_sweep_anatomy

F32 = np.float32
LABEL_MARGIN_MM = 2.0


@dataclass
class PhantomCase:
    """A generated case: ``ct`` (int16 HU) and ``labels`` (uint8 OrbitSeg values) on one grid, ``info``
    a JSON-serialisable description (TAO, enlargements, globe centres in LPS mm, slice range...)."""

    ct: sitk.Image
    labels: sitk.Image
    info: dict


def build_layers(anatomy: Anatomy) -> tuple[list[Layer], dict]:
    """All layers of a head in painter's order, and per-orbit derived geometry."""
    head = HeadBuilder(anatomy)
    layers = head.layers()
    derived = {}
    builder_class = SweepOrbitBuilder if anatomy.model == "sweep" else OrbitBuilder
    for side, o in anatomy.orbits.items():
        builder = builder_class(o, head.side_skin(side))
        layers.extend(builder.layers())
        derived[side] = builder.info
    return layers, derived


def _streams(seed: int, index: int):
    seq = np.random.SeedSequence([int(seed), int(index)])
    return [np.random.default_rng(s) for s in seq.spawn(5)]


def _anatomy(rng: np.random.Generator, tao: bool | None, model: str = "classic") -> Anatomy:
    drawn = bool(rng.uniform() < 0.5)
    tao = drawn if tao is None else bool(tao)
    if model == "classic":
        return draw_anatomy(rng, tao)
    if model == "sweep":
        return draw_sweep_anatomy(rng, tao)
    raise ValueError(f"unknown anatomy model {model!r}: one of {', '.join(ANATOMY_MODELS)}")


def case_anatomy(seed: int, index: int, tao: bool | None = None, anatomy: str = "classic") -> Anatomy:
    """The anatomy of case ``index`` of series ``seed`` without rendering it (cheap)."""
    return _anatomy(_streams(seed, index)[0], tao, anatomy)


@dataclass
class Scene:
    """Everything :func:`generate_case` draws before rendering: anatomy, scanner, grid and layers."""

    anatomy: Anatomy
    scanner: Scanner
    grid: Grid
    layers: list[Layer]
    derived: dict
    rng_materials: np.random.Generator
    rng_imaging: np.random.Generator


def case_scene(seed: int, index: int, *, small: bool = False, tao: bool | None = None,
               spacing: tuple[float, float, float] | None = None, anatomy: str = "classic",
               world: str = "default") -> Scene:
    """The scene of a case (same arguments as :func:`generate_case`), e.g. to rasterise single slices."""
    r_anat, r_mat, r_scan, r_grid, r_img = _streams(seed, index)
    model = anatomy
    anatomy = _anatomy(r_anat, tao, model)
    scanner = draw_scanner(r_scan, small, world)
    if spacing is not None:
        ratio = scanner.thickness / scanner.spacing[2]
        scanner.protocol = "custom"
        scanner.spacing = tuple(float(v) for v in spacing)
        scanner.thickness = scanner.spacing[2] * (ratio if scanner.spacing[2] < 2.0 else 1.0)
    grid = make_grid(anatomy, scanner, r_grid, small)
    layers, derived = build_layers(anatomy)
    return Scene(anatomy, scanner, grid, layers, derived, r_mat, r_img)


def _image(array: np.ndarray, grid: Grid) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(tuple(float(v) for v in np.asarray(grid.direction, dtype=float).ravel()))
    return image


def generate_case(seed: int, index: int, *, small: bool = False, tao: bool | None = None,
                  spacing: tuple[float, float, float] | None = None, anatomy: str = "classic",
                  world: str = "default") -> PhantomCase:
    """Generate case ``index`` of the series ``seed`` (deterministic for the pair).

    ``tao=None`` draws thyroid-associated ophthalmopathy for about half the cases. ``small=True`` gives a
    coarse (about 0.8 mm x 2 mm) tightly cropped case for tests; the anatomy is the same as the full case.
    ``spacing`` (x, y, z mm) replaces the drawn scanner spacing (slice thickness at least the spacing).
    ``anatomy`` picks the anatomy model (:data:`ANATOMY_MODELS`), ``world`` the scanner world
    (:data:`WORLDS`, both in :mod:`..phantom_settings`); ``classic``/``default`` is the series the bundled models were trained on.
    """
    t0 = time.perf_counter()
    scene = case_scene(seed, index, small=small, tao=tao, spacing=spacing, anatomy=anatomy, world=world)
    anatomy, scanner, grid, layers, derived = scene.anatomy, scene.scanner, scene.grid, scene.layers, scene.derived
    materials = draw_materials(scene.rng_materials, anatomy.severity if anatomy.tao else 0.0)
    if scanner.contrast:
        materials = materials.enhanced(scanner.enhancement)
    r_img = scene.rng_imaging
    t_build = time.perf_counter()

    raster = rasterise(layers, grid, sub=9 if small else None)
    t_raster = time.perf_counter()
    names = [layer.material for layer in layers]
    hu_tab, texture_tab = materials.tables(names)
    ct = raster.layer_values(hu_tab)
    shape = ct.shape
    ct += raster.layer_values(texture_tab) * texture_field(shape, grid.spacing, r_img)
    extra_z = float(np.sqrt(max(scanner.thickness ** 2 - grid.spacing[2] ** 2, 0.0)))
    resampled_tilt = scanner.tilt_mode == "resampled"
    blur(ct, grid.spacing, scanner.psf_fwhm, 0.0 if resampled_tilt else extra_z)
    if resampled_tilt:
        tilted_slice_blur(ct, grid.spacing, max(extra_z, 0.6 * grid.spacing[2]), scanner.tilt_deg)
    if scanner.sharpen > 0:
        sharpen(ct, grid.spacing, scanner.sharpen)
    if scanner.beam_hardening > 0:
        beam_hardening(ct, grid.spacing, scanner.beam_hardening)
    streaks = add_streaks(ct, grid.spacing, scanner, r_img)
    ct += correlated_noise(shape, grid.spacing, scanner, r_img)
    if scanner.hu_scale != 1.0:
        ct += F32(1000.0)
        ct *= F32(scanner.hu_scale)
        ct -= F32(1000.0)
    ct += F32(scanner.hu_offset)
    np.clip(ct, -1024, 3071, out=ct)
    ct_image = _image(np.rint(ct).astype(np.int16), grid)
    del ct
    labels = raster.labels(np.array([layer.label for layer in layers], dtype=np.uint8))
    label_image = _image(labels, grid)
    t_done = time.perf_counter()

    fill = raster.layer_fill(len(layers))
    true_labels = np.bincount(np.array([layer.label for layer in layers]), weights=fill, minlength=13)
    info = _describe(seed, index, small, anatomy, scanner, grid, labels, derived, materials.hu, streaks, true_labels)
    info["timing_s"] = {"build": round(t_build - t0, 3), "rasterise": round(t_raster - t_build, 3),
                        "imaging": round(t_done - t_raster, 3), "total": round(t_done - t0, 3)}
    info["mixed_voxels"] = int(raster.mixed.size)
    return PhantomCase(ct=ct_image, labels=label_image, info=info)


def _slice_range(labels: np.ndarray, dz: float) -> tuple[int, int]:
    present = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    if present.size == 0:
        return 0, labels.shape[0] - 1
    margin = int(np.ceil(LABEL_MARGIN_MM / dz))
    return max(int(present[0]) - margin, 0), min(int(present[-1]) + margin, labels.shape[0] - 1)


def _describe(seed, index, small, anatomy: Anatomy, scanner: Scanner, grid: Grid, labels: np.ndarray,
              derived: dict, hu: dict, streaks: dict, true_labels: np.ndarray) -> dict:
    voxel_cm3 = float(np.prod(grid.spacing)) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=13)
    volumes, true_volumes = {}, {}
    for value, side, key in structures.label_table():
        volumes.setdefault(side, {})[key] = round(float(counts[value]) * voxel_cm3, 4)
        true_volumes.setdefault(side, {})[key] = round(float(true_labels[value]) * voxel_cm3, 4)
    start, end = _slice_range(labels, grid.spacing[2])
    globe_lps = {}
    for side, o in anatomy.orbits.items():
        gu, gy, gz = o.globe_centre
        globe_lps[side] = [round(float(v), 3) for v in grid.anatomy_to_world([side_sign(side) * gu, gy, gz])]
    return {
        "seed": int(seed), "index": int(index), "small": bool(small),
        "anatomy_model": anatomy.model, "world": scanner.world,
        "tao": bool(anatomy.tao), "severity": round(anatomy.severity, 3),
        "enlargement": {side: {k: round(o.muscles[k].enlargement, 3) for k in RECTI}
                        for side, o in anatomy.orbits.items()},
        "fat_factor": {side: round(o.fat_factor, 3) for side, o in anatomy.orbits.items()},
        "proptosis_mm": {side: round(o.proptosis, 2) for side, o in anatomy.orbits.items()},
        "globe_centre_lps": globe_lps,
        "start_slice": start, "end_slice": end,
        "spacing": [round(v, 5) for v in grid.spacing], "size": list(grid.size),
        "origin": [round(v, 4) for v in grid.origin],
        "rotation_deg": {"pitch": round(scanner.pitch_deg, 3), "yaw": round(scanner.yaw_deg, 3),
                         "roll": round(scanner.roll_deg, 3)},
        "scanner": scanner.to_dict(),
        "streaks": streaks,
        "volumes_cm3": volumes,
        "true_volumes_cm3": true_volumes,
        "geometry": derived,
        "orbit_depth_mm": {side: round(o.depth, 2) for side, o in anatomy.orbits.items()},
        "hertel_mm": {side: round(o.lateral_rim[1] - (o.globe_centre[1] - o.globe_radii[1]), 2)
                      for side, o in anatomy.orbits.items()},
        "hu": {k: round(v, 1) for k, v in hu.items()},
    }
