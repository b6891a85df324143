"""The scanner: random protocol and grid (spacing, field of view, head pose) and the imaging chain
applied to the ideal partial-volume image (tissue texture, point-spread function, streaks, noise).

Two *worlds* of scanners share the imaging chain: ``default`` (dedicated orbital, intermediate and
routine head protocols around the orbits; the series the bundled models were trained on, unchanged)
and ``wide`` (256/512 matrices over orbit-only or whole-head fields of view, 0.2-1.0 mm pixels,
0.5-5 mm slices, gantry tilt up to 25 degrees, head pitch up to 25 degrees, soft/standard/sharp
kernels, a wide range of noise, beam hardening next to bone, contrast enhancement, HU calibration
offset and slope).

All volumes are float32 ``[k, j, i]``; spacings in mm (x, y, z).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ..phantom_settings import WORLDS
from .anatomy import Anatomy
from .render import Grid

F32 = np.float32


@dataclass
class Scanner:
    """One acquisition: protocol, grid spacing, slice thickness, resolution and noise."""

    protocol: str
    spacing: tuple[float, float, float]
    thickness: float
    psf_fwhm: float
    noise_std: float
    noise_grain: float
    streaks: int
    streak_amplitude: float
    hu_offset: float
    pitch_deg: float
    yaw_deg: float
    roll_deg: float
    # The wide world's additions; the defaults are what the default world does.
    world: str = "default"
    matrix: int = 0  # in-plane matrix (0: the field of view follows the orbits)
    fov: str = "orbits"  # "orbits" (orbit-only) or "head" (whole head)
    fov_mm: float = 0.0  # in-plane field of view (mm), 0 when the matrix is 0
    tilt_deg: float = 0.0  # gantry tilt: slices rotated about the left-right axis
    tilt_mode: str = "none"  # "oblique" (slices stay tilted: tilted grid) or "resampled" (axis-aligned grid)
    kernel: str = "standard"  # "soft", "standard" or "sharp"
    sharpen: float = 0.0  # edge enhancement of a sharp kernel (unsharp-mask gain)
    beam_hardening: float = 0.0  # HU darkening of soft tissue next to dense bone
    contrast: bool = False  # contrast-enhanced scan
    enhancement: float = 0.0  # HU added to blood by contrast (other tissues a fraction of it)
    hu_scale: float = 1.0  # calibration slope about air (-1000 HU)

    def to_dict(self) -> dict:
        return asdict(self)


def draw_scanner(rng: np.random.Generator, small: bool = False, world: str = "default") -> Scanner:
    """A random scanner of ``world`` (:data:`WORLDS`); see :func:`draw_default_scanner` and
    :func:`draw_wide_scanner`."""
    if world == "default":
        return draw_default_scanner(rng, small)
    if world == "wide":
        return draw_wide_scanner(rng, small)
    raise ValueError(f"unknown scanner world {world!r}: one of {', '.join(WORLDS)}")


def draw_default_scanner(rng: np.random.Generator, small: bool = False) -> Scanner:
    """Dedicated thin-slice orbital CT (about 45%), intermediate slices (20%) or routine head CT (35%)."""
    pick = rng.uniform()
    if pick < 0.45:
        protocol, dz = "orbit", float(rng.uniform(0.5, 1.0))
        dx = float(rng.uniform(0.25, 0.42))
        thickness = dz * float(rng.choice([1.0, 1.0, 1.5, 2.0]))
    elif pick < 0.65:
        protocol, dz = "intermediate", float(rng.uniform(1.0, 2.0))
        dx = float(rng.uniform(0.3, 0.5))
        thickness = dz
    else:
        protocol, dz = "head", float(rng.uniform(2.5, 3.0))
        dx = float(rng.uniform(0.35, 0.5))
        thickness = dz
    if small:
        protocol, dx, dz = "small", float(rng.uniform(0.75, 0.85)), 2.0
        thickness = dz
    return Scanner(
        protocol=protocol,
        spacing=(dx, dx, dz),
        thickness=float(thickness),
        psf_fwhm=float(rng.uniform(0.5, 0.9)),
        noise_std=float(rng.uniform(5.0, 25.0)),
        noise_grain=float(rng.uniform(0.25, 0.55)),
        streaks=int(rng.integers(3, 12)) if rng.uniform() < 0.5 else 0,
        streak_amplitude=float(rng.uniform(10.0, 60.0)),
        hu_offset=float(rng.uniform(-4.0, 4.0)),
        pitch_deg=float(rng.uniform(-7.0, 7.0)),
        yaw_deg=float(rng.uniform(-4.0, 4.0)),
        roll_deg=float(rng.uniform(-3.0, 3.0)),
    )


KERNELS = {  # name: (in-plane PSF FWHM mm, noise grain mm, sharpening gain), each a (low, high) range
    "soft": ((0.9, 1.5), (0.45, 0.9), (0.0, 0.0)),
    "standard": ((0.5, 0.9), (0.25, 0.55), (0.0, 0.0)),
    "sharp": ((0.35, 0.6), (0.15, 0.3), (0.3, 1.2)),
}
MAX_WIDE_VOXELS = 40e6  # the wide world's random z coverage stops here (the orbits are always covered)


def draw_wide_scanner(rng: np.random.Generator, small: bool = False) -> Scanner:
    """The wide world: any clinical CT that shows the orbits.

    A 256 or 512 matrix over an orbit-only (100-170 mm) or whole-head (180-250 mm) field of view gives
    0.2-1.0 mm pixels; slices 0.5-5 mm (thickness up to 2x the spacing below 1.5 mm); gantry tilt up to
    25 degrees in 40% of scans (kept as a tilted grid or resampled to an axis-aligned one); head pitch
    +-25, yaw +-6, roll +-5 degrees; soft, standard or sharp kernel; noise 3-60 HU (log-uniform); streaks
    in 60%; beam hardening 0-40 HU next to bone; contrast enhancement in 35% (blood +80-250 HU); HU
    offset +-20 and slope 0.97-1.03. ``small`` keeps all of it but a coarse (0.75-1.0 x 2-3 mm),
    tightly cropped grid, for tests.
    """
    fov = "head" if rng.uniform() < 0.5 else "orbits"
    matrix = int(rng.choice([256, 512]))
    fov_mm = float(rng.uniform(180.0, 250.0) if fov == "head" else rng.uniform(100.0, 170.0))
    dx = float(np.clip(fov_mm / matrix, 0.2, 1.0))
    band = int(rng.integers(0, 4))
    dz = float(rng.uniform(*((0.5, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 5.0))[band]))
    thickness = dz * float(rng.choice([1.0, 1.0, 1.5, 2.0])) if dz < 1.5 else dz
    tilted = rng.uniform() < 0.4
    tilt = float(rng.uniform(-25.0, 25.0)) if tilted else 0.0
    tilt_mode = str(rng.choice(["oblique", "resampled"])) if tilted else "none"
    kernel = str(rng.choice(list(KERNELS)))
    psf, grain, gain = KERNELS[kernel]
    contrast = bool(rng.uniform() < 0.35)
    scanner = Scanner(
        protocol=f"wide-{fov}",
        spacing=(dx, dx, dz),
        thickness=float(thickness),
        psf_fwhm=float(rng.uniform(*psf)),
        noise_std=float(np.exp(rng.uniform(np.log(3.0), np.log(60.0)))),
        noise_grain=float(rng.uniform(*grain)),
        streaks=int(rng.integers(3, 20)) if rng.uniform() < 0.6 else 0,
        streak_amplitude=float(rng.uniform(10.0, 120.0)),
        hu_offset=float(rng.uniform(-20.0, 20.0)),
        pitch_deg=float(rng.uniform(-25.0, 25.0)),
        yaw_deg=float(rng.uniform(-6.0, 6.0)),
        roll_deg=float(rng.uniform(-5.0, 5.0)),
        world="wide", matrix=matrix, fov=fov, fov_mm=fov_mm, tilt_deg=tilt, tilt_mode=tilt_mode,
        kernel=kernel, sharpen=float(rng.uniform(*gain)), beam_hardening=float(rng.uniform(0.0, 40.0)),
        contrast=contrast, enhancement=float(rng.uniform(80.0, 250.0)) if contrast else 0.0,
        hu_scale=float(rng.uniform(0.97, 1.03)),
    )
    if small:
        dx, dz = float(rng.uniform(0.75, 1.0)), float(rng.choice([2.0, 3.0]))
        scanner.protocol, scanner.matrix, scanner.fov_mm = "small", 0, 0.0
        scanner.spacing, scanner.thickness = (dx, dx, dz), dz
    return scanner


def _rot_x(degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def head_rotation(scanner: Scanner) -> np.ndarray:
    """Rotation anatomy -> world: yaw about S, pitch about L (chin down positive), roll about P."""
    p, y, r = np.radians([scanner.pitch_deg, scanner.yaw_deg, scanner.roll_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    ry = np.array([[np.cos(r), 0, np.sin(r)], [0, 1, 0], [-np.sin(r), 0, np.cos(r)]])
    return rz @ rx @ ry


def orbit_box(anatomy: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Head-frame box around both orbits: globes, bony entrance and apex (mm)."""
    pts = []
    for side, o in anatomy.orbits.items():
        s = -1 if side == "right" else 1
        gu, gy, gz = o.globe_centre
        r = o.globe_radii
        cu, cy, cz = o.canal
        pts += [[s * (o.lateral_rim[0] + 2), gy - r[1] - 2, o.floor_front - 2],
                [s * (o.medial_front - 2), cy + 4, o.roof_front + 3],
                [s * gu, gy - r[1] - 3, gz], [s * cu, cy + 4, cz]]
    pts = np.array(pts)
    return pts.min(axis=0), pts.max(axis=0)


