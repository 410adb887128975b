"""Class sets: names, colour palettes and the ignore value shared by every part of proveseg."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

__all__ = [
    "CITYSCAPES19", "CLASS_SETS", "IGNORE_INDEX", "ClassSet", "get_class_set", "load_class_table", "resolve_class_set",
]

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassSet:
    """A named list of classes with one RGB colour each; ids are positions in the list."""

    name: str
    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.palette):
            raise ValueError(
                f"class set {self.name!r}: {len(self.names)} names but {len(self.palette)} colours"
            )
        if not 0 < len(self.names) < IGNORE_INDEX:
            raise ValueError(
                f"class set {self.name!r}: needs 1..{IGNORE_INDEX - 1} classes, got {len(self.names)}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Id of the class called ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"class {name!r} not in {self.name}; valid: {', '.join(self.names)}") from None

    def palette_bytes(self) -> list[int]:
        """A 768-entry flat palette for Pillow 'P' images; the ignore value is black."""
        flat = [c for rgb in self.palette for c in rgb]
        return flat + [0] * (768 - len(flat))

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """RGB image (H, W, 3) uint8 of a label mask; ignore and unknown ids are black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: self.num_classes] = np.asarray(self.palette, dtype=np.uint8)
        return lut[mask.astype(np.uint8)]

    def decode_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """Ids of an RGB colour-coded mask (H, W, 3); colours not in the palette become 255."""
        code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        keys = np.array([(r << 16) | (g << 8) | b for r, g, b in self.palette], dtype=np.int64)
        order = np.argsort(keys)
        pos = np.clip(np.searchsorted(keys[order], code), 0, len(keys) - 1)
        hit = keys[order][pos] == code
        return np.where(hit, order[pos], IGNORE_INDEX).astype(np.uint8)


CITYSCAPES19 = ClassSet(
    name="cityscapes19",
    names=(
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
        "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
        "bus", "train", "motorcycle", "bicycle",
    ),
    palette=(
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ),
)

CLASS_SETS: dict[str, ClassSet] = {"cityscapes19": CITYSCAPES19}


def get_class_set(name: str) -> ClassSet:
    """Built-in class set by name; an unknown name lists the valid ones."""
    try:
        return CLASS_SETS[name]
    except KeyError:
        raise KeyError(f"unknown class set {name!r}; valid: {', '.join(sorted(CLASS_SETS))}") from None


def load_class_table(path: str | Path) -> ClassSet:
    """A class set from a CSV (``id,name,r,g,b``) or YAML (list of mappings with those keys).

    Ids must be 0..N-1, each exactly once; errors name the file and the row.
    """
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        with path.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        rows = data.get("classes", data) if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a list of classes (or a 'classes:' list)")
    else:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    entries: dict[int, tuple[str, tuple[int, int, int]]] = {}
    for i, row in enumerate(rows, start=1):
        try:
            cid = int(row["id"])
            rgb = (int(row["r"]), int(row["g"]), int(row["b"]))
            name = str(row["name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: row {i}: needs id, name, r, g, b as numbers ({exc!r})") from None
        if cid in entries:
            raise ValueError(f"{path}: row {i}: id {cid} appears twice")
        if not all(0 <= c <= 255 for c in rgb):
            raise ValueError(f"{path}: row {i}: colour {rgb} outside 0..255")
        entries[cid] = (name, rgb)
    if sorted(entries) != list(range(len(entries))):
        raise ValueError(f"{path}: ids must be 0..{len(entries) - 1} without gaps, got {sorted(entries)}")
    return ClassSet(path.stem, tuple(entries[i][0] for i in range(len(entries))),
                    tuple(entries[i][1] for i in range(len(entries))))


def resolve_class_set(name_or_path: str) -> ClassSet:
    """A built-in class set by name, or a class table file."""
    if name_or_path in CLASS_SETS:
        return CLASS_SETS[name_or_path]
    if Path(name_or_path).suffix.lower() in (".csv", ".yaml", ".yml"):
        return load_class_table(name_or_path)
    return get_class_set(name_or_path)
