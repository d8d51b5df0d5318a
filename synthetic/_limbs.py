"""Private: hand, elbow and knee phantoms (canonical frame of :mod:`radserve.synthetic._shapes`)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from radserve.synthetic._shapes import _Bone, _capsule, _ellipse, _long_bone, _rot, _Scene, _smooth


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
