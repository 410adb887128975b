"""Physically motivated weather rendering of a :class:`Scene` into an RGB image.

Each domain is a light model applied to the scene's albedo, depth and light sources:
fog follows Koschmieder's law (transmission exp(-beta * depth) towards an airlight), night is
ambient starlight plus street lamps, head/tail lights and lit windows, rain wets and darkens the
ground and adds streaks, snow whitens upward surfaces and adds flakes, dawn/dusk is a warm low
sun, and cloudy is flat grey light.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from proveseg.data.records import SOURCE_DOMAIN
from proveseg.synth.scene import CLASS_ID, SKY_DEPTH, Scene, smooth_noise

__all__ = ["DOMAINS", "SOURCE_DOMAIN", "WeatherParams", "render", "sample_params", "to_uint8"]

DOMAINS = ("clear_day", "cloudy", "dawn_dusk", "fog", "night", "rainy", "snowy")
SKY = CLASS_ID["sky"]


@dataclass(frozen=True)
class WeatherParams:
    """Continuous parameters of one rendering; generators perturb them to imitate translators."""

    light: float = 1.0  # overall direct + ambient intensity
    contrast: float = 1.0  # share of directional sun against flat ambient light
    beta: float = 0.0  # fog extinction per metre (visibility ~ 3.9 / beta)
    airlight: float = 0.8  # grey level of the fog/haze veil
    warmth: float = 0.0  # >0 shifts light towards orange
    lamps: float = 0.0  # strength of artificial lights
    rain: float = 0.0  # number of streaks per 10k pixels
    wet: float = 0.0  # darkening of wet ground
    snow: float = 0.0  # snow cover on upward surfaces
    flakes: float = 0.0  # snowflakes per 10k pixels
    noise: float = 0.01  # sensor noise std


def sample_params(domain: str, rng: np.random.Generator) -> WeatherParams:
    """Random parameters for ``domain`` as the benchmark's real renderer draws them."""
    u = rng.uniform
    table = {
        "clear_day": dict(light=u(0.95, 1.1), contrast=u(0.8, 1.0)),
        "cloudy": dict(light=u(0.7, 0.85), contrast=u(0.05, 0.15), beta=u(0.002, 0.006), airlight=0.75),
        "dawn_dusk": dict(light=u(0.45, 0.6), contrast=u(0.7, 0.9), warmth=u(0.5, 0.8), lamps=u(0.3, 0.5)),
        "fog": dict(light=u(0.7, 0.85), contrast=u(0.05, 0.2), beta=u(0.03, 0.07), airlight=u(0.72, 0.85)),
        "night": dict(light=u(0.04, 0.07), contrast=0.0, lamps=u(0.8, 1.2), noise=0.02),
        "rainy": dict(light=u(0.55, 0.7), contrast=u(0.05, 0.15), beta=u(0.008, 0.015), airlight=0.6,
                      rain=u(40, 80), wet=u(0.4, 0.6)),
        "snowy": dict(light=u(0.8, 0.95), contrast=u(0.1, 0.25), beta=u(0.01, 0.02), airlight=0.88,
                      snow=u(0.6, 0.9), flakes=u(60, 120)),
    }
    try:
        return WeatherParams(**table[domain])
    except KeyError:
        raise KeyError(f"unknown domain {domain!r}; valid: {', '.join(DOMAINS)}") from None


def perturb(params: WeatherParams, rng: np.random.Generator, spread: float) -> WeatherParams:
    """The same weather with every non-zero parameter scaled by a factor in 1 +/- spread."""
    return replace(params, **{f.name: getattr(params, f.name) * rng.uniform(1 - spread, 1 + spread)
                              for f in fields(params)})


def _sky(scene: Scene, domain: str, p: WeatherParams) -> np.ndarray:
    h, _ = scene.shape
    t = np.clip(np.arange(h, dtype=np.float32) / max(scene.horizon, 1.0), 0, 1)[:, None, None]
    top, bottom = {
        "clear_day": ((0.35, 0.55, 0.9), (0.72, 0.83, 0.95)),
        "dawn_dusk": ((0.25, 0.25, 0.5), (0.98, 0.6, 0.35)),
        "night": ((0.01, 0.01, 0.04), (0.04, 0.05, 0.1)),
    }.get(domain, ((0.62, 0.64, 0.68), (0.8, 0.8, 0.82)))
    sky = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    return np.broadcast_to(sky, (h, scene.shape[1], 3)) * (p.light if domain != "night" else 1.0)


