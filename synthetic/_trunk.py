"""Private: pelvis and shoulder phantoms (canonical frame of :mod:`radserve.synthetic._shapes`)."""

from __future__ import annotations

import numpy as np

from radserve.synthetic._shapes import _Bone, _capsule, _ellipse, _long_bone, _mirror, _Scene, _smooth


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
