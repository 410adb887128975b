"""Weather domains move image statistics the physically expected way against clear_day."""

from __future__ import annotations

import numpy as np
import pytest

from proveseg.data.classes import CITYSCAPES19
from proveseg.synth.generators import GENERATORS, get_generator
from proveseg.synth.layout import make_scene
from proveseg.synth.render import DOMAINS, render, sample_params
from proveseg.synth.scene import SKY_DEPTH

SCENES = [make_scene(np.random.default_rng([21, i]), 128, 256) for i in range(6)]


def _luma(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.299, 0.587, 0.114], np.float32)


def _rendered(domain: str) -> list[np.ndarray]:
    return [render(s, domain, np.random.default_rng([22, i])) for i, s in enumerate(SCENES)]


def test_night_is_much_darker() -> None:
    clear, night = _rendered("clear_day"), _rendered("night")
    for c, n in zip(clear, night, strict=True):
        assert _luma(n).mean() < 0.5 * _luma(c).mean()
        assert np.median(_luma(n)) < 0.25 * np.median(_luma(c))


def test_fog_contrast_falls_with_depth() -> None:
    """Koschmieder: the fog/clear contrast ratio is below 1 and smaller for far than near pixels."""
    clear, fog = _rendered("clear_day"), _rendered("fog")
    near_ratios, far_ratios = [], []
    for scene, c, f in zip(SCENES, clear, fog, strict=True):
        solid = scene.depth < SKY_DEPTH
        near, far = solid & (scene.depth < 12), solid & (scene.depth > 30)
        lc, lf = _luma(c), _luma(f)
        near_ratios.append(lf[near].std() / lc[near].std())
        far_ratios.append(lf[far].std() / lc[far].std())
    assert np.mean(near_ratios) < 1.0
    assert np.mean(far_ratios) < 0.6 * np.mean(near_ratios)


def test_snow_brightens_the_ground() -> None:
    ground = [np.isin(s.label, [0, 1, 9]) for s in SCENES]
    clear, snowy = _rendered("clear_day"), _rendered("snowy")
    for g, c, s in zip(ground, clear, snowy, strict=True):
        assert _luma(s)[g].mean() > _luma(c)[g].mean() + 0.1


def test_rain_darkens_the_ground_and_dawn_is_warm() -> None:
    ground = [np.isin(s.label, [0, 1, 9]) for s in SCENES]
    cloudy, rainy = _rendered("cloudy"), _rendered("rainy")
    for g, c, r in zip(ground, cloudy, rainy, strict=True):
        assert _luma(r)[g].mean() < _luma(c)[g].mean()
    for c, d in zip(_rendered("clear_day"), _rendered("dawn_dusk"), strict=True):
        assert d[..., 0].mean() / d[..., 2].mean() > c[..., 0].mean() / c[..., 2].mean()


def test_cloudy_light_is_flat() -> None:
    """Without direct sun, lit and shaded facades look alike."""
    for scene, c, o in zip(SCENES, _rendered("clear_day"), _rendered("cloudy"), strict=True):
        building = scene.label == CITYSCAPES19.index("building")
        lit, shaded = building & (scene.shade > 0.9), building & (scene.shade < 0.6)
        if lit.any() and shaded.any():
            clear_gap = _luma(c)[lit].mean() / _luma(c)[shaded].mean()
            cloudy_gap = _luma(o)[lit].mean() / _luma(o)[shaded].mean()
            assert cloudy_gap < clear_gap


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_domain_renders_a_valid_image(domain: str) -> None:
    img = render(SCENES[0], domain, np.random.default_rng(0))
    assert img.shape == (128, 256, 3) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0


def test_unknown_domain_and_generator_name_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="valid: clear_day"):
        sample_params("hail", np.random.default_rng(0))
    with pytest.raises(KeyError, match="valid: faithful"):
        get_generator("cyclegan")


def test_misaligned_moves_content_and_faithful_does_not() -> None:
    """Edges of the faithful image sit on label boundaries far more often than the misaligned ones."""
    scene = SCENES[1]
    clear = render(scene, "clear_day", np.random.default_rng(1))
    boundary = np.zeros(scene.label.shape, bool)
    boundary[:, 1:] |= scene.label[:, 1:] != scene.label[:, :-1]
    boundary[1:, :] |= scene.label[1:, :] != scene.label[:-1, :]

    def edge_hits(img: np.ndarray) -> float:
        g = _luma(img)
        mag = np.zeros_like(g)
        mag[:, 1:] += np.abs(np.diff(g, axis=1))
        mag[1:, :] += np.abs(np.diff(g, axis=0))
        strong = mag > np.quantile(mag, 0.9)
        return float((strong & boundary).sum() / strong.sum())

    scores = {name: edge_hits(GENERATORS[name](scene, clear, "cloudy", np.random.default_rng(2)))
              for name in ("faithful", "misaligned")}
    assert scores["faithful"] > 1.5 * scores["misaligned"]
