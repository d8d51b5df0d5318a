"""Private: procedural projection-radiograph phantoms used by :mod:`radserve.synthetic.dataset`.

Anatomy is described in a canonical frame (units: half the short side of the visible field,
x to the right, y down, a right-sided limb shown as on a radiograph) as polygons. Bones are
rendered as path-length-like profiles (bright cortex rim, textured medulla), summed so that
overlaps get brighter; a soft-tissue envelope and air-filled regions (lungs, bowel gas) are
added; then exposure, collimation, lead marker, blur, border and quantum noise.
Everything is drawn at a working resolution and upsampled; noise is added at full size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import cv2
import numpy as np

__all__ = ["RenderInfo", "render"]

_WORK_LONG_SIDE = 640  # working-resolution long side, pixels
_SHIFT = 4  # cv2 sub-pixel bits for polygon drawing
_GAUSS_LUT = None  # lazily built uint8 -> N(0, 1) quantile table


# --------------------------------------------------------------------------- shapes


@dataclass(slots=True)
class _Bone:
    polys: list[np.ndarray]  # union of outer outlines, canonical units
    holes: list[np.ndarray] = field(default_factory=list)
    cortex: float = 0.022  # cortex thickness, canonical units
    density: float = 1.0
    medulla: float = 0.55  # medullary level relative to the cortex peak


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


# --------------------------------------------------------------------------- regions


def _hand(rng: np.random.Generator, age: float) -> _Scene:
    j = lambda s=0.012: float(rng.normal(0.0, s))  # noqa: E731
    child = age < 0.85
    gap = (0.012 + 0.02 * (1 - age)) if child else 0.0
    bones: list[_Bone] = []
    soft: list[np.ndarray] = []
    # distal forearm
    bones += _long_bone(
        (-0.12, 1.7), (-0.09 + j(), 0.62), 0.17, flare1=0.55, epi1=0.05, gap=gap, cap1=0.35, cortex=0.024
    )
    bones += _long_bone(
        (0.17, 1.7), (0.15 + j(), 0.66), 0.1, flare1=0.3, epi1=0.04, gap=gap, cap1=0.5, cortex=0.02
    )
    soft.append(_capsule((0.02, 1.8), (0.02, 0.45), 0.62, 0.6))
    # carpals in ossification order; a young child has only a few, smaller ones
    carpals = [
        (0.0, 0.37, 0.065, 0.085, 10),
        (0.11, 0.38, 0.06, 0.075, -15),
        (0.1, 0.48, 0.05, 0.055, 0),
        (-0.01, 0.5, 0.055, 0.055, 0),
        (-0.21, 0.36, 0.055, 0.05, 30),
        (-0.11, 0.37, 0.045, 0.05, 0),
        (-0.13, 0.5, 0.045, 0.075, 55),
        (0.14, 0.45, 0.035, 0.035, 0),
    ]
    n_carpals = int(np.clip(round(1.5 + age * 8), 1, 8))
    size = 0.55 + 0.45 * min(1.0, age * 1.3)
    for cx, cy, rx, ry, a in carpals[:n_carpals]:
        bones.append(
            _Bone(
                [_ellipse(cx + j(0.006), cy + j(0.006), rx * size, ry * size, a + j(5))],
                cortex=0.014,
                medulla=0.85,
            )
        )
    # rays: thumb + four fingers (angles in degrees from vertical, positive = towards +x)
    spread = rng.uniform(0.6, 1.5)
    bases = [(-0.22, 0.33), (-0.1, 0.3), (0.0, 0.29), (0.1, 0.3), (0.19, 0.32)]
    angles = [-40.0 * rng.uniform(0.8, 1.2), -9 * spread, -2 * spread, 6 * spread, 14 * spread]
    mc_len = [0.27, 0.42, 0.4, 0.36, 0.33]
    phal = [(0.2, 0.0, 0.15), (0.27, 0.17, 0.12), (0.3, 0.2, 0.13), (0.28, 0.18, 0.12), (0.23, 0.14, 0.11)]
    widths = [0.08, 0.072, 0.075, 0.068, 0.064]
    palm_pts: list[np.ndarray] = [
        np.array(pt) for pt in ((-0.22, 0.5), (0.22, 0.5), (0.25, 0.42), (-0.25, 0.42))
    ]
    for k in range(5):
        a = math.radians(angles[k] + j(2.5))
        d = np.array([math.sin(a), -math.cos(a)])
        p = np.array(bases[k]) + np.array([j(0.008), j(0.008)])
        w = widths[k] * rng.uniform(0.9, 1.1)
        start = p.copy()
        # metacarpal: thumb epiphysis is proximal, fingers' distal
        q = p + d * mc_len[k] * rng.uniform(0.93, 1.07)
        if k == 0:
            bones += _long_bone(p, q, w, flare0=0.35, flare1=0.45, epi0=0.1, gap=gap, cortex=0.017)
        else:
            bones += _long_bone(p, q, w, flare0=0.35, flare1=0.5, epi1=0.12, gap=gap, cortex=0.017)
            palm_pts += [p, q]
        p = q + d * (0.03 + gap * 0.5)
        for ph_len in phal[k]:
            if ph_len <= 0:
                continue
            a += math.radians(j(3))
            d = np.array([math.sin(a), -math.cos(a)])
            q = p + d * ph_len * rng.uniform(0.93, 1.07)
            w *= 0.85
            bones += _long_bone(
                p, q, w, flare0=0.4, flare1=0.3, epi0=0.1, gap=gap * 0.8, cortex=0.014, cap1=0.5
            )
            p = q + d * 0.028
        tip = p + d * 0.04
        soft.append(_capsule(start, tip, 0.17 if k == 0 else 0.16, 0.12))
    pp = np.asarray(palm_pts)
    hull = cv2.convexHull(pp.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    centre = hull.mean(0)
    hull = (
        centre
        + (hull - centre) * 1.08
        + 0.04 * (hull - centre) / np.linalg.norm(hull - centre, axis=1)[:, None]
    )
    soft.append(_smooth(hull, 2))
    return _Scene(bones, soft, 0.045, [], (0.85, 1.1), "PA")


def _elbow(rng: np.random.Generator, age: float) -> _Scene:
    j = lambda s=0.012: float(rng.normal(0.0, s))  # noqa: E731
    child = age < 0.85
    gap = (0.015 + 0.025 * (1 - age)) if child else 0.0
    bones: list[_Bone] = []
    soft: list[np.ndarray] = []
    lateral = rng.random() < 0.45
    hum_w = 0.3 * rng.uniform(0.92, 1.08)
    if not lateral:
        bones += _long_bone(
            (j(0.02), -1.7), (0.0, -0.28), hum_w, flare1=0.7, flen=0.12, cortex=0.03, medulla=0.4
        )
        cond = [
            (-0.4, -0.14),
            (-0.26, -0.3),
            (0.25, -0.3),
            (0.38, -0.16),
            (0.3, 0.0),
            (0.24, 0.08),
            (0.1, 0.09),
            (0.02, 0.03),
            (-0.08, 0.1),
            (-0.2, 0.1),
            (-0.3, 0.02),
        ]
        cond = np.asarray(cond) * rng.uniform(0.92, 1.08)
        if child:
            # metaphysis + separate capitellum / trochlea / medial epicondyle ossification centres
            bones.append(
                _Bone(
                    [_smooth([*cond[[0, 1, 2, 3]].tolist(), (0.3, -0.07), (-0.33, -0.07)], 2)],
                    cortex=0.02,
                    medulla=0.7,
                )
            )
            bones.append(
                _Bone([_ellipse(0.18, 0.02, 0.11 * (0.6 + 0.4 * age), 0.06, 0)], cortex=0.012, medulla=0.9)
            )
            if age > 0.35:
                bones.append(_Bone([_ellipse(-0.09, 0.04, 0.1, 0.05, 0)], cortex=0.012, medulla=0.85))
            if age > 0.2:
                bones.append(_Bone([_ellipse(-0.38, -0.06, 0.05, 0.05, 0)], cortex=0.01, medulla=0.9))
        else:
            bones.append(_Bone([_smooth(cond, 2)], cortex=0.02, medulla=0.7))
        # olecranon fossa: thinner bone in the middle of the distal humerus
        bones.append(_Bone([_ellipse(0.0, -0.16, 0.09, 0.07)], cortex=0.0, density=-0.35, medulla=1.0))
        carry = rng.uniform(5, 20)
        pivot = np.array([0.0, 0.1])

        def f(pt):
            return _rot(np.asarray(pt, float) - pivot, -carry) + pivot

        bones += _long_bone(
            f((0.18, 0.16)),
            f((0.24, 1.8)),
            0.13,
            flare0=0.6,
            flen=0.08,
            epi0=0.06,
            gap=gap,
            cap0=0.3,
            cortex=0.02,
        )
        bones += _long_bone(
            f((-0.06, 0.09)),
            f((-0.1, 1.8)),
            0.14,
            flare0=0.9,
            flen=0.15,
            epi0=0.03,
            gap=gap,
            cap0=0.6,
            cortex=0.022,
        )
        soft.append(_capsule((0.0, -1.8), (0.0, 0.1), 0.85, 0.85))
        soft.append(_capsule(f((0.05, 0.0)), f((0.08, 1.8)), 0.8, 0.62))
        return _Scene(bones, soft, 0.16, [], (0.85, 1.0), "AP")
    # lateral: humerus down, forearm at 70..110 degrees forward, olecranon behind
    bones += _long_bone(
        (j(0.02), -1.7), (0.02, -0.25), hum_w, flare1=0.35, flen=0.14, cortex=0.03, medulla=0.4
    )
    bones.append(
        _Bone([_ellipse(0.04, -0.06, 0.17, 0.16)], cortex=0.02, medulla=0.75)
    )  # condyles / capitellum
    bones.append(
        _Bone([_ellipse(0.04, -0.06, 0.09, 0.085)], cortex=0.012, density=0.5, medulla=0.6)
    )  # trochlea ring
    flex = rng.uniform(70, 110)
    d = np.array([math.sin(math.radians(flex)), math.cos(math.radians(flex))])
    n = np.array([-d[1], d[0]])
    base = np.array([0.04, -0.06])
    # ulna: olecranon hooks behind the trochlea, shaft along d
    olec = base - d * 0.2 + n * 0.02
    bones.append(
        _Bone(
            [
                _smooth(
                    [
                        tuple(olec - n * 0.1),
                        tuple(olec + n * 0.08),
                        tuple(base + n * 0.17),
                        tuple(base + d * 0.25 + n * 0.1),
                        tuple(base + d * 0.25 - n * 0.02),
                        tuple(base + d * 0.12 - n * 0.13),
                    ],
                    2,
                )
            ],
            cortex=0.02,
            medulla=0.7,
        )
    )
    bones += _long_bone(base + d * 0.2 + n * 0.03, base + d * 1.9 + n * 0.05, 0.11, cortex=0.02, cap0=0.2)
    bones += _long_bone(
        base + d * 0.14 - n * 0.1,
        base + d * 1.9 - n * 0.07,
        0.12,
        flare0=0.6,
        flen=0.06,
        epi0=0.05,
        gap=gap,
        cortex=0.02,
    )
    soft.append(_capsule((0.0, -1.8), (0.02, 0.0), 0.85, 0.9))
    soft.append(_capsule(base - d * 0.05, base + d * 1.9, 0.8, 0.6))
    return _Scene(bones, soft, 0.16, [], (0.9, 1.0), "LATERAL")


def _knee(rng: np.random.Generator, age: float) -> _Scene:
    j = lambda s=0.012: float(rng.normal(0.0, s))  # noqa: E731
    child = age < 0.85
    gap = (0.018 + 0.03 * (1 - age)) if child else 0.0
    bones: list[_Bone] = []
    soft: list[np.ndarray] = []
    lateral = rng.random() < 0.4
    fw = 0.36 * rng.uniform(0.92, 1.08)
    if not lateral:
        y_phys = -0.22
        bones += _long_bone(
            (j(0.02), -1.8),
            (0.0, y_phys - gap),
            fw,
            flare1=0.9,
            flen=0.17,
            cap1=0.05,
            cortex=0.035,
            medulla=0.45,
        )
        cond = [
            (-0.42, y_phys),
            (0.42, y_phys),
            (0.46, -0.06),
            (0.38, 0.05),
            (0.22, 0.08),
            (0.09, 0.02),
            (0.05, -0.05),
            (-0.05, -0.05),
            (-0.09, 0.02),
            (-0.22, 0.09),
            (-0.38, 0.06),
            (-0.46, -0.06),
        ]
        cond = np.asarray(cond) * (rng.uniform(0.93, 1.07), 1.0)
        if not child:
            cond[:2, 1] -= 0.1
        bones.append(_Bone([_smooth(cond, 2)], cortex=0.02, medulla=0.8))
        plateau = [
            (-0.44, 0.13),
            (-0.12, 0.14),
            (-0.05, 0.08),
            (-0.01, 0.12),
            (0.04, 0.07),
            (0.1, 0.14),
            (0.42, 0.13),
            (0.43, 0.24),
            (-0.43, 0.24),
        ]
        bones.append(_Bone([_smooth(plateau, 2)], cortex=0.02, medulla=0.8))
        bones += _long_bone(
            (0.0, 0.24 + gap),
            (j(0.02), 1.8),
            0.33 * fw / 0.36,
            flare0=1.25,
            flen=0.16,
            cap0=0.05,
            cortex=0.032,
            medulla=0.45,
        )
        fib_head = (0.41 + j(0.01), 0.4 + gap)
        bones.append(_Bone([_ellipse(*fib_head, 0.075, 0.085)], cortex=0.015, medulla=0.8))
        bones += _long_bone(
            (fib_head[0], fib_head[1] + 0.08 + gap * 0.6), (0.46, 1.8), 0.09, cortex=0.018, cap0=0.1
        )
        pat = 0.55 + 0.45 * age
        bones.append(
            _Bone(
                [_ellipse(0.02 + j(), -0.16 + j(0.03), 0.2 * pat, 0.25 * pat)],
                cortex=0.015,
                density=0.6,
                medulla=0.85,
            )
        )
        soft.append(_capsule((0.0, -1.9), (0.0, 1.9), 1.45, 1.15))
        return _Scene(bones, soft, 0.28, [], (0.9, 1.05), "AP")
    # lateral: condyles round, patella in front (+x), tibial tuberosity, fibula behind
    flex = rng.uniform(0, 30)
    bones += _long_bone(
        (j(0.02), -1.8), (-0.05, -0.3), fw, flare1=0.7, flen=0.15, cap1=0.05, cortex=0.035, medulla=0.45
    )
    bones.append(_Bone([_ellipse(-0.1, -0.08, 0.36, 0.28, -10)], cortex=0.02, medulla=0.8))
    bones.append(_Bone([_ellipse(-0.14, -0.06, 0.3, 0.24, -10)], cortex=0.012, density=0.5, medulla=0.7))
    pat = 0.55 + 0.45 * age
    bones.append(_Bone([_ellipse(0.36, -0.25, 0.1 * pat, 0.24 * pat, 8)], cortex=0.018, medulla=0.85))
    pivot = np.array([-0.05, 0.2])

    def f(pt):
        return _rot(np.asarray(pt, float) - pivot, flex) + pivot

    plateau = [(-0.45, 0.22), (0.3, 0.22), (0.33, 0.34), (-0.42, 0.34)]
    bones.append(_Bone([_smooth(f(np.asarray(plateau)), 2)], cortex=0.02, medulla=0.8))
    tib = [
        (-0.4, 0.34 + gap),
        (0.3, 0.34 + gap),
        (0.36, 0.5),
        (0.26, 0.65),
        (0.2, 1.9),
        (-0.17, 1.9),
        (-0.22, 0.7),
    ]
    bones.append(_Bone([_smooth(f(np.asarray(tib)), 2)], cortex=0.03, medulla=0.5))
    bones.append(_Bone([_ellipse(*f((-0.33, 0.47)), 0.08, 0.08)], cortex=0.015, medulla=0.8))
    bones += _long_bone(f((-0.33, 0.55)), f((-0.28, 1.9)), 0.085, cortex=0.018)
    soft.append(_capsule((0.0, -1.9), (-0.02, 0.2), 1.45, 1.3))
    soft.append(_capsule(f((-0.02, 0.0)), f((-0.04, 1.9)), 1.3, 1.0))
    soft.append(_ellipse(0.3, -0.2, 0.35, 0.45))
    return _Scene(bones, soft, 0.28, [], (0.9, 1.05), "LATERAL")


def _pelvis(rng: np.random.Generator, age: float) -> _Scene:
    j = lambda s=0.015: float(rng.normal(0.0, s))  # noqa: E731
    child = age < 0.85
    gap = (0.015 + 0.025 * (1 - age)) if child else 0.0
    bones: list[_Bone] = []
    # sacrum with foramina, L5 above
    sac = [
        (-0.26, -0.5),
        (0.26, -0.5),
        (0.23, -0.12),
        (0.13, 0.22),
        (0.04, 0.4),
        (-0.04, 0.4),
        (-0.13, 0.22),
        (-0.23, -0.12),
    ]
    foramina = [_ellipse(sx * 0.11, y, 0.03, 0.025) for y in (-0.32, -0.17, -0.03, 0.1) for sx in (-1, 1)]
    bones.append(_Bone([_smooth(sac, 2)], foramina, cortex=0.02, density=0.75, medulla=0.75))
    bones.append(
        _Bone(
            [
                _smooth([(-0.22, -0.9), (0.22, -0.9), (0.24, -0.6), (-0.24, -0.6)], 2),
                _capsule((-0.42, -0.72), (0.42, -0.72), 0.09),
            ],
            cortex=0.02,
            density=0.85,
            medulla=0.7,
        )
    )
    bones.append(
        _Bone(
            [_smooth([(-0.2, -1.35), (0.2, -1.35), (0.22, -1.0), (-0.22, -1.0)], 2)],
            cortex=0.02,
            density=0.85,
            medulla=0.7,
        )
    )
    for s in (-1.0, 1.0):
        wing = [
            (0.24, -0.5),
            (0.33, -0.78),
            (0.6, -0.9),
            (0.9, -0.86),
            (1.08, -0.7),
            (1.1, -0.5),
            (1.02, -0.36),
            (0.88, -0.15),
            (0.78, 0.02),
            (0.55, 0.03),
            (0.34, -0.06),
            (0.24, -0.2),
        ]
        wing = np.asarray(wing) * (s * rng.uniform(0.95, 1.05), 1.0)
        bones.append(_Bone([_smooth(wing, 2)], cortex=0.045, density=0.55, medulla=0.3))
        ring = [
            (0.8, 0.02),
            (0.86, 0.2),
            (0.8, 0.47),
            (0.7, 0.63),
            (0.5, 0.64),
            (0.3, 0.56),
            (0.12, 0.5),
            (0.045, 0.46),
            (0.045, 0.29),
            (0.2, 0.22),
            (0.45, 0.12),
            (0.6, 0.04),
        ]
        hole = _mirror(_ellipse(0.43, 0.39, 0.15, 0.1, 20)) if s < 0 else _ellipse(0.43, 0.39, 0.15, 0.1, -20)
        bones.append(
            _Bone([_smooth(np.asarray(ring) * (s, 1.0), 2)], [hole], cortex=0.03, density=0.8, medulla=0.6)
        )
        # proximal femur: capital epiphysis, neck, trochanters, shaft
        hc = np.array([0.69 * s + j(), 0.17 + j()])
        r = 0.17 * rng.uniform(0.93, 1.07)
        neck_dir = np.array([0.55 * s, 0.83])
        bones.append(_Bone([_ellipse(hc[0], hc[1], r, r)], cortex=0.02, medulla=0.85))
        neck0 = hc + neck_dir * (r * 0.2 + gap)
        troch = hc + neck_dir * 0.36
        bones += _long_bone(neck0, troch, 0.22, flare1=0.4, cap0=0.1, cortex=0.025, medulla=0.7)
        bones.append(
            _Bone(
                [_ellipse(troch[0] + 0.07 * s, troch[1] - 0.02, 0.1, 0.15, 15 * s)],
                cortex=0.012,
                density=0.7,
                medulla=0.7,
            )
        )
        bones.append(_Bone([_ellipse(hc[0] + 0.1 * s, hc[1] + 0.45, 0.05, 0.06)], cortex=0.015, medulla=0.8))
        bones += _long_bone(
            troch + np.array([0.03 * s, -0.05]),
            (hc[0] + s * (0.33 + j(0.03)), 1.9),
            0.3,
            flare0=0.5,
            cortex=0.035,
            medulla=0.45,
            cap0=0.3,
        )
    soft = [_smooth([(-1.5, -1.9), (1.5, -1.9), (1.55, 0.2), (1.45, 1.9), (-1.45, 1.9), (-1.55, 0.2)], 2)]
    lucent = []
    for _ in range(int(rng.integers(2, 7))):
        lucent.append(
            (
                _ellipse(
                    rng.uniform(-0.6, 0.6),
                    rng.uniform(-0.9, 0.3),
                    rng.uniform(0.05, 0.16),
                    rng.uniform(0.04, 0.1),
                    rng.uniform(0, 180),
                ),
                rng.uniform(0.15, 0.4),
            )
        )
    return _Scene(bones, soft, 0.45, lucent, (1.3, 1.0), "AP", paired=False)


def _shoulder(rng: np.random.Generator, age: float) -> _Scene:
    j = lambda s=0.012: float(rng.normal(0.0, s))  # noqa: E731
    child = age < 0.85
    gap = (0.02 + 0.025 * (1 - age)) if child else 0.0
    bones: list[_Bone] = []
    # ribs first (under everything), posterior arcs + fainter anterior ones
    y0 = rng.uniform(-0.75, -0.55)
    for k in range(6):
        y = y0 + k * 0.3
        bones += _long_bone(
            (-1.7, y - 0.22),
            (0.05 + 0.04 * k, y + 0.3),
            0.07,
            bend=-0.2,
            cortex=0.013,
            density=0.5,
            medulla=0.3,
        )
        bones += _long_bone(
            (-1.6, y + 0.45), (-0.35, y + 0.05), 0.09, bend=0.05, cortex=0.012, density=0.3, medulla=0.4
        )
    # scapula blade, glenoid, spine + acromion, coracoid
    blade = [
        (-0.1, -0.32),
        (0.04, -0.2),
        (0.09, 0.0),
        (0.04, 0.2),
        (-0.06, 0.26),
        (-0.38, 0.65),
        (-0.62, 0.98),
        (-0.74, 0.88),
        (-0.8, 0.2),
        (-0.85, -0.36),
        (-0.45, -0.33),
    ]
    bones.append(_Bone([_smooth(blade, 2)], cortex=0.02, density=0.45, medulla=0.5))
    bones.append(_Bone([_ellipse(0.04, -0.02, 0.06, 0.2, 3)], cortex=0.02, density=0.7, medulla=0.7))
    bones += _long_bone((-0.85, -0.3), (0.2, -0.44), 0.1, bend=0.04, cortex=0.018, density=0.7)
    bones.append(
        _Bone([_ellipse(0.28 + j(), -0.46, 0.16, 0.065, -8)], cortex=0.018, density=0.8, medulla=0.7)
    )
    bones += _long_bone((-0.1, -0.24), (0.08, -0.3), 0.08, bend=0.3, cortex=0.015, density=0.8)
    # clavicle
    bones += _long_bone(
        (-1.5, -0.78 + j(0.03)),
        (0.2, -0.55),
        0.13,
        flare0=0.3,
        flare1=0.45,
        bend=0.05,
        cortex=0.025,
        density=0.9,
    )
    # proximal humerus: head (epiphysis in a child), greater tuberosity, shaft
    hc = np.array([0.33 + j(0.02), -0.02 + j(0.02)])
    r = 0.29 * rng.uniform(0.93, 1.07)
    head = _ellipse(hc[0], hc[1], r, r * 1.02)
    tub = _ellipse(hc[0] + 0.2, hc[1] + 0.02, 0.13, 0.19)
    shaft_top = hc + np.array([0.08, r * 0.6 + gap])
    shaft = _long_bone(
        shaft_top,
        (hc[0] + 0.12 + j(0.03), 1.9),
        0.31,
        flare0=0.5,
        flen=0.2,
        cap0=0.05,
        cortex=0.032,
        medulla=0.45,
    )
    if child:
        bones.append(_Bone([head], cortex=0.018, medulla=0.85))
        bones.append(_Bone([tub], cortex=0.012, medulla=0.85))
        bones += shaft
    else:
        bones.append(_Bone([head, tub], cortex=0.02, medulla=0.85))
        bones += shaft
    soft = [
        _smooth(
            [
                (-1.9, -1.9),
                (-0.25, -1.9),
                (-0.1, -0.95),
                (0.25, -0.78),
                (0.62, -0.5),
                (0.8, -0.05),
                (0.84, 0.5),
                (0.8, 1.9),
                (-1.9, 1.9),
            ],
            2,
        )
    ]
    lung = _smooth([(-1.9, -0.62), (-0.25, -0.55), (-0.1, -0.1), (-0.12, 0.6), (-0.3, 1.9), (-1.9, 1.9)], 2)
    return _Scene(bones, soft, 0.3, [(lung, rng.uniform(0.45, 0.7))], (0.95, 1.0), "AP")


_BUILDERS = {"shoulder": _shoulder, "elbow": _elbow, "hand": _hand, "pelvis": _pelvis, "knee": _knee}


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True, slots=True)
class RenderInfo:
    """What the renderer decided, for the DICOM header."""

    field: tuple[int, int, int, int] | None  # collimated field (top, bottom, left, right), full-size pixels
    unexposed: float  # attenuation value outside the field
    laterality: str  # "L", "R" or "U"
    view: str  # "AP", "PA", "LATERAL"
    marker: str | None  # lead marker letter drawn, if any
    age: float  # 0 (young child) .. 1 (skeletally mature)


def _to_px(pts: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return pts @ affine[:, :2].T + affine[:, 2]


def _fill(
    shape: tuple[int, int],
    polys_px: list[np.ndarray],
    origin=(0, 0),
    value: int = 255,
    canvas: np.ndarray | None = None,
) -> np.ndarray:
    img = np.zeros(shape, np.uint8) if canvas is None else canvas
    ox, oy = origin
    for p in polys_px:  # one call per polygon: a single fillPoly call XORs overlapping outlines
        pts = np.round((p - (ox, oy)) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(img, [pts], value, lineType=cv2.LINE_AA, shift=_SHIFT)
    return img


def _draw_bone(acc: np.ndarray, tex: np.ndarray, bone: _Bone, affine: np.ndarray, unit_px: float) -> None:
    h, w = acc.shape
    outer = [_to_px(p, affine) for p in bone.polys]
    allp = np.concatenate(outer)
    x0, y0 = np.floor(allp.min(0)).astype(int) - 2
    x1, y1 = np.ceil(allp.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    roi = (y1 - y0, x1 - x0)
    mask = _fill(roi, outer, (x0, y0))
    if bone.holes:
        _fill(roi, [_to_px(p, affine) for p in bone.holes], (x0, y0), 0, mask)
    cov = mask.astype(np.float32) * (1.0 / 255.0)
    dist = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 3)
    c = max(bone.cortex * unit_px, 0.6)
    if bone.cortex > 0:
        rim = np.sqrt(np.minimum(dist * (1.0 / c), 1.0)) * np.exp(
            -np.maximum(dist - c, 0.0) * (1.0 / (1.5 * c))
        )
        med = 1.0 - np.exp(-dist * (1.0 / (2.5 * c)))
    else:
        rim = np.zeros_like(dist)
        med = 1.0 - np.exp(-dist * (1.0 / max(0.03 * unit_px, 1.0)))
    t = tex[y0:y1, x0:x1]
    val = (0.55 * rim + 0.42 * bone.medulla * med * (1.0 + 0.4 * t)) * (bone.density * cov)
    acc[y0:y1, x0:x1] += val


def _gauss_lut() -> np.ndarray:
    global _GAUSS_LUT
    if _GAUSS_LUT is None:
        inv = NormalDist().inv_cdf
        _GAUSS_LUT = np.array([inv((k + 0.5) / 256.0) for k in range(256)], np.float32).reshape(1, 256)
    return _GAUSS_LUT


def _noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Unit Gaussian-like noise, fast: random bytes through a quantile table."""
    raw = np.frombuffer(rng.bytes(shape[0] * shape[1]), np.uint8).reshape(shape)
    return cv2.LUT(raw, _gauss_lut())


