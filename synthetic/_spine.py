"""Private: lumbar spine phantoms, AP and lateral, native or with hardware (canonical frame of _shapes).

Five vertebrae stacked along y (L1 at the top). Lateral views: x runs anterior (-) to posterior (+);
the posterior arch joins the body through the pars interarticularis, which a spondylolysis cuts, and
a degenerative spondylolisthesis slips L4 (and the levels above it) forward over L5 on a narrowed
disc. AP views: pedicle
rings, transverse and spinous processes; a deformity is a scoliotic curve. Hardware is metal
(solid, dense): pedicle screws and rods (fixation), a solid interbody cage filling the disc space,
or a disc prosthesis (two metal endplates with keels around a radiolucent core).
"""

from __future__ import annotations

import numpy as np

from radserve.synthetic._shapes import _Bone, _capsule, _ellipse, _Scene

_LEVELS = 5
_METAL = 6.0  # titanium: far denser than bone, saturates the display
_PARS_GAP = 0.16  # canonical units the detached arch moves back: a cleft visible at the demo size
_SLIP = (0.25, 0.35)  # forward slip of L1-L4 over L5, canonical units: Meyerding grade 2 of a ~0.58 body


def _box(cx: float, cy: float, half_w: float, half_h: float, tilt: float = 0.0) -> np.ndarray:
    corners = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    c, s = np.cos(tilt), np.sin(tilt)
    return corners @ np.array([[c, s], [-s, c]]) + (cx, cy)


def _metal(*polys: np.ndarray, holes: tuple[np.ndarray, ...] = ()) -> _Bone:
    return _Bone(list(polys), list(holes), cortex=0.0, density=_METAL, medulla=1.0, texture=0.0)


def spine_scene(
    rng: np.random.Generator,
    view: str,
    *,
    deformity: bool = False,
    lysis: bool = False,
    slip: bool = False,
    hardware: str = "",
) -> _Scene:
    """A lumbar spine: ``view`` "AP" or "LATERAL"; ``hardware`` "", "fixation", "interbody", "arthroplasty".

    ``deformity`` in an AP view is a scoliotic curve, in a lateral view a slip (as ``slip``).
    """
    height, disc = rng.uniform(0.27, 0.31), rng.uniform(0.1, 0.13)
    pitch = height + disc
    top = -pitch * (_LEVELS - 1) / 2
    half_w = rng.uniform(0.26, 0.32) if view == "LATERAL" else rng.uniform(0.3, 0.36)
    amplitude = rng.uniform(0.18, 0.3) * rng.choice([-1, 1]) if deformity and view == "AP" else 0.0
    slip = slip or (deformity and view == "LATERAL")
    lordosis = rng.uniform(0.05, 0.12) if view == "LATERAL" else 0.0
    centre = -0.3 if view == "LATERAL" else 0.0  # bodies and arches centred in the field
    shift = rng.uniform(*_SLIP) if slip else 0.0
    narrowing = rng.uniform(0.03, 0.05) if slip else 0.0
    centres, tilts = [], []
    for level in range(_LEVELS):
        t = level / (_LEVELS - 1)
        x = amplitude * np.sin(np.pi * t) + lordosis * (-4 * (t - 0.5) ** 2 + 1) * -1.0
        x += centre - (shift if level <= 3 else 0.0)
        y = top + level * pitch - (narrowing if level <= 3 else 0.0)
        centres.append((x, y))
        tilts.append(amplitude * np.cos(np.pi * t) * 0.9 + rng.normal(0, 0.03))
    bones = []
    for level, ((x, y), tilt) in enumerate(zip(centres, tilts, strict=True)):
        bones.append(_Bone([_box(x, y, half_w, height / 2, tilt)], cortex=0.03, density=1.0, medulla=0.5))
        if view == "LATERAL":
            bones.extend(_lateral_arch(x + half_w, y, height, lysis and level == 4))
        else:
            bones.extend(_ap_elements(x, y, half_w, height, tilt))
    bones.extend(_hardware(rng, hardware, view, centres, half_w, height, disc))
    soft = [_ellipse(0.0, 0.0, 1.05 if view == "AP" else 1.0, 1.5, n=60)]
    return _Scene(bones, soft, 0.5, [], (0.95, 1.25), view, paired=False)