def _lamp_light(scene: Scene, p: WeatherParams) -> tuple[np.ndarray, np.ndarray]:
    """Illumination cast by the light sources, and their visible glow (bloom)."""
    h, w = scene.shape
    illum = np.zeros((h, w, 3), np.float32)
    glow = np.zeros((h, w, 3), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for x, y, r, *rgb in scene.lights:
        d2 = (xx - x) ** 2 + (yy - y) ** 2
        colour = np.asarray(rgb, np.float32)
        illum += np.exp(-d2 / (2 * (3 * r + 5) ** 2))[..., None] * colour * 0.5
        glow += np.exp(-d2 / (2 * (1.2 * r) ** 2))[..., None] * colour
    window = scene.windows[..., None] * np.asarray((0.9, 0.75, 0.4), np.float32)
    return illum * p.lamps, (glow + window) * p.lamps


def _streaks(rng: np.random.Generator, h: int, w: int, per_10k: float, length: float) -> np.ndarray:
    """Thin slanted rain streaks as an alpha layer in [0, 1]."""
    n = int(per_10k * h * w / 10_000)
    layer = np.zeros(h * w, np.float32)
    x0, y0 = rng.uniform(0, w, n), rng.uniform(-length, h, n)
    slant, lengths = rng.normal(0.25, 0.05), rng.uniform(0.5, 1.0, n) * length
    for s in np.linspace(0.0, 1.0, max(2, int(length))):
        y, x = y0 + s * lengths, x0 + s * lengths * slant
        ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        np.add.at(layer, y[ok].astype(np.int64) * w + x[ok].astype(np.int64), 0.35)
    return np.clip(layer.reshape(h, w), 0, 1)


def render(scene: Scene, domain: str, rng: np.random.Generator, params: WeatherParams | None = None) -> np.ndarray:
    """Render ``scene`` in ``domain``; returns float32 (H, W, 3) in [0, 1]."""
    p = params if params is not None else sample_params(domain, rng)
    h, w = scene.shape
    albedo = scene.albedo.copy()
    ground = scene.ground[..., None]
    if p.snow > 0:
        cover = np.clip(p.snow + 0.35 * smooth_noise(rng, h, w, 6.0), 0, 1)[..., None]
        cover = cover * np.where(scene.label[..., None] == CLASS_ID["road"], 0.7, 1.0)
        albedo = np.where(ground, albedo * (1 - cover) + 0.93 * cover, albedo)
    if p.wet > 0:
        albedo = np.where(ground, albedo * (1 - p.wet), albedo)
    warm = np.asarray((1 + 0.25 * p.warmth, 1 - 0.1 * p.warmth, 1 - 0.45 * p.warmth), np.float32)
    direct = p.contrast * scene.shade + (1 - p.contrast) * 0.85
    light = (p.light * direct)[..., None] * warm
    illum, glow = _lamp_light(scene, p) if p.lamps > 0 else (0.0, 0.0)
    img = albedo * (light + illum)
    if p.wet > 0:  # wet asphalt mirrors the sky and the lights a little
        img = img + ground * (0.12 * p.light + 0.3 * illum)
    img = np.where((scene.label == SKY)[..., None], _sky(scene, domain, p), img) + glow
    if p.beta > 0:
        t = np.exp(-p.beta * np.minimum(scene.depth, SKY_DEPTH))[..., None]
        veil = p.airlight * (p.light if p.lamps == 0 else 0.4)
        img = img * t + veil * (1 - t)
    if p.rain > 0:
        img = img + _streaks(rng, h, w, p.rain, length=0.08 * h)[..., None] * (0.7 - img) * 0.8
    if p.flakes > 0:
        flakes = _streaks(rng, h, w, p.flakes, length=2.0)
        img = img * (1 - flakes[..., None]) + 0.95 * flakes[..., None]
    img = img + rng.normal(0.0, p.noise, img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] to uint8 with rounding."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
