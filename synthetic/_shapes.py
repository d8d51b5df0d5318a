"""Private: the shapes phantoms are drawn from (canonical frame, see :mod:`radserve.synthetic.phantoms`).

Anatomy is described in a canonical frame (units: half the short side of the visible field, x to the
right, y down) as polygons; a bone is a union of outlines with holes, cortex thickness and density.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class _Bone:
    polys: list[np.ndarray]  # union of outer outlines, canonical units
    holes: list[np.ndarray] = field(default_factory=list)
    cortex: float = 0.022  # cortex thickness, canonical units
    density: float = 1.0
    medulla: float = 0.55  # medullary level relative to the cortex peak
    texture: float = 0.4  # trabecular texture's contrast (0: homogeneous, as metal)


@dataclass(slots=True)
class _Scene:
    bones: list[_Bone]
    soft: list[np.ndarray]  # union = soft-tissue envelope
    soft_depth: float  # e-folding depth of soft-tissue thickness, canonical units
    lucent: list[tuple[np.ndarray, float]]  # air-containing regions and how much they remove
    half_extent: tuple[float, float]  # canonical half-size of what should fill the field
    view: str  # AP / PA / LATERAL
    paired: bool = True


def _rot(pts: np.ndarray, deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return pts @ np.array([[c, s], [-s, c]])


def _ellipse(cx: float, cy: float, rx: float, ry: float, ang: float = 0.0, n: int = 40) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    pts = np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)
    return _rot(pts, ang) + np.array([cx, cy])


def _smooth(pts: list[tuple[float, float]] | np.ndarray, iters: int = 3) -> np.ndarray:
    """Chaikin corner cutting of a closed polygon."""
    p = np.asarray(pts, dtype=np.float64)
    for _ in range(iters):
        q = np.roll(p, -1, axis=0)
        p = np.concatenate([0.75 * p + 0.25 * q, 0.25 * p + 0.75 * q], axis=1).reshape(-1, 2)
    return p


def _axis(p0, p1, bend: float = 0.0, m: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Points and unit normals of a quadratic Bezier axis from p0 to p1 bent sideways by bend*len."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    length = float(np.hypot(*d)) or 1e-6
    nrm = np.array([-d[1], d[0]]) / length
    c = (p0 + p1) / 2 + nrm * bend * length
    t = np.linspace(0.0, 1.0, m)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * c + t**2 * p1
    tan = 2 * (1 - t) * (c - p0) + 2 * t * (p1 - c)
    tan /= np.linalg.norm(tan, axis=1, keepdims=True) + 1e-12
    normals = np.stack([-tan[:, 1], tan[:, 0]], axis=1)
    return pts, normals


def _cap(center: np.ndarray, normal: np.ndarray, hw: float, outward: np.ndarray, flat: float, n: int = 9):
    """Half-ellipse joining center+normal*hw to center-normal*hw bulging along outward."""
    t = np.linspace(0.0, math.pi, n)[1:-1, None]
    return center + normal * hw * np.cos(t) + outward * hw * flat * np.sin(t)


def _segment(
    p0,
    p1,
    hw_fn,
    t0: float,
    t1: float,
    *,
    bend: float = 0.0,
    cap0: float = 0.7,
    cap1: float = 0.7,
    m: int = 20,
) -> np.ndarray:
    """Outline of the part t0..t1 of a tubular bone; cap=0 is a flat (physeal) end."""
    pts, nrm = _axis(p0, p1, bend, 64)
    ts = np.linspace(0.0, 1.0, 64)
    tt = np.linspace(t0, t1, m)
    px = np.interp(tt, ts, pts[:, 0])
    py = np.interp(tt, ts, pts[:, 1])
    nx = np.interp(tt, ts, nrm[:, 0])
    ny = np.interp(tt, ts, nrm[:, 1])
    axis = np.stack([px, py], 1)
    normals = np.stack([nx, ny], 1)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    hw = hw_fn(tt)[:, None]
    left = axis + normals * hw
    right = axis - normals * hw
    tan_end = axis[-1] - axis[-2]
    tan_end /= np.linalg.norm(tan_end) + 1e-12
    tan_start = axis[0] - axis[1]
    tan_start /= np.linalg.norm(tan_start) + 1e-12
    parts = [left]
    if cap1 > 0:
        parts.append(_cap(axis[-1], normals[-1], float(hw[-1, 0]), tan_end, cap1))
    parts.append(right[::-1])
    if cap0 > 0:
        parts.append(_cap(axis[0], -normals[0], float(hw[0, 0]), tan_start, cap0))
    return np.concatenate(parts, axis=0)


def _long_bone(
    p0,
    p1,
    w: float,
    *,
    flare0: float = 0.0,
    flare1: float = 0.0,
    flen: float = 0.16,
    bend: float = 0.0,
    epi0: float = 0.0,
    epi1: float = 0.0,
    gap: float = 0.0,
    cap0: float = 0.7,
    cap1: float = 0.7,
    cortex: float = 0.022,
    density: float = 1.0,
    medulla: float = 0.5,
    epi_medulla: float = 0.85,
) -> list[_Bone]:
    """A tubular bone p0->p1 (width w, flared ends); with gap > 0 the epiphyses (epi0/epi1 of the
    length) are separate ossicles behind a physeal gap, as in a child."""
    length = float(np.hypot(p1[0] - p0[0], p1[1] - p0[1])) or 1e-6

    def hw(t):
        return 0.5 * w * (1 + flare0 * np.exp(-((t / flen) ** 2)) + flare1 * np.exp(-(((1 - t) / flen) ** 2)))

    g = gap / length
    s0 = epi0 + g if (epi0 > 0 and gap > 0) else 0.0
    s1 = 1 - epi1 - g if (epi1 > 0 and gap > 0) else 1.0
    out = [
        _Bone(
            [
                _segment(
                    p0,
                    p1,
                    hw,
                    s0,
                    s1,
                    bend=bend,
                    cap0=cap0 if s0 == 0 else 0.08,
                    cap1=cap1 if s1 == 1 else 0.08,
                )
            ],
            cortex=cortex,
            density=density,
            medulla=medulla,
        )
    ]
    ecort = cortex * 0.6
    if s0 > 0:
        out.append(
            _Bone(
                [_segment(p0, p1, lambda t: hw(t) * 0.92, 0.0, epi0, bend=bend, cap0=cap0, cap1=0.15)],
                cortex=ecort,
                density=density,
                medulla=epi_medulla,
            )
        )
    if s1 < 1:
        out.append(
            _Bone(
                [_segment(p0, p1, lambda t: hw(t) * 0.92, 1 - epi1, 1.0, bend=bend, cap0=0.15, cap1=cap1)],
                cortex=ecort,
                density=density,
                medulla=epi_medulla,
            )
        )
    return out


def _capsule(p0, p1, w0: float, w1: float | None = None, bend: float = 0.0) -> np.ndarray:
    w1 = w0 if w1 is None else w1
    return _segment(p0, p1, lambda t: 0.5 * (w0 + (w1 - w0) * t), 0.0, 1.0, bend=bend, cap0=1.0, cap1=1.0)


def _mirror(pts: np.ndarray) -> np.ndarray:
    return pts * (-1.0, 1.0)
