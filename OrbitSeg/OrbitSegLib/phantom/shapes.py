"""Implicit shapes: signed distances in mm (negative inside) with bounding boxes, float32 throughout.

Every shape is a callable ``shape(x, y, z) -> d`` taking three float32 arrays of one shape (anatomy
frame, mm: x to the patient's left, y posterior, z superior) and returning float32 distances of that
shape. Distances are exact or close to exact near the surface and never much larger than the true
distance further away (the renderer relies on that to skip whole blocks of voxels). ``lo``/``hi``
bound the inside of the shape (mm); the renderer only evaluates a shape inside its box.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

F32 = np.float32
EPS = F32(1e-6)


class Shape:
    """Base class: a signed-distance function with an axis-aligned bounding box ``lo``..``hi`` (mm)."""

    lo: np.ndarray
    hi: np.ndarray

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _set_box(self, lo, hi) -> None:
        self.lo = np.asarray(lo, dtype=float)
        self.hi = np.asarray(hi, dtype=float)


def _box_intersection(shapes) -> tuple[np.ndarray, np.ndarray]:
    lo = np.max([s.lo for s in shapes], axis=0)
    hi = np.min([s.hi for s in shapes], axis=0)
    return lo, np.maximum(hi, lo)


LAZY_CUTOFF = F32(8.0)


def lazy_max(x, y, z, fns) -> np.ndarray:
    """Maximum of several distance functions (an intersection), evaluating each function only where the
    running maximum is below :data:`LAZY_CUTOFF` mm. Elsewhere the result is a lower bound that is
    itself beyond the cut-off, which is all the renderer needs there (the point is far outside)."""
    d = fns[0](x, y, z)
    for fn in fns[1:]:
        near = d < LAZY_CUTOFF
        count = int(np.count_nonzero(near))
        if count == near.size:
            np.maximum(d, fn(x, y, z), out=d)
        elif count:
            d[near] = np.maximum(d[near], fn(x[near], y[near], z[near]))
    return d


class Intersection(Shape):
    """Points inside every child (lazily evaluated, see :func:`lazy_max`); ``box`` optionally tightens
    the bounding box further."""

    def __init__(self, *children: Shape, box=None):
        self.children = children
        lo, hi = _box_intersection(children)
        if box is not None:
            lo, hi = np.maximum(lo, box[0]), np.minimum(hi, box[1])
        self._set_box(lo, np.maximum(hi, lo))

    def __call__(self, x, y, z):
        return lazy_max(x, y, z, self.children)


class Union(Shape):
    """Points inside any child."""

    def __init__(self, *children: Shape):
        self.children = children
        self._set_box(np.min([c.lo for c in children], axis=0), np.max([c.hi for c in children], axis=0))

    def __call__(self, x, y, z):
        d = self.children[0](x, y, z)
        for child in self.children[1:]:
            np.minimum(d, child(x, y, z), out=d)
        return d


class Offset(Shape):
    """The shape grown by ``amount`` mm (shrunk when negative)."""

    def __init__(self, shape: Shape, amount: float):
        self.shape, self.amount = shape, F32(amount)
        grow = max(float(amount), 0.0)
        self._set_box(shape.lo - grow, shape.hi + grow)

    def __call__(self, x, y, z):
        d = self.shape(x, y, z)
        d -= self.amount
        return d


class Function(Shape):
    """Any function ``f(x, y, z) -> d`` with a given box (used for anatomy-specific composites)."""

    def __init__(self, fn, lo, hi):
        self.fn = fn
        self._set_box(lo, hi)

    def __call__(self, x, y, z):
        return self.fn(x, y, z).astype(F32, copy=False)


class Slab(Shape):
    """Points within ``thickness/2`` mm of the plane ``normal · p = offset``, inside an optional box."""

    def __init__(self, normal, offset: float, thickness: float, lo=(-1e4,) * 3, hi=(1e4,) * 3):
        n = np.asarray(normal, dtype=float)
        length = np.linalg.norm(n)
        self.n = (n / length).astype(F32)
        self.offset = F32(offset / length)
        self.half = F32(thickness / 2)
        self._set_box(lo, hi)

    def __call__(self, x, y, z):
        n = self.n
        return np.abs(x * n[0] + y * n[1] + z * n[2] - self.offset) - self.half


def _local(x, y, z, centre, rotation):
    """Coordinates of points in a frame with origin ``centre`` and axes = columns of ``rotation``."""
    dx, dy, dz = x - F32(centre[0]), y - F32(centre[1]), z - F32(centre[2])
    r = rotation.astype(F32)
    return (dx * r[0, 0] + dy * r[1, 0] + dz * r[2, 0],
            dx * r[0, 1] + dy * r[1, 1] + dz * r[2, 1],
            dx * r[0, 2] + dy * r[1, 2] + dz * r[2, 2])


def _rotated_box(centre, rotation, half_extent):
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    points = (corners * np.asarray(half_extent, dtype=float)) @ np.asarray(rotation, dtype=float).T
    points += np.asarray(centre, dtype=float)
    return points.min(axis=0), points.max(axis=0)


class Ellipsoid(Shape):
    """Ellipsoid with semi-axes ``radii`` along the columns of ``rotation`` (default: x, y, z).

    Uses the first-order distance estimate k0 (k0 - 1) / k1, exact on the axes and near the surface.
    """

    def __init__(self, centre, radii, rotation=None):
        self.centre = np.asarray(centre, dtype=float)
        self.radii = np.asarray(radii, dtype=float)
        self.rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
        self._set_box(*_rotated_box(self.centre, self.rotation, self.radii))

    def __call__(self, x, y, z):
        a, b, c = _local(x, y, z, self.centre, self.rotation)
        ra, rb, rc = (F32(r) for r in self.radii)
        k0 = np.sqrt((a / ra) ** 2 + (b / rb) ** 2 + (c / rc) ** 2)
        k1 = np.sqrt((a / (ra * ra)) ** 2 + (b / (rb * rb)) ** 2 + (c / (rc * rc)) ** 2)
        d = k0 * (k0 - 1) / np.maximum(k1, EPS)
        inner = k0 < F32(0.05)
        if inner.any():
            d[inner] = -F32(self.radii.min())
        return d


class RoundedBox(Shape):
    """Box with half-sizes ``half`` (along the rotation's columns) and edges rounded by ``radius``."""

    def __init__(self, centre, half, radius: float = 0.0, rotation=None):
        self.centre = np.asarray(centre, dtype=float)
        self.half = np.asarray(half, dtype=float)
        self.radius = float(min(radius, self.half.min()))
        self.rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
        self._set_box(*_rotated_box(self.centre, self.rotation, self.half))

    def __call__(self, x, y, z):
        a, b, c = _local(x, y, z, self.centre, self.rotation)
        r = F32(self.radius)
        qa = np.abs(a) - F32(self.half[0] - self.radius)
        qb = np.abs(b) - F32(self.half[1] - self.radius)
        qc = np.abs(c) - F32(self.half[2] - self.radius)
        outside = np.sqrt(np.maximum(qa, 0) ** 2 + np.maximum(qb, 0) ** 2 + np.maximum(qc, 0) ** 2)
        inside = np.minimum(np.maximum(np.maximum(qa, qb), qc), 0)
        return outside + inside - r


def smooth_max(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth maximum of two distances (rounds the intersection edge by about ``k`` mm)."""
    if k <= 0:
        return np.maximum(a, b)
    k = F32(k)
    h = np.maximum(k - np.abs(a - b), 0) / k
    return np.maximum(a, b) + h * h * k * F32(0.25)


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (a rounded union)."""
    return -smooth_max(-a, -b, k)


def rounded_intersection(distances: list[np.ndarray], radius) -> np.ndarray:
    """Intersection of half-space-like distances with convex edges rounded by ``radius`` (mm, scalar or array).

    Exact for perpendicular planes: ``|max(d_i + r, 0)| + min(max_i(d_i + r), 0) - r``.
    """
    radius = np.asarray(radius, dtype=F32)
    squares = None
    largest = None
    for d in distances:
        shifted = d + radius
        pos = np.maximum(shifted, 0)
        squares = pos * pos if squares is None else squares + pos * pos
        largest = shifted if largest is None else np.maximum(largest, shifted)
    return np.sqrt(squares) + np.minimum(largest, 0) - radius


class HeightField:
    """A surface ``c = h(a, b)`` tabulated on a regular grid, with bilinear look-up (float32).

    ``axes`` names which anatomy axes are (a, b, c), e.g. ``(0, 2, 1)`` for y = h(x, z). Values outside
    the table are clamped to its edge.
    """

    def __init__(self, table: np.ndarray, a0: float, b0: float, step: float, axes=(0, 2, 1)):
        self.table = np.ascontiguousarray(table, dtype=F32)
        self.a0, self.b0, self.step = float(a0), float(b0), float(step)
        self.axes = axes
        gb, ga = np.gradient(self.table.astype(np.float64), step)
        self.norm = (1.0 / np.sqrt(1.0 + ga ** 2 + gb ** 2)).astype(F32)

    def lookup(self, a: np.ndarray, b: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
        """Bilinear value of ``table`` (default: the heights) at (a, b)."""
        table = self.table if table is None else table
        inv = F32(1.0 / self.step)
        coords = [((b - F32(self.b0)) * inv).ravel(), ((a - F32(self.a0)) * inv).ravel()]
        out = ndimage.map_coordinates(table, coords, order=1, mode="nearest", output=F32)
        return out.reshape(np.shape(a))

    def distance(self, x, y, z, above: bool) -> np.ndarray:
        """Approximate signed distance to the surface; inside is ``c > h`` when ``above`` else ``c < h``."""
        coords = (x, y, z)
        a, b, c = (coords[i] for i in self.axes)
        d = (self.lookup(a, b) - c) * self.lookup(a, b, self.norm)
        return d if above else -d


def tabulate(fn, a_range, b_range, step: float) -> tuple[np.ndarray, float, float]:
    """Sample ``fn(a, b)`` (float64 arrays) on a grid; returns (table[b, a] float32, a0, b0)."""
    a = np.arange(a_range[0], a_range[1] + step / 2, step)
    b = np.arange(b_range[0], b_range[1] + step / 2, step)
    aa, bb = np.meshgrid(a, b)
    return np.asarray(fn(aa, bb), dtype=F32), float(a[0]), float(b[0])


class Tube(Shape):
    """A tube swept along a polyline with an elliptical cross-section that varies along it.

    ``points`` (K, 3) centre line; ``thick`` (K,) full axis along ``thin_dirs`` (K, 3), ``wide`` (K,) full
    axis across it (both mm). Between nodes everything is interpolated linearly. The ends are cut flat.
    """

    CHUNK = 2048

    def __init__(self, points, thick, wide, thin_dirs=None):
        p = np.asarray(points, dtype=float)
        self.p = p
        seg = p[1:] - p[:-1]
        self.seglen = np.linalg.norm(seg, axis=1)
        keep = self.seglen > 1e-6
        if not keep.all():
            idx = np.concatenate([[0], np.flatnonzero(keep) + 1])
            p = p[idx]
            thick, wide = np.asarray(thick)[idx], np.asarray(wide)[idx]
            thin_dirs = None if thin_dirs is None else np.asarray(thin_dirs)[idx]
            self.p = p
            seg = p[1:] - p[:-1]
            self.seglen = np.linalg.norm(seg, axis=1)
        self.tangent = seg / self.seglen[:, None]
        self.thick = np.asarray(thick, dtype=float)
        self.wide = np.asarray(wide, dtype=float)
        if thin_dirs is None:
            tangents = np.vstack([self.tangent, self.tangent[-1:]])
            helper = np.where(np.abs(tangents[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]])
            thin_dirs = np.cross(helper, tangents)
            thin_dirs /= np.linalg.norm(thin_dirs, axis=1, keepdims=True)
        self.thin = np.asarray(thin_dirs, dtype=float)
        reach = np.maximum(self.thick, self.wide) / 2
        self._set_box((p - reach[:, None]).min(axis=0), (p + reach[:, None]).max(axis=0))
        self.seg_lo = np.minimum(p[:-1], p[1:]) - np.maximum(reach[:-1], reach[1:])[:, None]
        self.seg_hi = np.maximum(p[:-1], p[1:]) + np.maximum(reach[:-1], reach[1:])[:, None]

    def length(self) -> float:
        return float(self.seglen.sum())

    def __call__(self, x, y, z):
        shape = x.shape
        x, y, z = x.ravel(), y.ravel(), z.ravel()
        out = np.empty(x.size, dtype=F32)
        for start in range(0, x.size, self.CHUNK):
            sl = slice(start, start + self.CHUNK)
            out[sl] = self._eval(x[sl], y[sl], z[sl])
        return out.reshape(shape)

    def _eval(self, x, y, z):
        lo = np.array([x.min(), y.min(), z.min()])
        hi = np.array([x.max(), y.max(), z.max()])
        margin = 12.0
        near = np.flatnonzero(((self.seg_lo - margin) <= hi).all(axis=1) & ((self.seg_hi + margin) >= lo).all(axis=1))
        if near.size == 0:
            near = np.arange(len(self.seglen))
        # Nearest segment of every point, all candidate segments at once: (points, segments).
        p = self.p[near].astype(F32)
        tan = self.tangent[near].astype(F32)
        length = self.seglen[near].astype(F32)
        dx, dy, dz = x[:, None] - p[:, 0], y[:, None] - p[:, 1], z[:, None] - p[:, 2]
        t = (dx * tan[:, 0] + dy * tan[:, 1] + dz * tan[:, 2]) / length
        tc = np.clip(t, 0, 1) * length
        dx -= tc * tan[:, 0]
        dy -= tc * tan[:, 1]
        dz -= tc * tan[:, 2]
        d2 = dx * dx + dy * dy + dz * dz
        column = np.argmin(d2, axis=1)
        rows = np.arange(x.size)
        best_k = near[column].astype(np.int32)
        best_t = t[rows, column]
        k = best_k
        t = best_t
        tcl = np.clip(t, 0, 1)
        P = self.p.astype(F32)
        T = self.tangent.astype(F32)
        L = self.seglen.astype(F32)[k]
        tan = T[k]
        cx = P[k, 0] + tcl * L * tan[:, 0]
        cy = P[k, 1] + tcl * L * tan[:, 1]
        cz = P[k, 2] + tcl * L * tan[:, 2]
        rx, ry, rz = x - cx, y - cy, z - cz
        axial = rx * tan[:, 0] + ry * tan[:, 1] + rz * tan[:, 2]
        rx, ry, rz = rx - axial * tan[:, 0], ry - axial * tan[:, 1], rz - axial * tan[:, 2]
        thin = self.thin.astype(F32)
        n1 = thin[k] * (1 - tcl)[:, None] + thin[k + 1] * tcl[:, None]
        n1 -= (n1 * tan).sum(axis=1, keepdims=True) * tan
        n1 /= np.maximum(np.linalg.norm(n1, axis=1, keepdims=True), EPS)
        n2 = np.cross(tan, n1)
        q1 = rx * n1[:, 0] + ry * n1[:, 1] + rz * n1[:, 2]
        q2 = rx * n2[:, 0] + ry * n2[:, 1] + rz * n2[:, 2]
        th = self.thick.astype(F32)
        wd = self.wide.astype(F32)
        A = np.maximum((th[k] * (1 - tcl) + th[k + 1] * tcl) * F32(0.5), F32(0.05))
        B = np.maximum((wd[k] * (1 - tcl) + wd[k + 1] * tcl) * F32(0.5), F32(0.05))
        d_cs = self._section(q1, q2, A, B)
        last = len(self.seglen) - 1
        over = np.full(x.size, F32(-1e3))
        first_seg = k == 0
        over = np.where(first_seg & (t < 0), -t * L, over)
        over = np.where((k == last) & (t > 1), (t - 1) * L, over)
        return (np.minimum(np.maximum(d_cs, over), 0)
                + np.sqrt(np.maximum(d_cs, 0) ** 2 + np.maximum(over, 0) ** 2)).astype(F32)


    @staticmethod
    def _section(q1, q2, A, B):
        """Distance to the cross-section (half-axes A along the thin axis, B across) at in-plane
        coordinates (q1, q2): an ellipse (first-order estimate, exact on the axes)."""
        k0 = np.sqrt((q1 / A) ** 2 + (q2 / B) ** 2)
        k1 = np.sqrt((q1 / (A * A)) ** 2 + (q2 / (B * B)) ** 2)
        return np.where(k0 > F32(0.05), k0 * (k0 - 1) / np.maximum(k1, EPS), -np.minimum(A, B))


class SuperTube(Tube):
    """A :class:`Tube` whose cross-section is a superellipse ``|q1/A|^n + |q2/B|^n = 1`` (``exponent`` n
    2: an ellipse; 3-4: the flat band with rounded edges of a rectus muscle in coronal section)."""

    def __init__(self, points, thick, wide, thin_dirs=None, exponent: float = 3.0):
        super().__init__(points, thick, wide, thin_dirs)
        self.exponent = float(exponent)

    def _section(self, q1, q2, A, B):
        return superellipse_distance(q1, q2, A, B, self.exponent)


def superellipse_distance(x, z, a, b, n: float) -> np.ndarray:
    """Approximate signed distance (mm) to the superellipse ``|x/a|^n + |z/b|^n = 1``: the first-order
    estimate (f - 1) / |grad f| of its degree-1 homogeneous norm f, bounded inside by the half-width."""
    n = F32(n)
    ax, az = np.abs(x) / a + EPS, np.abs(z) / b + EPS
    px, pz = ax ** (n - 1), az ** (n - 1)
    f = (px * ax + pz * az) ** (F32(1) / n)
    scale = f ** (F32(1) - n)
    grad = scale * np.sqrt((px / a) ** 2 + (pz / b) ** 2)
    d = (f - F32(1)) / np.maximum(grad, EPS)
    return np.maximum(d, -np.minimum(a, b)).astype(F32)


def smooth_curve(control: np.ndarray, n: int = 40) -> np.ndarray:
    """A centripetal Catmull-Rom curve through ``control`` points (M, 3), resampled to ``n`` points
    evenly spaced in arc length."""
    c = np.asarray(control, dtype=float)
    if len(c) == 2:
        return np.linspace(c[0], c[1], n)
    ext = np.vstack([2 * c[0] - c[1], c, 2 * c[-1] - c[-2]])
    p0, p1, p2, p3 = ext[:-3], ext[1:-2], ext[2:-1], ext[3:]
    knot = lambda a, b: np.linalg.norm(b - a, axis=1)[:, None] ** 0.5 + 1e-9  # noqa: E731
    t0 = np.zeros((len(p0), 1))
    t1 = t0 + knot(p0, p1)
    t2 = t1 + knot(p1, p2)
    t3 = t2 + knot(p2, p3)
    f = np.linspace(0, 1, 24, endpoint=False)[None, :, None]
    t = t1[:, None] + (t2 - t1)[:, None] * f
    T0, T1, T2, T3 = (v[:, None] for v in (t0, t1, t2, t3))
    P0, P1, P2, P3 = (v[:, None, :] for v in (p0, p1, p2, p3))
    a1 = (T1 - t) / (T1 - T0) * P0 + (t - T0) / (T1 - T0) * P1
    a2 = (T2 - t) / (T2 - T1) * P1 + (t - T1) / (T2 - T1) * P2
    a3 = (T3 - t) / (T3 - T2) * P2 + (t - T2) / (T3 - T2) * P3
    b1 = (T2 - t) / (T2 - T0) * a1 + (t - T0) / (T2 - T0) * a2
    b2 = (T3 - t) / (T3 - T1) * a2 + (t - T1) / (T3 - T1) * a3
    dense = ((T2 - t) / (T2 - T1) * b1 + (t - T1) / (T2 - T1) * b2).reshape(-1, 3)
    dense = np.vstack([dense, c[-1]])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    targets = np.linspace(0.0, arc[-1], n)
    return np.stack([np.interp(targets, arc, dense[:, i]) for i in range(3)], axis=1)
