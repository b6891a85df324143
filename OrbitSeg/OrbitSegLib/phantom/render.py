"""Rasterisation of a layered implicit scene onto a CT grid with exact partial-volume fractions.

A scene is a list of :class:`Layer` in painter's order: where layers overlap, the later one wins (a
muscle painted after the fat displaces it). Each voxel's content is the set of layers that own its
sub-volume, computed on a finer sub-grid only where needed:

- Pass 1 works on blocks of voxels (about 2.5 mm a side). A block whose centre lies deeper than the
  block's reach inside or outside a layer is settled without looking at its voxels; otherwise the
  layer's distance is evaluated at the block's voxel centres. A voxel whose centre is further than
  half its diagonal from every surface that lies above its topmost covering layer is *pure*.
- Pass 2 re-paints only the *mixed* voxels at ``sub`` well-spread sub-sample points per voxel, layer
  by layer, and only for the layers whose surface passes through the voxel.

The result per voxel is the mean of the layers' material values over the sub-samples (the partial
volume effect) and the label an annotator would draw: the labelled structure occupying most
sub-samples, provided labelled structures together fill at least half the voxel. Arrays are
``[k, j, i]`` float32/uint8.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .shapes import Offset, Shape

F32 = np.float32


@dataclass
class Layer:
    """One tissue region: a shape, the material filling it and its label value (0: not labelled)."""

    name: str
    shape: Shape
    material: str
    label: int = 0


@dataclass
class Grid:
    """A CT grid and where the anatomy lies in it.

    ``size`` (nx, ny, nz) voxels, ``spacing`` (dx, dy, dz) and ``origin`` in mm (world LPS); voxel
    (i, j, k) sits at world ``origin + direction @ (spacing * (i, j, k))`` (``direction``: the identity
    for an axis-aligned grid, a rotation for a gantry-tilted one). An anatomy point ``a`` sits at world
    ``rotation @ a + translation``.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def index_to_anatomy(self) -> tuple[np.ndarray, np.ndarray]:
        """(M, c) with anatomy = M @ (i, j, k) + c (float64)."""
        rot_t = np.asarray(self.rotation, dtype=float).T
        m = rot_t @ np.asarray(self.direction, dtype=float) @ np.diag(self.spacing)
        c = rot_t @ (np.asarray(self.origin, dtype=float) - np.asarray(self.translation, dtype=float))
        return m, c

    def anatomy_to_world(self, point) -> np.ndarray:
        return np.asarray(self.rotation, dtype=float) @ np.asarray(point, dtype=float) + np.asarray(self.translation)


@dataclass
class Raster:
    """Rasterised scene on the grid, ``[k, j, i]``.

    ``top`` holds the topmost fully covering layer of pure voxels; mixed voxels (flat indices
    ``mixed``, sorted) carry their sub-sample layers in ``sub_layers`` (n_mixed, n_sub).
    """

    shape: tuple[int, int, int]
    top: np.ndarray
    mixed: np.ndarray
    sub_layers: np.ndarray

    def layer_values(self, table: np.ndarray) -> np.ndarray:
        """Per-voxel mean of a per-layer value table (float32 volume): partial-volume averaging."""
        table = np.asarray(table, dtype=F32)
        out = table[self.top]
        if self.mixed.size:
            out.ravel()[self.mixed] = table[self.sub_layers].mean(axis=1)
        return out

    def labels(self, layer_labels: np.ndarray) -> np.ndarray:
        """Annotator labelmap (uint8): the labelled structure filling more than half of a voxel's
        sub-samples (an odd number, so at most one does). Structures that touch inside a voxel fill it
        together, so one of them usually gets it and they stay touching."""
        layer_labels = np.asarray(layer_labels, dtype=np.uint8)
        out = layer_labels[self.top]
        if self.mixed.size:
            n_sub = self.sub_layers.shape[1]
            chosen = np.zeros(self.mixed.size, dtype=np.uint8)
            for start in range(0, self.mixed.size, 65536):
                sub = layer_labels[self.sub_layers[start:start + 65536]]
                best = np.zeros(sub.shape[0], dtype=np.int32)
                pick = np.zeros(sub.shape[0], dtype=np.uint8)
                for value in np.unique(sub):
                    if value == 0:
                        continue
                    count = (sub == value).sum(axis=1, dtype=np.int32)
                    better = count > best
                    best = np.where(better, count, best)
                    pick = np.where(better, value, pick)
                chosen[start:start + 65536] = np.where(2 * best >= n_sub, pick, 0)
            out.ravel()[self.mixed] = chosen
        return out

    def layer_fill(self, n_layers: int) -> np.ndarray:
        """Filled volume of each layer in voxels (float64; mixed voxels counted by their sub-samples)."""
        pure = np.bincount(self.top.ravel(), minlength=n_layers).astype(np.float64)
        if self.mixed.size:
            pure -= np.bincount(self.top.ravel()[self.mixed], minlength=n_layers)
            pure += np.bincount(self.sub_layers.ravel(), minlength=n_layers) / self.sub_layers.shape[1]
        return pure


