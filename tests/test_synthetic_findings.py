"""The served systems' synthetic findings are present where the ground truth says, and visible."""

from __future__ import annotations

import numpy as np
import pytest

from radserve.synthetic._spine import _METAL, spine_scene
from radserve.synthetic.phantoms import _BUILDERS, render_scene
from radserve.synthetic.system_images import _draw_fracture

SEEDS = range(5)


def _lateral_level(scene: object, level: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body, pedicle and posterior arch outlines of a lateral view's ``level`` (three bones a level)."""
    body, pedicle, arch = scene.bones[3 * level : 3 * level + 3]
    return body.polys[0], pedicle.polys[0], np.concatenate(arch.polys)


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2).min())


@pytest.mark.parametrize("seed", SEEDS)
def test_a_fracture_darkens_the_bone_inside_its_box_only(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scene = _BUILDERS[("hand", "elbow", "knee", "shoulder")[seed % 4]](rng, 0.5)
    image, info = render_scene(scene, 0.5, rng, (640, 528))
    before = image.copy()
    box = _draw_fracture(image, info.to_pixels, scene.bones, rng)
    assert box is not None
    rows, cols = np.nonzero(image != before)
    assert (cols.min(), rows.min(), cols.max(), rows.max()) == box  # the box is exact: tight, inclusive
    changed = before[rows, cols]
    assert (image[rows, cols] < 0.5 * changed).all()  # a gap, not a faint line


@pytest.mark.parametrize("seed", SEEDS)
def test_a_degenerative_slip_is_meyerding_grade_two(seed: int) -> None:
    def slip_ratio(slip: bool) -> float:
        scene = spine_scene(np.random.default_rng(seed), "LATERAL", slip=slip)
        (l4, _, _), (l5, _, _) = _lateral_level(scene, 3), _lateral_level(scene, 4)
        depth = np.ptp(l5[:, 0])
        return abs(l4[:, 0].mean() - l5[:, 0].mean()) / depth

    assert slip_ratio(False) < 0.2
    assert 0.25 <= slip_ratio(True) <= 0.75


@pytest.mark.parametrize("seed", SEEDS)
def test_a_pars_defect_detaches_the_l5_arch(seed: int) -> None:
    def cleft(lysis: bool, level: int) -> float:
        scene = spine_scene(np.random.default_rng(seed), "LATERAL", lysis=lysis)
        _, pedicle, arch = _lateral_level(scene, level)
        return _gap(pedicle, arch)

    assert cleft(True, 4) >= 0.05  # canonical units: a vertebral body is ~0.3 high
    assert max(cleft(False, 4), cleft(True, 3)) < 0.02  # the arch joins the pedicle elsewhere


@pytest.mark.parametrize("hardware", ["fixation", "interbody", "arthroplasty"])
def test_hardware_is_metal_and_native_spines_have_none(hardware: str) -> None:
    for view in ("AP", "LATERAL"):
        operated = spine_scene(np.random.default_rng(1), view, hardware=hardware)
        native = spine_scene(np.random.default_rng(1), view)
        assert any(bone.density == _METAL and bone.texture == 0 for bone in operated.bones)
        assert all(bone.density < _METAL for bone in native.bones)
