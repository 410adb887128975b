"""Class sets: names, colour palettes and the ignore value shared by every part of proveseg.

A class set travels whole: :meth:`ClassSet.to_dict` is what ``run.yaml``, checkpoints and
``metrics.json`` hold, and :func:`resolve_class_set` rebuilds it from that record (or from a
built-in name or a class table file) without looking anything up again.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    def to_dict(self) -> dict[str, Any]:
        """The whole set as plain data: name, names, ids, palette and ignore value."""
        return {"name": self.name, "names": list(self.names), "ids": list(range(self.num_classes)),
                "palette": [list(c) for c in self.palette], "ignore_index": IGNORE_INDEX}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "class set record") -> ClassSet:
        """Rebuild a set written by :meth:`to_dict`; errors name ``source``."""
        try:
            names = tuple(str(n) for n in data["names"])
            palette = tuple((int(c[0]), int(c[1]), int(c[2])) for c in data["palette"])
            ids = [int(i) for i in data.get("ids", range(len(names)))]
            ignore = int(data.get("ignore_index", IGNORE_INDEX))
            name = str(data["name"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{source}: not a class set (needs name, names, palette): {exc!r}") from None
        if ids != list(range(len(names))):
            raise ValueError(f"{source}: class ids must be 0..{len(names) - 1} in order, got {ids}")
        if ignore != IGNORE_INDEX:
            raise ValueError(f"{source}: ignore value {ignore}; proveseg uses {IGNORE_INDEX}")
        return cls(name, names, palette)

    def palette_bytes(self) -> list[int]:
        """A 768-entry flat palette for Pillow 'P' images; the ignore value is black."""
        flat = [c for rgb in self.palette for c in rgb]
        return flat + [0] * (768 - len(flat))

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """RGB image (H, W, 3) uint8 of a label mask; ignore and unknown ids are black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: self.num_classes] = np.asarray(self.palette, dtype=np.uint8)
        return lut[mask.astype(np.uint8)]

    def decode_rgb(self, rgb: np.ndarray, strict: bool = True) -> np.ndarray:
        """Ids of an RGB colour-coded mask (H, W, 3); black (0, 0, 0), the ignore colour of
        :meth:`palette_bytes`, becomes 255 unless the palette holds it.

        Any other colour outside the palette raises ``ValueError`` naming up to five of them with
        their pixel counts (a mask saved as JPEG, resized with interpolation or coded with another
        palette would otherwise train on ignore only); ``strict=False`` maps them to 255 instead.
        """
        code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        keys = np.array([(r << 16) | (g << 8) | b for r, g, b in self.palette], dtype=np.int64)
        order = np.argsort(keys)
        pos = np.clip(np.searchsorted(keys[order], code), 0, len(keys) - 1)
        hit = keys[order][pos] == code
        unknown = ~hit & (code != 0)
        if strict and unknown.any():
            colours, counts = np.unique(code[unknown], return_counts=True)
            top = np.argsort(-counts, kind="stable")[:5]
            listed = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255}): {n} px"
                               for c, n in zip(colours[top].tolist(), counts[top].tolist(), strict=True))
            grey = all(c >> 16 == (c >> 8) & 255 == c & 255 for c in colours.tolist())
            raise ValueError(
                f"{len(colours)} colour(s) in {int(unknown.sum())} pixels are not in the palette of {self.name} "
                f"(nor black, the ignore colour): {listed}"
                + ("; all are grey: class ids stored as RGB? save the mask single-channel" if grey else ""))
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

    Ids must be 0..N-1, each exactly once, and colours distinct (an RGB label could not tell two
    classes of one colour apart); errors name the file and the row (a CSV's line, a YAML's entry).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: class table not found (class_set: a built-in name, or a .csv/.yaml table)")
    entries: dict[int, tuple[str, tuple[int, int, int]]] = {}
    colours: dict[tuple[int, int, int], str] = {}  # colour -> the row (and class) that has it
    for where, row in _class_rows(path):
        try:
            cid = int(row["id"])
            rgb = (int(row["r"]), int(row["g"]), int(row["b"]))
            name = str(row["name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {where}: needs id, name, r, g, b as numbers ({exc!r})") from None
        if cid in entries:
            raise ValueError(f"{path}: {where}: id {cid} appears twice")
        if not all(0 <= c <= 255 for c in rgb):
            raise ValueError(f"{path}: {where}: colour {rgb} outside 0..255")
        first = colours.setdefault(rgb, f"{where} ({name!r})")
        if first != f"{where} ({name!r})":
            raise ValueError(f"{path}: {first} and {where} ({name!r}) have the same colour {rgb}: an RGB label "
                             "could not tell them apart")
        entries[cid] = (name, rgb)
    if sorted(entries) != list(range(len(entries))):
        raise ValueError(f"{path}: ids must be 0..{len(entries) - 1} without gaps, got {sorted(entries)}")
    return ClassSet(path.stem, tuple(entries[i][0] for i in range(len(entries))),
                    tuple(entries[i][1] for i in range(len(entries))))


def _class_rows(path: Path) -> list[tuple[str, Any]]:
    """A class table's rows, each with where it is (``row N``, N the CSV line; ``entry N`` in a YAML list)."""
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            with path.open(encoding="utf-8-sig") as fh:
                data = yaml.safe_load(fh)
            rows = data.get("classes", data) if isinstance(data, dict) else data
            if not isinstance(rows, list):
                raise ValueError(f"{path}: expected a list of classes (or a 'classes:' list)")
            return [(f"entry {i}", row) for i, row in enumerate(rows, start=1)]
        with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is not part of 'id'
            reader = csv.DictReader(fh)
            return [(f"row {reader.line_num}", row) for row in reader]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: class table is not UTF-8 at byte {exc.start}") from None
    except (yaml.YAMLError, csv.Error) as exc:
        raise ValueError(f"{path}: class table cannot be parsed: {exc}") from None


def resolve_class_set(name_or_path: str | Mapping[str, Any] | Any) -> ClassSet:
    """A class set from a built-in name, a class table file, or a whole record (dict or ``ClassSetSpec``)."""
    if isinstance(name_or_path, ClassSet):
        return name_or_path
    if hasattr(name_or_path, "model_dump"):
        name_or_path = name_or_path.model_dump()
    if isinstance(name_or_path, Mapping):
        return ClassSet.from_dict(name_or_path)
    name_or_path = str(name_or_path)
    if name_or_path in CLASS_SETS:
        return CLASS_SETS[name_or_path]
    if Path(name_or_path).suffix.lower() in (".csv", ".yaml", ".yml"):
        return load_class_table(name_or_path)
    return get_class_set(name_or_path)