def make_grid(anatomy: Anatomy, scanner: Scanner, rng: np.random.Generator, small: bool = False) -> Grid:
    """Axis-aligned LPS grid covering both orbits with random field of view and offset (the wide world:
    :func:`wide_grid`)."""
    if scanner.world == "wide":
        return wide_grid(anatomy, scanner, rng, small)
    rotation = head_rotation(scanner)
    translation = np.array([rng.uniform(-10, 10), rng.uniform(-110, -60), rng.uniform(-120, 60)])
    lo, hi = orbit_box(anatomy)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    world = corners @ rotation.T + translation
    wlo, whi = world.min(axis=0), world.max(axis=0)
    need = whi - wlo
    if small:
        extent = need + np.array([8.0, 8.0, 6.0])
        margin_min = np.array([3.0, 3.0, 2.0])
    else:
        extent = np.maximum(np.array([rng.uniform(120, 140), rng.uniform(90, 120), rng.uniform(55, 80)]), need + 12.0)
        margin_min = np.array([5.0, 5.0, 4.0])
    slack = extent - need
    start = wlo - (margin_min + rng.uniform(0, 1, 3) * np.maximum(slack - 2 * margin_min, 0))
    spacing = np.asarray(scanner.spacing, dtype=float)
    size = np.ceil(extent / spacing).astype(int)
    origin = start + spacing / 2
    return Grid(size=tuple(int(v) for v in size), spacing=tuple(float(v) for v in spacing),
                origin=tuple(float(v) for v in origin), rotation=rotation, translation=translation)