def block_shape(spacing) -> tuple[int, int, int]:
    """Block size (bk, bj, bi) in voxels: about 2.5 mm a side and at least 2 voxels (neighbour
    differences need two)."""
    dx, dy, dz = spacing
    return tuple(max(2, int(round(2.5 / d))) for d in (dz, dy, dx))


def sub_samples(spacing) -> int:
    """Sub-samples per mixed voxel: an odd number (no ties in the half-filled test), 9 for thin
    slices and about one per 0.3 mm of slice thickness for thick ones."""
    dz = spacing[2]
    return 2 * max(4, 2 * int(round(dz / 0.6))) + 1


def sub_offsets(n: int) -> np.ndarray:
    """``n`` well-spread points in the voxel (fractional index offsets in [-0.5, 0.5), (n, 3) float32):
    the R3 low-discrepancy sequence, whose projection on every axis is evenly stratified."""
    g = 1.2207440846057596  # root of x^4 = x + 1
    alpha = np.array([1 / g, 1 / g ** 2, 1 / g ** 3])
    return (((0.5 + np.arange(1, n + 1)[:, None] * alpha) % 1.0) - 0.5).astype(F32)


class _Blocks:
    """Blocked layout: volume ``[k, j, i]`` padded to whole blocks, stored as (n_blocks, block voxels)."""

    def __init__(self, grid: Grid, block):
        self.grid = grid
        self.bk, self.bj, self.bi = block
        nx, ny, nz = grid.size
        self.nbk, self.nbj, self.nbi = -(-nz // self.bk), -(-ny // self.bj), -(-nx // self.bi)
        self.n_blocks = self.nbk * self.nbj * self.nbi
        self.nvb = self.bk * self.bj * self.bi
        lk, lj, li = np.meshgrid(np.arange(self.bk), np.arange(self.bj), np.arange(self.bi), indexing="ij")
        self.local = np.stack([li.ravel(), lj.ravel(), lk.ravel()], axis=1).astype(F32)  # (nvb, 3) i, j, k
        self.m, self.c = grid.index_to_anatomy()
        dx, dy, dz = grid.spacing
        self.voxel_reach = 0.5 * float(np.sqrt(dx * dx + dy * dy + dz * dz))
        self.block_reach = 0.5 * float(np.sqrt(((self.bi - 1) * dx) ** 2 + ((self.bj - 1) * dy) ** 2
                                               + ((self.bk - 1) * dz) ** 2))

    def block_range(self, lo, hi):
        """Block index ranges (k0, k1, j0, j1, i0, i1) covering an anatomy box, or None."""
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        m_inv = np.linalg.inv(self.m)
        idx = (corners - self.c) @ m_inv.T
        i0, j0, k0 = np.floor(idx.min(axis=0)) - 1
        i1, j1, k1 = np.ceil(idx.max(axis=0)) + 1
        nx, ny, nz = self.grid.size
        i0, i1 = max(int(i0), 0), min(int(i1), nx - 1)
        j0, j1 = max(int(j0), 0), min(int(j1), ny - 1)
        k0, k1 = max(int(k0), 0), min(int(k1), nz - 1)
        if i0 > i1 or j0 > j1 or k0 > k1:
            return None
        return (k0 // self.bk, k1 // self.bk + 1, j0 // self.bj, j1 // self.bj + 1, i0 // self.bi, i1 // self.bi + 1)

    def points(self, ijk: np.ndarray):
        """Anatomy coordinates (x, y, z float32 arrays) of fractional voxel indices ``ijk`` (..., 3)."""
        m = self.m.astype(F32)
        c = self.c.astype(F32)
        return tuple(ijk[..., 0] * m[r, 0] + ijk[..., 1] * m[r, 1] + ijk[..., 2] * m[r, 2] + c[r] for r in range(3))

    def block_origin(self, ids: np.ndarray) -> np.ndarray:
        """Voxel index (i, j, k) of the first voxel of each block (float32, (n, 3))."""
        bk, rest = np.divmod(ids, self.nbj * self.nbi)
        bj, bi = np.divmod(rest, self.nbi)
        return np.stack([bi * self.bi, bj * self.bj, bk * self.bk], axis=1).astype(F32)

    def flat_to_ijk(self, flat: np.ndarray) -> np.ndarray:
        ids, local = np.divmod(flat, self.nvb)
        return self.block_origin(ids) + self.local[local]

    def to_volume(self, blocked: np.ndarray) -> np.ndarray:
        nx, ny, nz = self.grid.size
        v = blocked.reshape(self.nbk, self.nbj, self.nbi, self.bk, self.bj, self.bi).transpose(0, 3, 1, 4, 2, 5)
        return np.ascontiguousarray(v.reshape(self.nbk * self.bk, self.nbj * self.bj, self.nbi * self.bi)[:nz, :ny, :nx])

    def ijk_to_volume_index(self, ijk: np.ndarray) -> np.ndarray:
        ijk = ijk.astype(np.int64)
        nx, ny, _ = self.grid.size
        return (ijk[:, 2] * ny + ijk[:, 1]) * nx + ijk[:, 0]


def _support(d: np.ndarray) -> np.ndarray:
    """Largest change of ``d`` from a voxel centre to its boundary, from the differences to its
    neighbours (n, bk, bj, bi): half the sum over axes of the larger one-sided difference (so a kink
    such as the middle of a thin plate still counts), with 10% margin."""
    reach = np.zeros(d.shape, dtype=F32)
    for axis in (1, 2, 3):
        diff = np.abs(np.diff(d, axis=axis))
        g = np.zeros(d.shape, dtype=F32)
        lead = [slice(None)] * 4
        trail = [slice(None)] * 4
        lead[axis], trail[axis] = slice(0, -1), slice(1, None)
        g[tuple(lead)] = diff
        np.maximum(g[tuple(trail)], diff, out=g[tuple(trail)])
        reach += g
    reach *= F32(0.55)
    reach += F32(0.01)
    return reach


def _groups(layers: list[Layer]) -> list[tuple[Shape, list[tuple[int, float]]]]:
    """Consecutive layers that are offsets of one shape (``Offset(s, a)`` or ``s`` itself), so the
    shape is evaluated once for all of them: [(shape, [(layer index, offset mm), ...]), ...]."""
    groups: list[tuple[Shape, list[tuple[int, float]]]] = []
    for index, layer in enumerate(layers[1:], start=1):
        base, amount = (layer.shape.shape, float(layer.shape.amount)) if isinstance(layer.shape, Offset) \
            else (layer.shape, 0.0)
        if groups and groups[-1][0] is base:
            groups[-1][1].append((index, amount))
        else:
            groups.append((base, [(index, amount)]))
    return groups


def rasterise(layers: list[Layer], grid: Grid, sub=None, safety: float = 1.25, profile: dict | None = None) -> Raster:
    """Rasterise ``layers`` (painter's order; index 0 is whatever fills the rest, e.g. air) on ``grid``.

    ``sub`` sub-samples per mixed voxel (odd), by default from :func:`sub_samples`. ``profile``, when
    given, receives seconds spent per group of layers (named by its first layer).
    """
    if len(layers) > 255:
        raise ValueError("at most 255 layers")
    blocks = _Blocks(grid, block_shape(grid.spacing))
    sub = sub or sub_samples(grid.spacing)
    top = np.zeros((blocks.n_blocks, blocks.nvb), dtype=np.uint8)
    mixed = np.zeros((blocks.n_blocks, blocks.nvb), dtype=bool)
    settle = F32(safety * (blocks.block_reach + blocks.voxel_reach) + 0.05)
    centre_offset = np.array([(blocks.bi - 1) / 2, (blocks.bj - 1) / 2, (blocks.bk - 1) / 2], dtype=F32)
    bands: list[np.ndarray | None] = [None] * len(layers)
    groups = _groups(layers)
    clock = time.perf_counter

    def spent(name, since):
        if profile is not None:
            profile[name] = profile.get(name, 0.0) + clock() - since

    for shape, members in groups:
        t0 = clock()
        lo = np.min([layers[i].shape.lo for i, _ in members], axis=0)
        hi = np.max([layers[i].shape.hi for i, _ in members], axis=0)
        rng = blocks.block_range(lo, hi)
        if rng is None:
            continue
        k0, k1, j0, j1, i0, i1 = rng
        bk, bj, bi = np.meshgrid(np.arange(k0, k1), np.arange(j0, j1), np.arange(i0, i1), indexing="ij")
        ids = ((bk * blocks.nbj + bj) * blocks.nbi + bi).ravel()
        d = shape(*blocks.points(blocks.block_origin(ids) + centre_offset))
        amounts = np.array([a for _, a in members], dtype=F32)
        near = np.abs(d[:, None] - amounts[None, :]) <= settle
        any_near = near.any(axis=1)
        partial = ids[any_near]
        near = near[any_near]
        dv_all = np.empty((partial.size, blocks.nvb), dtype=F32)
        reach_all = np.empty((partial.size, blocks.nvb), dtype=F32)
        for start in range(0, partial.size, 4096):
            chunk = partial[start:start + 4096]
            ijk = blocks.block_origin(chunk)[:, None, :] + blocks.local[None, :, :]
            dv = shape(*blocks.points(ijk))
            dv_all[start:start + 4096] = dv
            reach_all[start:start + 4096] = _support(dv.reshape(-1, blocks.bk, blocks.bj, blocks.bi)).reshape(dv.shape)
        for column, (index, amount) in enumerate(members):
            a = F32(amount)
            full = ids[d - a < -settle]
            top[full] = index
            mixed[full] = False
            rows = np.flatnonzero(near[:, column])
            if rows.size == 0:
                continue
            chunk = partial[rows]
            dv = dv_all[rows] - a
            reach = reach_all[rows]
            inside = dv < -reach
            band = np.abs(dv) <= reach
            t = top[chunk]
            t[inside] = index
            top[chunk] = t
            m = mixed[chunk]
            m &= ~inside
            m |= band
            mixed[chunk] = m
            bands[index] = (chunk[:, None] * blocks.nvb + np.arange(blocks.nvb))[band]
        spent(layers[members[0][0]].name, t0)

    top_flat = top.ravel()
    mixed_flat = mixed.ravel()
    mixed_idx = np.flatnonzero(mixed_flat)
    offsets = sub_offsets(sub)
    n_sub = offsets.shape[0]
    sub_layers = np.repeat(top_flat[mixed_idx][:, None], n_sub, axis=1)
    mixed_ijk = blocks.flat_to_ijk(mixed_idx)
    step = max(1, 262144 // n_sub)
    for shape, members in groups:
        t0 = clock()
        keeps = []
        for index, _ in members:
            band = bands[index]
            keeps.append(np.zeros(0, np.int64) if band is None else band[mixed_flat[band] & (top_flat[band] < index)])
        union = np.unique(np.concatenate(keeps)) if len(keeps) > 1 else keeps[0]
        if union.size == 0:
            continue
        pos = np.searchsorted(mixed_idx, union)
        for start in range(0, union.size, step):
            p = pos[start:start + step]
            ids = union[start:start + step]
            ijk = mixed_ijk[p][:, None, :] + offsets[None, :, :]
            ds = shape(*blocks.points(ijk))
            for (index, amount), keep in zip(members, keeps):
                rows = np.flatnonzero(np.isin(ids, keep, assume_unique=True)) if len(members) > 1 else slice(None)
                pr = p[rows]
                sub_layers[pr] = np.where(ds[rows] < F32(amount), np.uint8(index), sub_layers[pr])
        spent(layers[members[0][0]].name, t0)

    volume_top = blocks.to_volume(top)
    volume_mixed = blocks.ijk_to_volume_index(mixed_ijk)
    order = np.argsort(volume_mixed, kind="stable")
    nx, ny, nz = grid.size
    ijk = mixed_ijk
    inside_grid = (ijk[:, 0] < nx) & (ijk[:, 1] < ny) & (ijk[:, 2] < nz)
    order = order[inside_grid[order]]
    return Raster(shape=(nz, ny, nx), top=volume_top, mixed=volume_mixed[order], sub_layers=sub_layers[order])
