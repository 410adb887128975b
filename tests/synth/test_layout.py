"""Scene layout: every class appears at a plausible frequency, geometry and depth are sane."""

from __future__ import annotations

import itertools

import numpy as np

from proveseg.data.classes import CITYSCAPES19
from proveseg.synth.layout import make_scene
from proveseg.synth.scene import SKY_DEPTH

N_SCENES = 80


def _label_histogram() -> np.ndarray:
    counts = np.zeros(256, np.int64)
    for i in range(N_SCENES):
        scene = make_scene(np.random.default_rng([3, i]), 128, 256)
        counts += np.bincount(scene.label.ravel(), minlength=256)
    return counts


def test_every_class_appears_at_a_plausible_frequency() -> None:
    counts = _label_histogram()
    assert set(np.flatnonzero(counts)) <= set(range(19)) | {255}
    freq = counts[:19] / counts[:19].sum()
    absent = [CITYSCAPES19.names[c] for c in range(19) if counts[c] == 0]
    assert absent == []
    idx = CITYSCAPES19.index
    # Cityscapes-like ordering: road, building and sky dominate; thin and small things are rare.
    top3 = {CITYSCAPES19.names[c] for c in np.argsort(freq)[-3:]}
    assert top3 == {"road", "building", "sky"}
    for small in ("pole", "traffic light", "traffic sign", "person", "rider", "bicycle", "motorcycle"):
        assert 0 < freq[idx(small)] < 0.02, small
    assert freq[idx("car")] > freq[idx("bicycle")]


def test_depth_grows_towards_the_horizon_and_sky_is_far() -> None:
    scene = make_scene(np.random.default_rng(11), 128, 256)
    road = scene.label == CITYSCAPES19.index("road")
    rows = [r for r in range(128) if road[r].any()]
    depth_by_row = [scene.depth[r][road[r]].mean() for r in rows]
    assert all(a > b for a, b in itertools.pairwise(depth_by_row))
    assert np.all(scene.depth[scene.label == CITYSCAPES19.index("sky")] == SKY_DEPTH)
    assert np.all(scene.depth[scene.label != CITYSCAPES19.index("sky")] < SKY_DEPTH)


def test_road_is_below_sky() -> None:
    scene = make_scene(np.random.default_rng(5), 128, 256)
    rows = np.arange(128)[:, None].repeat(256, 1)
    assert rows[scene.label == CITYSCAPES19.index("road")].min() > rows[scene.label == CITYSCAPES19.index("sky")].mean()


def test_scene_is_a_pure_function_of_the_rng() -> None:
    a = make_scene(np.random.default_rng(9), 64, 128)
    b = make_scene(np.random.default_rng(9), 64, 128)
    assert np.array_equal(a.label, b.label) and np.array_equal(a.albedo, b.albedo)