def wide_grid(anatomy: Anatomy, scanner: Scanner, rng: np.random.Generator, small: bool = False) -> Grid:
    """The wide world's grid: a square ``matrix`` x ``matrix`` field of view of ``fov_mm`` holding both
    orbits (centred on the head for a whole-head field of view), 10-30 mm above and below the orbits
    (70-130 mm in all for a whole head, within :data:`MAX_WIDE_VOXELS`); with an ``oblique`` gantry tilt
    the grid's slices are tilted about the left-right axis (a non-identity direction). ``small``: a
    tight crop around the orbits."""
    rotation = head_rotation(scanner)
    translation = np.array([rng.uniform(-10, 10), rng.uniform(-110, -60), rng.uniform(-120, 60)])
    direction = _rot_x(scanner.tilt_deg) if scanner.tilt_mode == "oblique" else np.eye(3)
    lo, hi = orbit_box(anatomy)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    inner = (corners @ rotation.T + translation) @ direction  # grid-frame coordinates (mm)
    glo, ghi = inner.min(axis=0), inner.max(axis=0)
    need = ghi - glo
    spacing = np.asarray(scanner.spacing, dtype=float)
    if small or scanner.matrix == 0:
        extent = need + np.array([8.0, 8.0, 6.0])
        start = glo - np.array([4.0, 4.0, 3.0])
    else:
        fov = max(scanner.fov_mm, float(need[:2].max()) + 10.0)
        spacing[:2] = fov / scanner.matrix
        if scanner.fov == "head":
            centre = (rotation @ np.array([0.0, anatomy.head.head_centre_y, 0.0]) + translation) @ direction
            centre = centre[:2] + rng.uniform(-10, 10, 2)
        else:
            centre = (glo[:2] + ghi[:2]) / 2 + rng.uniform(-1, 1, 2) * np.maximum(fov - need[:2] - 10.0, 0) / 2
        # Keep both orbits (plus 5 mm) inside the square.
        centre = np.clip(centre, ghi[:2] + 5.0 - fov / 2, glo[:2] - 5.0 + fov / 2)
        wanted = (rng.uniform(70.0, 130.0) if scanner.fov == "head" else need[2] + rng.uniform(20.0, 60.0))
        most = MAX_WIDE_VOXELS / scanner.matrix ** 2 * spacing[2]
        z_extent = max(need[2] + 8.0, min(wanted, most))
        below = rng.uniform(4.0, max(z_extent - need[2] - 4.0, 4.0))
        extent = np.array([fov, fov, z_extent])
        start = np.array([centre[0] - fov / 2, centre[1] - fov / 2, glo[2] - below])
    size = np.ceil(extent / spacing).astype(int)
    if not small and scanner.matrix:
        size[:2] = scanner.matrix
    origin = direction @ (start + spacing / 2)
    return Grid(size=tuple(int(v) for v in size), spacing=tuple(float(v) for v in spacing),
                origin=tuple(float(v) for v in origin), rotation=rotation, translation=translation,
                direction=direction)