def render(region: str, rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, RenderInfo]:
    """Render one radiograph of ``region``: float32 ``shape`` attenuation in [0, 1] plus what was drawn."""
    if region not in _BUILDERS:
        raise ValueError(f"unknown region {region!r}; expected one of {tuple(_BUILDERS)}")
    rows, cols = int(shape[0]), int(shape[1])
    if rows < 16 or cols < 16:
        raise ValueError(f"matrix too small: {shape}")
    age = float(rng.uniform(0.0, 1.0))
    scene = _BUILDERS[region](rng, age)

    ws = min(1.0, _WORK_LONG_SIDE / max(rows, cols))
    h, w = max(16, round(rows * ws)), max(16, round(cols * ws))
    sy, sx = h / rows, w / cols

    # pose: flip (left side), rotation, scale, translation
    flip = scene.paired and rng.random() < 0.5
    laterality = ("L" if flip else "R") if scene.paired else "U"
    ex, ey = scene.half_extent
    unit_px = min(w / (2 * ex), h / (2 * ey)) * rng.uniform(0.82, 1.12)
    ang = math.radians(rng.uniform(-20.0, 20.0))
    tx, ty = rng.uniform(-0.08, 0.08) * w, rng.uniform(-0.08, 0.08) * h
    c, s = math.cos(ang), math.sin(ang)
    fx = -1.0 if flip else 1.0
    affine = np.array(
        [[unit_px * c * fx, -unit_px * s, w / 2 + tx], [unit_px * s * fx, unit_px * c, h / 2 + ty]]
    )

    # soft tissue: thickness grows with depth inside the envelope
    soft_mask = _fill((h, w), [_to_px(p, affine) for p in scene.soft])
    depth = cv2.distanceTransform((soft_mask > 127).astype(np.uint8), cv2.DIST_L2, 3)
    soft_level = rng.uniform(0.22, 0.42)
    soft = (1.0 - np.exp(-depth * (1.0 / max(scene.soft_depth * unit_px, 1.0)))) * (
        soft_mask.astype(np.float32) * np.float32(soft_level / 255)
    )
    for poly, amount in scene.lucent:
        lm = _fill((h, w), [_to_px(poly, affine)]).astype(np.float32)
        k = max(3, int(0.06 * unit_px) | 1)
        lm = cv2.GaussianBlur(lm, (0, 0), k / 3) * (amount / 255.0)
        soft *= 1.0 - lm

    # trabecular texture: band-pass noise, slightly anisotropic
    n = rng.standard_normal((h, w), dtype=np.float32)
    s1 = max(0.6, 0.006 * unit_px)
    tex = cv2.GaussianBlur(n, (0, 0), s1, sigmaY=s1 * rng.uniform(0.6, 1.6)) - cv2.GaussianBlur(
        n, (0, 0), 3 * s1
    )
    tex *= 1.0 / (float(tex.std()) + 1e-6)

    bones = np.zeros((h, w), np.float32)
    for bone in scene.bones:
        _draw_bone(bones, tex, bone, affine, unit_px)
    np.maximum(bones, 0.0, out=bones)

    atten = soft + bones * rng.uniform(0.85, 1.15)
    gain = rng.uniform(1.3, 2.0)
    img = (1.0 - np.exp(-gain * atten)).astype(np.float32)
    img *= rng.uniform(0.85, 1.0)
    # fog / scatter and a gentle exposure gradient (heel effect)
    yy = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    g = rng.normal(0, 0.04, 2)
    img += rng.uniform(0.0, 0.05) + (g[0] * yy + g[1] * xx)

    # lead marker: a bright letter in a corner
    marker = None
    if rng.random() < 0.55:
        marker = laterality if laterality != "U" else ("R" if rng.random() < 0.5 else "L")
        size = min(h, w) * rng.uniform(0.05, 0.08)
        scale = size / 22.0
        thick = max(1, round(scale * 2.5))
        (tw, th), _ = cv2.getTextSize(marker, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        corner = int(rng.integers(4))
        mx = int(0.08 * w) if corner % 2 == 0 else int(0.92 * w) - tw
        my = int(0.1 * h) + th if corner < 2 else int(0.9 * h)
        cv2.rectangle(
            img,
            (mx - thick * 2, my - th - thick * 2),
            (mx + tw + thick * 2, my + thick * 2),
            float(np.clip(img[min(my, h - 1), min(mx, w - 1)], 0, 1)) + 0.05,
            -1,
        )
        # drawn as an 8-bit coverage mask (OpenCV 5 draws text on 8-bit images only), then blended
        ink = np.zeros(img.shape, np.uint8)
        cv2.putText(ink, marker, (mx, my), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick, cv2.LINE_AA)
        cover = ink.astype(img.dtype) / 255
        img[:] = img * (1 - cover) + 0.97 * cover

    # collimation: outside a rectangle the plate stays near its unexposed value
    unexposed = float(rng.uniform(0.82, 0.96))
    field_rect = None
    if rng.random() < 0.75:
        m = rng.uniform(0.0, 0.13, 4) * (rng.random(4) < 0.8)
        top, bottom = round(m[0] * rows), rows - round(m[1] * rows)
        left, right = round(m[2] * cols), cols - round(m[3] * cols)
        if (top, bottom, left, right) != (0, rows, 0, cols):
            field_rect = (top, bottom, left, right)
            coll = np.zeros((h, w), np.float32)
            cv2.rectangle(
                coll,
                (round(left * sx), round(top * sy)),
                (round(right * sx) - 1, round(bottom * sy) - 1),
                1.0,
                -1,
            )
            coll = cv2.GaussianBlur(coll, (0, 0), max(0.5, 0.004 * min(h, w)))
            img = img * coll + unexposed * (1.0 - coll)

    img = img.astype(np.float32, copy=False)
    blur = rng.uniform(0.3, 1.0) * max(1.0, ws * 2)
    img = cv2.GaussianBlur(img, (0, 0), blur)
    if (h, w) != (rows, cols):
        img = cv2.resize(img, (cols, rows), interpolation=cv2.INTER_LINEAR)

    # thin bright border at the detector edge, sometimes
    if rng.random() < 0.3:
        bw = int(rng.integers(2, max(3, rows // 150)))
        sides = rng.random(4) < 0.6
        val = rng.uniform(0.9, 1.0)
        if sides[0]:
            img[:bw] = val
        if sides[1]:
            img[-bw:] = val
        if sides[2]:
            img[:, :bw] = val
        if sides[3]:
            img[:, -bw:] = val

    # quantum noise, larger where fewer photons arrive (higher attenuation)
    s0 = rng.uniform(0.004, 0.014)
    noise = _noise(rng, (rows, cols))
    sigma = cv2.addWeighted(img, s0 * 1.8, img, 0.0, s0)  # s0 * (1 + 1.8 img)
    img += cv2.multiply(noise, sigma)
    np.clip(img, 0.0, 1.0, out=img)
    info = RenderInfo(field_rect, unexposed, laterality, scene.view, marker, age)
    return img, info