def _lateral_arch(back: float, y: float, height: float, lysis: bool) -> list[_Bone]:
    """Pedicle + pars to the facets, lamina and spinous process; a lysis separates the arch.

    A pars defect leaves the posterior arch (pars, lamina, spinous process) detached behind the
    pedicle: it is drawn ``_PARS_GAP`` further back, a lucent cleft of about 0.08 units.
    """
    pedicle = _capsule((back - 0.02, y - 0.06), (back + 0.2, y - 0.04), 0.1)
    arch = back + (_PARS_GAP if lysis else 0.0)
    pars = _capsule((arch + 0.2, y - 0.04), (arch + 0.3, y + height * 0.55), 0.07)
    spinous = _capsule((arch + 0.26, y + 0.02), (arch + 0.55, y + 0.08), 0.12, 0.08)
    return [_Bone([pedicle], cortex=0.02, density=0.8), _Bone([pars, spinous], cortex=0.02, density=0.8)]


def _ap_elements(x: float, y: float, half_w: float, height: float, tilt: float) -> list[_Bone]:
    rings = [
        _Bone(
            [_ellipse(x + side * half_w * 0.6, y - height * 0.15, 0.06, 0.08, np.degrees(tilt))], cortex=0.025
        )
        for side in (-1, 1)
    ]
    transverse = [
        _capsule((x + side * half_w, y - 0.02), (x + side * (half_w + 0.22), y - 0.04), 0.06)
        for side in (-1, 1)
    ]
    spinous = _Bone([_ellipse(x, y + height * 0.15, 0.05, 0.09)], cortex=0.02, density=0.7)
    return [*rings, _Bone(transverse, cortex=0.02, density=0.6), spinous]


def _hardware(
    rng: np.random.Generator,
    kind: str,
    view: str,
    centres: list[tuple[float, float]],
    half_w: float,
    height: float,
    disc: float,
) -> list[_Bone]:
    if not kind:
        return []
    level = int(rng.integers(2, 4))  # the instrumented disc: L3-4 or L4-5
    (x0, y0), (x1, y1) = centres[level], centres[level + 1]
    mid = ((x0 + x1) / 2, (y0 + y1) / 2)
    if kind == "fixation":
        screws, heads = [], []
        for x, y in centres[level - 1 : level + 2]:
            if view == "LATERAL":
                screws.append(_capsule((x + half_w + 0.25, y - 0.03), (x - half_w * 0.6, y), 0.08))
                heads.append((x + half_w + 0.27, y - 0.03))
            else:
                for side in (-1, 1):
                    screws.append(
                        _capsule((x + side * half_w * 0.75, y), (x + side * half_w * 0.3, y + 0.01), 0.07)
                    )
                    heads.append((x + side * half_w * 0.8, y))
        rods = []
        sides = (-1, 1) if view == "AP" else (0,)
        for side in sides:
            column = [h for h in heads if side == 0 or np.sign(h[0] - centres[level][0]) == side]
            rods.append(_capsule(column[0], column[-1], 0.07, bend=0.02))
        return [_metal(*screws), _metal(*rods)]
    gap = disc * 0.85
    if kind == "interbody":
        outer = _box(*mid, half_w * 0.75, gap / 2)
        return [_metal(outer, holes=(_box(*mid, half_w * 0.2, gap / 6),))]
    plates = [_box(mid[0], mid[1] + side * gap * 0.4, half_w * 0.85, gap * 0.16) for side in (-1, 1)]
    keels = [_box(mid[0], mid[1] + side * gap * 0.75, 0.04, gap * 0.3) for side in (-1, 1)]
    return [_metal(*plates, *keels)]