def texture_field(shape, spacing, rng: np.random.Generator, fine_mm: float = 0.45, coarse_mm: float = 2.0) -> np.ndarray:
    """Tissue texture: a unit-variance Gaussian random field mixing a sub-mm and a few-mm correlation,
    generated on a grid of at most ``fine_mm`` spacing and interpolated linearly to ``shape`` ``[k, j, i]``."""
    spacing_kji = np.asarray(spacing, dtype=float)[::-1]
    step = np.maximum(spacing_kji, fine_mm)
    coarse_shape = tuple(int(v) for v in np.ceil(np.asarray(shape) * spacing_kji / step).astype(int) + 1)
    white = rng.standard_normal(coarse_shape, dtype=F32)
    fine = ndimage.gaussian_filter(white, sigma=fine_mm / step, mode="wrap")
    fine /= max(float(fine.std()), 1e-6)
    broad = ndimage.gaussian_filter(white, sigma=coarse_mm / step, mode="wrap")
    broad /= max(float(broad.std()), 1e-6)
    ratio = F32(rng.uniform(0.5, 1.5))
    fine += ratio * broad
    fine /= F32(np.sqrt(1 + ratio * ratio))
    if fine.shape == tuple(shape):
        return fine
    zoom = np.asarray(shape) / np.asarray(coarse_shape)
    return ndimage.zoom(fine, zoom, order=1, output=F32, grid_mode=True, mode="nearest")


def blur(volume: np.ndarray, spacing, fwhm_xy: float, extra_z_mm: float) -> np.ndarray:
    """Point-spread function: Gaussian in-plane (FWHM mm) and along z (the slice profile beyond the
    voxel's own extent, FWHM mm). In place where possible."""
    dx, dy, dz = spacing
    sig = fwhm_xy / 2.3548
    ndimage.gaussian_filter1d(volume, sig / dx, axis=2, output=volume, truncate=3.0)
    ndimage.gaussian_filter1d(volume, sig / dy, axis=1, output=volume, truncate=3.0)
    if extra_z_mm > 0.05:
        ndimage.gaussian_filter1d(volume, extra_z_mm / 2.3548 / dz, axis=0, output=volume, truncate=3.0)
    return volume


