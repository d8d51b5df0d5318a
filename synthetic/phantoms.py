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
from dataclasses import dataclass
from statistics import NormalDist

import cv2
import numpy as np

from radserve.synthetic._limbs import _elbow, _hand, _knee
from radserve.synthetic._shapes import _Bone, _Scene
from radserve.synthetic._trunk import _pelvis, _shoulder

__all__ = ["RenderInfo", "render", "render_scene"]

_WORK_LONG_SIDE = 640  # working-resolution long side, pixels
_SHIFT = 4  # cv2 sub-pixel bits for polygon drawing
_GAUSS_LUT = None  # lazily built uint8 -> N(0, 1) quantile table


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
    to_pixels: np.ndarray | None = None  # 2x3 affine: canonical units -> full-size pixel (x, y)


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
    val = (0.55 * rim + 0.42 * bone.medulla * med * (1.0 + bone.texture * t)) * (bone.density * cov)
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
    if int(shape[0]) < 16 or int(shape[1]) < 16:
        raise ValueError(f"matrix too small: {shape}")
    age = float(rng.uniform(0.0, 1.0))
    return render_scene(_BUILDERS[region](rng, age), age, rng, shape)


def render_scene(
    scene: _Scene, age: float, rng: np.random.Generator, shape: tuple[int, int]
) -> tuple[np.ndarray, RenderInfo]:
    """Render a built scene (see :func:`render`); other phantom modules bring their own scenes.

    The steps draw from ``rng`` in a fixed order, so a seed gives the same radiograph every time.
    """
    rows, cols = int(shape[0]), int(shape[1])
    ws = min(1.0, _WORK_LONG_SIDE / max(rows, cols))
    h, w = max(16, round(rows * ws)), max(16, round(cols * ws))
    sy, sx = h / rows, w / cols
    laterality, unit_px, affine = _pose(scene, rng, h, w)
    soft = _soft_tissue(scene, rng, affine, unit_px, (h, w))
    bones = _bones(scene, rng, affine, unit_px, (h, w))
    img = _exposure(soft, bones, rng, (h, w))
    marker = _lead_marker(img, laterality, rng)
    img, field_rect, unexposed = _collimation(img, rng, (rows, cols), (sy, sx))
    img = _detector(img, rng, (rows, cols), ws)
    to_pixels = np.diag([1.0 / sx, 1.0 / sy]) @ affine  # working -> full size, pixel centres aligned
    to_pixels[:, 2] += (0.5 / sx - 0.5, 0.5 / sy - 0.5)
    info = RenderInfo(field_rect, unexposed, laterality, scene.view, marker, age, to_pixels)
    return img, info


def _pose(scene: _Scene, rng: np.random.Generator, h: int, w: int) -> tuple[str, float, np.ndarray]:
    """Flip (left side), rotation, scale and translation: (laterality, pixels per unit, affine)."""
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
    return laterality, unit_px, affine


def _soft_tissue(
    scene: _Scene, rng: np.random.Generator, affine: np.ndarray, unit_px: float, size: tuple[int, int]
) -> np.ndarray:
    """Soft-tissue attenuation: thickness grows with depth inside the envelope."""
    h, w = size
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
    return soft


def _bones(
    scene: _Scene, rng: np.random.Generator, affine: np.ndarray, unit_px: float, size: tuple[int, int]
) -> np.ndarray:
    """Bone attenuation with a trabecular texture (band-pass noise, slightly anisotropic)."""
    h, w = size
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
    return bones


def _exposure(
    soft: np.ndarray, bones: np.ndarray, rng: np.random.Generator, size: tuple[int, int]
) -> np.ndarray:
    """Detector response to the attenuation, with fog, scatter and the heel effect's gradient."""
    h, w = size
    atten = soft + bones * rng.uniform(0.85, 1.15)
    gain = rng.uniform(1.3, 2.0)
    img = (1.0 - np.exp(-gain * atten)).astype(np.float32)
    img *= rng.uniform(0.85, 1.0)
    # fog / scatter and a gentle exposure gradient (heel effect)
    yy = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    g = rng.normal(0, 0.04, 2)
    img += rng.uniform(0.0, 0.05) + (g[0] * yy + g[1] * xx)
    return img


def _lead_marker(img: np.ndarray, laterality: str, rng: np.random.Generator) -> str | None:
    """A bright letter in a corner (drawn into ``img``), sometimes; the letter or None."""
    h, w = img.shape
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
    return marker


def _collimation(
    img: np.ndarray, rng: np.random.Generator, shape: tuple[int, int], scale: tuple[float, float]
) -> tuple[np.ndarray, tuple[int, int, int, int] | None, float]:
    """Outside a rectangle the plate stays near its unexposed value: (image, field, unexposed value)."""
    (rows, cols), (sy, sx) = shape, scale
    h, w = img.shape
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
    return img, field_rect, unexposed


def _detector(img: np.ndarray, rng: np.random.Generator, shape: tuple[int, int], ws: float) -> np.ndarray:
    """Blur, the full matrix, a bright border at the detector edge sometimes, and quantum noise."""
    rows, cols = shape
    h, w = img.shape
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
    return img
