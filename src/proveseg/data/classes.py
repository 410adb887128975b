"""Class sets: names, colour palettes and the ignore value shared by every part of proveseg."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CITYSCAPES19", "CLASS_SETS", "IGNORE_INDEX", "ClassSet", "get_class_set"]

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