def correlated_noise(shape, spacing, scanner: Scanner, rng: np.random.Generator) -> np.ndarray:
    """CT-like noise: white noise band-passed in-plane (a difference of Gaussians, i.e. the mid-frequency
    peak of a filtered-back-projection noise power spectrum), correlated along z for overlapping slices,
    scaled to ``scanner.noise_std`` HU."""
    dx, dy, dz = spacing
    noise = rng.standard_normal(shape, dtype=F32)
    g = scanner.noise_grain
    fine = ndimage.gaussian_filter(noise, sigma=(0, g / dy, g / dx), truncate=3.0)
    wide = ndimage.gaussian_filter(fine, sigma=(0, 2.0 * g / dy, 2.0 * g / dx), truncate=3.0)
    fine -= F32(0.65) * wide
    if scanner.thickness > dz * 1.2:
        ndimage.gaussian_filter1d(fine, 0.35 * scanner.thickness / dz, axis=0, output=fine, truncate=3.0)
    fine *= F32(scanner.noise_std / max(float(fine[:: max(1, shape[0] // 8)].std()), 1e-6))
    return fine


def add_streaks(volume: np.ndarray, spacing, scanner: Scanner, rng: np.random.Generator, threshold: float = 700.0) -> dict:
    """Beam-hardening-like streaks in axial slices: dark bands joining pairs of dense bone points and
    fainter bright/dark rays leaving them, fading over a few slices. Returns a summary."""
    if scanner.streaks == 0:
        return {"count": 0}
    nz, ny, nx = volume.shape
    dx, dy, dz = spacing
    yy, xx = np.meshgrid(np.arange(ny, dtype=F32) * F32(dy), np.arange(nx, dtype=F32) * F32(dx), indexing="ij")
    made = 0
    for _ in range(scanner.streaks):
        k0 = int(rng.integers(0, nz))
        bone = np.argwhere(volume[k0] > threshold)
        if len(bone) < 2:
            continue
        a, b = bone[rng.integers(0, len(bone), 2)]
        pa = np.array([a[1] * dx, a[0] * dy])
        pb = np.array([b[1] * dx, b[0] * dy])
        if np.linalg.norm(pb - pa) < 8.0 or rng.uniform() < 0.35:
            angle = rng.uniform(0, np.pi)
            pb = pa + 60.0 * np.array([np.cos(angle), np.sin(angle)])
            amplitude = scanner.streak_amplitude * rng.uniform(0.3, 0.7) * rng.choice([-1.0, 1.0])
        else:
            amplitude = -scanner.streak_amplitude * rng.uniform(0.5, 1.0)
        direction = (pb - pa) / np.linalg.norm(pb - pa)
        rel_x, rel_y = xx - F32(pa[0]), yy - F32(pa[1])
        along = rel_x * F32(direction[0]) + rel_y * F32(direction[1])
        across = rel_x * F32(-direction[1]) + rel_y * F32(direction[0])
        span = float(np.linalg.norm(pb - pa))
        width = rng.uniform(0.4, 1.2)
        outside = np.maximum(np.maximum(-along, along - F32(span)), 0)
        profile = np.exp(-0.5 * (across / F32(width)) ** 2) * np.exp(-outside / F32(rng.uniform(10, 30)))
        n_slices = max(1, int(round(rng.uniform(1.0, 6.0) / dz)))
        for dk in range(-n_slices, n_slices + 1):
            k = k0 + dk
            if 0 <= k < nz:
                volume[k] += F32(amplitude * np.exp(-0.5 * (dk / max(n_slices / 2, 0.5)) ** 2)) * profile
        made += 1
    return {"count": made}


def tilted_slice_blur(volume: np.ndarray, spacing, fwhm_mm: float, tilt_deg: float) -> np.ndarray:
    """The slice profile of a gantry-tilted scan resampled to an axis-aligned grid: a Gaussian (FWHM mm)
    along the tilted slice normal (in the y-z plane), by shearing each slice in y, blurring along z and
    shearing back (linear interpolation, as a resampling converter does). In place."""
    dx, dy, dz = spacing
    shift = dz * np.tan(np.radians(tilt_deg)) / dy  # y voxels per slice
    nz = volume.shape[0]
    for k in range(nz):
        volume[k] = ndimage.shift(volume[k], (-k * shift, 0), order=1, mode="nearest")
    sigma = fwhm_mm * np.cos(np.radians(tilt_deg)) / 2.3548 / dz
    ndimage.gaussian_filter1d(volume, sigma, axis=0, output=volume, truncate=3.0)
    for k in range(nz):
        volume[k] = ndimage.shift(volume[k], (k * shift, 0), order=1, mode="nearest")
    return volume


def sharpen(volume: np.ndarray, spacing, gain: float, radius_mm: float = 0.7) -> np.ndarray:
    """Edge enhancement of a sharp (bone) reconstruction kernel: in-plane unsharp masking with
    ``gain`` (overshoot next to edges). In place."""
    dx, dy, _ = spacing
    smooth = ndimage.gaussian_filter(volume, sigma=(0, radius_mm / dy, radius_mm / dx), truncate=3.0)
    volume += F32(gain) * (volume - smooth)
    return volume


def beam_hardening(volume: np.ndarray, spacing, amount: float, threshold: float = 500.0,
                   reach_mm: float = 4.0) -> np.ndarray:
    """Beam hardening next to bone: soft tissue and fat darkened by up to ``amount`` HU where much dense
    bone lies within ``reach_mm`` in the slice (the dark bands between thick bones). In place."""
    dx, dy, _ = spacing
    bone = (volume > F32(threshold)).astype(F32)
    near = ndimage.gaussian_filter(bone, sigma=(0, reach_mm / dy, reach_mm / dx), truncate=2.5)
    near *= F32(amount / max(float(near.max()), 1e-6))
    volume -= np.where(volume < F32(threshold), near, F32(0))
    return volume
