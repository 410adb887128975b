"""Street layout: ground, facades, street furniture, vehicles and people on a :class:`Canvas`."""

from __future__ import annotations

import numpy as np

from proveseg.synth.scene import CAMERA_HEIGHT, Canvas, Scene, smooth_noise

__all__ = ["make_scene"]


def make_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Draw one street scene; everything random comes from ``rng``."""
    cv = Canvas(rng, height, width)
    centre, road_half = rng.uniform(-1.0, 1.0), rng.uniform(3.5, 6.5)
    walk = rng.uniform(1.8, 3.5)
    _ground(cv, centre, road_half, walk)
    _skyline(cv)
    for side in (-1.0, 1.0):
        building_x = centre + side * (road_half + walk + rng.uniform(0.5, 3.0))
        _facades(cv, side, building_x)
        if rng.random() < 0.45:
            _low_barrier(cv, centre + side * (road_half + walk + 0.2), "wall" if rng.random() < 0.5 else "fence")
    objects = _street_objects(cv, centre, road_half, walk)
    for _z, draw in sorted(objects, key=lambda o: -o[0]):
        draw()
    if rng.random() < 0.4:
        _ego_hood(cv)
    texture = 1.0 + 0.07 * smooth_noise(rng, height, width, 1.5)
    albedo = np.clip(cv.albedo * texture[..., None], 0.0, 1.0)
    lights = np.asarray(cv.lights, np.float32).reshape(-1, 6)
    return Scene(cv.label, cv.depth, albedo, cv.shade, cv.ground, cv.windows, lights, cv.yh)


def _ground(cv: Canvas, centre: float, road_half: float, walk: float) -> None:
    below = cv.yy > cv.yh + 0.5
    dy = np.maximum(cv.yy - cv.yh, 1e-3)
    z = cv.f * CAMERA_HEIGHT / dy
    lateral = (cv.xx - cv.vx) * CAMERA_HEIGHT / dy - centre
    region = (slice(None), slice(None))
    verge = ["terrain" if cv.rng.random() < 0.6 else "sidewalk" for _ in range(2)]
    outer = np.where(lateral < 0, 0, 1)
    for cls in ("terrain", "sidewalk"):
        m = below & (np.abs(lateral) >= road_half + walk) & (np.asarray(verge)[outer] == cls)
        cv.paint(region, m, cls, cv.colour(cls), z, shade=1.0)
    cv.paint(region, below & (np.abs(lateral) >= road_half) & (np.abs(lateral) < road_half + walk),
             "sidewalk", cv.colour("sidewalk"), z, shade=1.0)
    road = below & (np.abs(lateral) < road_half)
    cv.paint(region, road, "road", cv.colour("road", 0.02), z, shade=1.0)
    dashes = road & (np.abs(lateral) < 0.12) & ((z % 9.0) < 4.0)
    edges = road & (np.abs(np.abs(lateral) - (road_half - 0.3)) < 0.08)
    cv.albedo[dashes | edges] = (0.85, 0.85, 0.82)


def _skyline(cv: Canvas) -> None:
    """Distant trees or buildings along the horizon, where no facade will cover them."""
    cls = "vegetation" if cv.rng.random() < 0.6 else "building"
    cell = 2.0 if cls == "vegetation" else 10.0
    top = cv.yh - cv.h * (0.03 + 0.04 * np.abs(smooth_noise(cv.rng, 1, cv.w, cell)[0]))
    mask = (cv.yy <= cv.yh + 0.5) & (cv.yy >= top[None, :])
    cv.paint((slice(None), slice(None)), mask, cls, cv.colour(cls) * 0.8, 150.0, shade=0.7)


def _facade_mask(cv: Canvas, x_world: float, z0: float, z1: float, y0: float, y1: float):
    """Pixels of a wall parallel to the street at lateral ``x_world`` between depths z0..z1."""
    dx = cv.xx - cv.vx
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(dx * x_world > 0, cv.f * x_world / dx, 1e6).astype(np.float32)
    top = cv.yh + cv.f * (CAMERA_HEIGHT - y1) / z
    bottom = cv.yh + cv.f * (CAMERA_HEIGHT - y0) / z
    mask = (z >= z0) & (z < z1) & (cv.yy >= top) & (cv.yy <= bottom)
    return mask, z


def _facades(cv: Canvas, side: float, x_world: float) -> None:
    rng = cv.rng
    z = rng.uniform(3.0, 8.0)
    shade = 0.95 if side == cv.sun else 0.55
    region = (slice(None), slice(None))
    while z < 140.0:
        length, height = rng.uniform(8.0, 28.0), rng.uniform(6.0, 28.0)
        if rng.random() < 0.85:
            mask, zz = _facade_mask(cv, x_world, z, z + length, 0.0, height)
            cv.paint(region, mask, "building", cv.colour("building", 0.1), zz, shade=shade)
            along, up = zz - z, CAMERA_HEIGHT - (cv.yy - cv.yh) * zz / cv.f
            pane = mask & ((along % 3.0) > 0.9) & ((along % 3.0) < 2.1) & ((up % 3.2) > 1.0) \
                & ((up % 3.2) < 2.2) & (up > 1.5) & (up < height - 0.8)
            cv.albedo[pane] = (0.16, 0.19, 0.24)
            lit = rng.random(4096) < 0.35
            cell = np.where(pane, np.floor(along / 3.0) * 31 + np.floor(up / 3.2) * 7, 0)
            cv.windows[pane & lit[cell.astype(np.int64) % 4096]] = 1.0
        z += length + (rng.uniform(2.0, 12.0) if rng.random() < 0.4 else 0.0)


def _low_barrier(cv: Canvas, x_world: float, cls: str) -> None:
    z0 = cv.rng.uniform(4.0, 20.0)
    mask, zz = _facade_mask(cv, x_world, z0, z0 + cv.rng.uniform(10.0, 40.0), 0.0,
                            cv.rng.uniform(1.0, 2.2) if cls == "wall" else 1.3)
    if cls == "fence":
        along = zz - z0
        cv.paint((slice(None), slice(None)), mask & ((along % 0.8) < 0.45), cls, cv.colour(cls), zz)
    else:
        cv.paint((slice(None), slice(None)), mask, cls, cv.colour(cls), zz)


def _street_objects(cv: Canvas, centre: float, road_half: float, walk: float):
    """Each object as (depth, draw callback) so they can be painted far to near."""
    rng, objects = cv.rng, []

    def add(z: float, fn, *args) -> None:
        objects.append((z, lambda: fn(cv, *args)))

    for _ in range(rng.integers(2, 7)):  # poles along the kerb, some with lights or signs
        side = rng.choice([-1.0, 1.0])
        add(z := rng.uniform(5.0, 60.0), _pole, centre + side * (road_half + 0.4), z, rng.random())
    for _ in range(rng.integers(1, 5)):
        side = rng.choice([-1.0, 1.0])
        x = centre + side * (road_half + walk + rng.uniform(-0.5, 1.0))
        add(z := rng.uniform(6.0, 70.0), _tree, x, z)
    kinds = ["car"] * 10 + ["truck", "bus"] * 2 + ["train", "motorcycle"]
    for _ in range(rng.integers(1, 6)):
        kind = kinds[rng.integers(len(kinds))]
        lane = rng.uniform(-road_half + 1.5, road_half - 1.5)
        add(z := rng.uniform(6.0, 60.0), _vehicle, kind, centre + lane, z, lane < 0)
    for _ in range(rng.integers(0, 5)):
        side = rng.choice([-1.0, 1.0])
        x = centre + side * (road_half + rng.uniform(0.5, walk))
        add(z := rng.uniform(4.0, 40.0), _person, x, z, "person")
    for _ in range(rng.integers(0, 3)):
        x = centre + rng.uniform(-road_half + 0.8, road_half - 0.8)
        add(z := rng.uniform(5.0, 40.0), _two_wheeler, x, z, rng.random() < 0.6, rng.random() < 0.7)
    return objects


def _pole(cv: Canvas, x: float, z: float, extra: float) -> None:
    height = cv.rng.uniform(4.0, 8.0)
    box = cv.box(x, 0.0, height, z, 0.16)
    if box:
        region, u, v = box
        cv.paint(region, np.ones((v.size, u.size), bool), "pole", cv.colour("pole"), z)
    if extra < 0.35:
        cv.add_light(x, height - 0.1, z, 0.35, "lamp")
    elif extra < 0.65:
        box = cv.box(x, height - 1.0, height, z - 0.05, 0.35)
        if box:
            region, u, v = box
            cv.paint(region, np.ones((v.size, u.size), bool), "traffic light", cv.colour("traffic light"), z - 0.05)
            cv.add_light(x, height - 0.75, z - 0.1, 0.15, "signal")
    else:
        box = cv.box(x, 2.2, 2.9, z - 0.05, 0.7)
        if box:
            region, u, v = box
            shape = cv.rng.integers(3)
            mask = ((u - 0.5) ** 2 + (v - 0.5) ** 2 < 0.25) if shape == 0 else (
                (v > 2 * np.abs(u - 0.5)) if shape == 1 else np.ones((v.size, u.size), bool))
            cv.paint(region, mask, "traffic sign", cv.colour("traffic sign", 0.15), z - 0.05)


def _tree(cv: Canvas, x: float, z: float) -> None:
    trunk = cv.box(x, 0.0, 3.0, z, 0.3)
    if trunk:
        region, u, v = trunk
        cv.paint(region, np.ones((v.size, u.size), bool), "vegetation", np.array([0.25, 0.18, 0.1], np.float32), z)
    radius = cv.rng.uniform(1.2, 3.0)
    crown = cv.box(x, 2.5, 2.5 + 2 * radius, z, 2 * radius)
    if crown:
        region, u, v = crown
        wobble = 0.12 * smooth_noise(cv.rng, v.size, u.size, max(2.0, u.size / 4))
        mask = (u - 0.5) ** 2 + (v - 0.5) ** 2 < (0.25 + wobble) * 0.9
        cv.paint(region, mask, "vegetation", cv.colour("vegetation"), z, shade=0.75)


def _vehicle(cv: Canvas, kind: str, x: float, z: float, oncoming: bool) -> None:
    width, height = {"car": (1.8, 1.5), "truck": (2.5, 3.4), "bus": (2.6, 3.2), "train": (2.6, 3.6),
                     "motorcycle": (0.8, 1.3)}[kind]
    box = cv.box(x, 0.0, height, z, width)
    if not box:
        return
    region, u, v = box
    if kind == "car":
        mask = (v > 0.35) | (np.abs(u - 0.5) < 0.3 + 0.15 * v / 0.35)
    elif kind == "truck":
        mask = (v > 0.3) | (u > 0.05) & (u < 0.95)
    else:
        mask = np.ones((v.size, u.size), bool)
    if kind == "motorcycle":
        mask = (np.abs(u - 0.5) < 0.25) | (v > 0.45) & (np.abs(u - 0.5) < 0.45)
    cv.paint(region, mask, kind, cv.colour(kind, 0.12), z)
    glass = mask & (v > 0.08) & (v < (0.35 if kind == "car" else 0.45)) & (np.abs(u - 0.5) < 0.38)
    cv.albedo[region][glass] = (0.12, 0.14, 0.18)
    lamp = "head" if oncoming else "tail"
    for side in (-0.38, 0.38):
        cv.add_light(x + side * width, 0.25 * height + 0.3, z - 0.1, 0.12 + 0.02 * width, lamp)


def _person(cv: Canvas, x: float, z: float, cls: str, base: float = 0.0) -> None:
    box = cv.box(x, base, base + cv.rng.uniform(1.55, 1.9), z, 0.55)
    if not box:
        return
    region, u, v = box
    head = (u - 0.5) ** 2 + ((v - 0.07) * 2.2) ** 2 < 0.07
    torso = (v >= 0.13) & (v < 0.58) & (np.abs(u - 0.5) < 0.34)
    legs = (v >= 0.58) & (np.abs(np.abs(u - 0.5) - 0.16) < 0.11)
    cv.paint(region, head | torso | legs, cls, cv.colour(cls, 0.15), z)


def _two_wheeler(cv: Canvas, x: float, z: float, bicycle: bool, ridden: bool) -> None:
    """Side view of a bicycle or motorcycle, optionally with its rider."""
    cls = "bicycle" if bicycle else "motorcycle"
    box = cv.box(x, 0.0, 1.0, z, 1.8)
    if not box:
        return
    region, u, v = box
    mask = np.zeros((v.size, u.size), bool)
    for cu in (0.2, 0.8):
        r = np.sqrt((u - cu) ** 2 + ((v - 0.68) * 0.55) ** 2)
        mask |= (r < 0.17) & ((r > 0.13) if bicycle else True)
    frame = (v > 0.35) & (v < 0.7) & (u > 0.2) & (u < 0.8)
    mask |= frame & ((np.abs(v - 0.4) < 0.06) | (np.abs(u - 0.5 - 0.4 * (v - 0.5)) < 0.05)) if bicycle else frame
    cv.paint(region, mask, cls, cv.colour(cls, 0.1), z)
    if ridden:
        _person(cv, x, z - 0.05, "rider", base=0.6)


def _ego_hood(cv: Canvas) -> None:
    """The recording car's bonnet at the bottom edge: ignore label, as in Cityscapes."""
    rise = cv.h * cv.rng.uniform(0.06, 0.12)
    top = cv.h - rise * np.sqrt(np.clip(1 - ((cv.xx[0] - cv.w / 2) / (0.7 * cv.w)) ** 2, 0, 1))
    mask = cv.yy >= top[None, :]
    cv.paint((slice(None), slice(None)), mask, "ignore", np.array([0.1, 0.1, 0.12], np.float32), 1.0)
