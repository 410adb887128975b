"""Procedural street scenes: labels (Cityscapes train ids), depth, albedo and light sources.

A pinhole camera 1.5 m above a flat ground plane looks down a street. Everything is placed in
world coordinates (X lateral, Y height, Z depth, metres) and projected, so depth, size and
occlusion are consistent: far objects are small, high in the image and drawn first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from proveseg.data.classes import CITYSCAPES19, IGNORE_INDEX

__all__ = ["CAMERA_HEIGHT", "CLASS_ID", "SKY_DEPTH", "Canvas", "Scene", "smooth_noise"]

SKY_DEPTH = 1000.0
CAMERA_HEIGHT = 1.5
CLASS_ID = {name: i for i, name in enumerate(CITYSCAPES19.names)}

# Base albedo per class (linear display values in [0, 1]); each instance is jittered.
ALBEDO = {
    "road": (0.30, 0.30, 0.32), "sidewalk": (0.55, 0.52, 0.50), "building": (0.55, 0.45, 0.38),
    "wall": (0.60, 0.58, 0.52), "fence": (0.45, 0.38, 0.30), "pole": (0.40, 0.40, 0.42),
    "traffic light": (0.12, 0.12, 0.12), "traffic sign": (0.80, 0.15, 0.12),
    "vegetation": (0.20, 0.38, 0.12), "terrain": (0.42, 0.45, 0.22), "sky": (0.50, 0.70, 0.95),
    "person": (0.35, 0.25, 0.30), "rider": (0.30, 0.30, 0.55), "car": (0.55, 0.10, 0.10),
    "truck": (0.75, 0.75, 0.70), "bus": (0.85, 0.70, 0.15), "train": (0.70, 0.72, 0.75),
    "motorcycle": (0.15, 0.15, 0.20), "bicycle": (0.20, 0.45, 0.60),
}
# Light kinds and colours (r, g, b intensity) used by the night and dusk renderers.
LIGHT_COLOURS = {
    "lamp": (1.6, 1.3, 0.8), "tail": (1.4, 0.15, 0.1), "head": (1.6, 1.6, 1.4),
    "signal": (0.2, 1.4, 0.4),
}


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth value noise of shape (h, w), roughly N(0, 1), with features ``cell`` pixels wide."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BILINEAR))


@dataclass
class Scene:
    """Intrinsic description of one scene, from which every weather domain is rendered."""

    label: np.ndarray  # (H, W) uint8 train ids, 255 = ignore
    depth: np.ndarray  # (H, W) float32 metres, SKY_DEPTH for sky
    albedo: np.ndarray  # (H, W, 3) float32 in [0, 1]
    shade: np.ndarray  # (H, W) float32 direct-sun factor of each surface
    ground: np.ndarray  # (H, W) bool, upward-facing surfaces (snow settles, rain wets)
    windows: np.ndarray  # (H, W) float32, 1 where a window is lit at night
    lights: np.ndarray  # (N, 6) float32: x, y, radius px, r, g, b
    horizon: float

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.label.shape[0]), int(self.label.shape[1])


class Canvas:
    """Painter's-algorithm canvas in camera coordinates."""

    def __init__(self, rng: np.random.Generator, h: int, w: int) -> None:
        self.rng, self.h, self.w = rng, h, w
        self.f = 0.9 * w
        self.yh = h * rng.uniform(0.36, 0.46)
        self.vx = w * rng.uniform(0.42, 0.58)
        self.sun = rng.choice([-1.0, 1.0])
        self.label = np.full((h, w), CLASS_ID["sky"], np.uint8)
        self.depth = np.full((h, w), SKY_DEPTH, np.float32)
        self.albedo = np.empty((h, w, 3), np.float32)
        self.albedo[:] = ALBEDO["sky"]
        self.shade = np.ones((h, w), np.float32)
        self.ground = np.zeros((h, w), bool)
        self.windows = np.zeros((h, w), np.float32)
        self.lights: list[tuple[float, ...]] = []
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5

    def colour(self, cls: str, jitter: float = 0.08) -> np.ndarray:
        base = np.asarray(ALBEDO[cls], np.float32)
        return np.clip(base * self.rng.uniform(0.75, 1.25) + self.rng.normal(0, jitter, 3), 0.02, 0.98)

    def project(self, x: float, y: float, z: float) -> tuple[float, float]:
        return self.vx + self.f * x / z, self.yh + self.f * (CAMERA_HEIGHT - y) / z

    def paint(self, region: tuple[slice, slice], mask: np.ndarray, cls: str, colour: np.ndarray,
              depth: np.ndarray | float, shade: float = 0.8) -> None:
        label, alb = self.label[region], self.albedo[region]
        label[mask] = IGNORE_INDEX if cls == "ignore" else CLASS_ID[cls]
        alb[mask] = colour
        d = self.depth[region]
        d[mask] = depth[mask] if isinstance(depth, np.ndarray) else depth
        self.shade[region][mask] = shade
        self.ground[region][mask] = cls in ("road", "sidewalk", "terrain")

    def box(self, x: float, y0: float, y1: float, z: float, width: float):
        """Image region of a camera-facing box and its local (u, v) coordinates in [0, 1]."""
        xl, yt = self.project(x - width / 2, y1, z)
        xr, yb = self.project(x + width / 2, y0, z)
        c0, r0 = max(0, math.floor(xl)), max(0, math.floor(yt))
        c1, r1 = min(self.w, max(c0 + 1, math.ceil(xr))), min(self.h, max(r0 + 1, math.ceil(yb)))
        if c0 >= self.w or r0 >= self.h or c1 <= 0 or r1 <= 0:
            return None
        u = np.clip((np.arange(c0, c1) + 0.5 - xl) / max(xr - xl, 1e-3), 0, 1)[None, :]
        v = np.clip((np.arange(r0, r1) + 0.5 - yt) / max(yb - yt, 1e-3), 0, 1)[:, None]
        return (slice(r0, r1), slice(c0, c1)), u, v

    def add_light(self, x: float, y: float, z: float, radius_m: float, kind: str) -> None:
        px, py = self.project(x, y, z)
        if 0 <= px < self.w and 0 <= py < self.h:
            r = max(1.0, self.f * radius_m / z)
            self.lights.append((px, py, r, *LIGHT_COLOURS[kind]))
