"""Simulated image-to-image weather translators of distinct, known quality.

They stand in for CycleGAN / StarGAN v2 / diffusion outputs so that a study on the synthetic
benchmark can tell a useful generator from a harmful one:

- ``faithful``: the real renderer with other parameters (a good translator);
- ``washed_out``: over-bright and low-variance (mean RGB ~ 150, std ~ 35, a weak StarGAN v2);
- ``misaligned``: a faithful image under a smooth geometric warp, so the reused label no longer
  matches the content;
- ``style_only``: a global colour/tone transfer of the clear image, no weather structure.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from proveseg.synth.render import perturb, render, sample_params
from proveseg.synth.scene import Scene, smooth_noise

__all__ = ["GENERATORS", "WASHED_OUT_MEAN", "WASHED_OUT_STD", "get_generator"]

WASHED_OUT_MEAN = 150.0
WASHED_OUT_STD = 35.0

Generator = Callable[[Scene, np.ndarray, str, np.random.Generator], np.ndarray]


def faithful(scene: Scene, clear: np.ndarray, target: str, rng: np.random.Generator) -> np.ndarray:
    """The real renderer with every weather parameter off by up to 30%."""
    return render(scene, target, rng, perturb(sample_params(target, rng), rng, spread=0.3))


def washed_out(scene: Scene, clear: np.ndarray, target: str, rng: np.random.Generator) -> np.ndarray:
    """Weak weather, then pulled to a bright grey with little variance."""
    weak = 0.5 * faithful(scene, clear, target, rng) + 0.5 * clear
    z = (weak - weak.mean()) / max(float(weak.std()), 1e-6)
    return np.clip(z * (WASHED_OUT_STD / 255) + WASHED_OUT_MEAN / 255, 0.0, 1.0)


def misaligned(scene: Scene, clear: np.ndarray, target: str, rng: np.random.Generator) -> np.ndarray:
    """A faithful translation whose geometry drifts by a smooth warp of ~8% of the width."""
    img = faithful(scene, clear, target, rng)
    h, w = scene.shape
    dx = smooth_noise(rng, h, w, w / 3) * 0.08 * w + rng.uniform(-0.04, 0.04) * w
    dy = smooth_noise(rng, h, w, w / 3) * 0.05 * h
    return _bilinear_sample(img, dy, dx)


def style_only(scene: Scene, clear: np.ndarray, target: str, rng: np.random.Generator) -> np.ndarray:
    """The clear image with each channel's mean and std moved to those of the target weather."""
    ref = render(scene, target, rng)
    mu, sd = clear.mean(axis=(0, 1)), clear.std(axis=(0, 1)) + 1e-6
    out = (clear - mu) / sd * ref.std(axis=(0, 1)) + ref.mean(axis=(0, 1))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _bilinear_sample(img: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y = np.clip(yy + dy, 0, h - 1.001)
    x = np.clip(xx + dx, 0, w - 1.001)
    y0, x0 = y.astype(np.int64), x.astype(np.int64)
    fy, fx = (y - y0)[..., None], (x - x0)[..., None]
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bottom = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


GENERATORS: dict[str, Generator] = {
    "faithful": faithful,
    "washed_out": washed_out,
    "misaligned": misaligned,
    "style_only": style_only,
}


def get_generator(name: str) -> Generator:
    """Generator by name; an unknown name lists the valid ones."""
    try:
        return GENERATORS[name]
    except KeyError:
        raise KeyError(f"unknown generator {name!r}; valid: {', '.join(GENERATORS)}") from None
