"""Label maps: a source's label ids -> the study's class ids, applied when a label is decoded.

A map is a 256-entry numpy lookup table (one fancy-index per mask, no per-pixel Python). An id
the table does not cover is never passed through silently: decoding raises
:class:`~proveseg.data.decode.LabelDecodeError` naming the file and the ids, unless the source
says ``unmapped: ignore``, which turns them into 255 (ignore). The ignore value 255 maps to 255
unless the table lists it.

Tables come from a reader (the built-in IDD-AW and Mapillary tables) or from a user's file given
as ``label_map:`` on any source: a CSV with ``source,target`` columns, or a YAML mapping
``{source id: target id}``. The file is checked when the config is validated; problems name the
file, the row (or key) and the field.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from proveseg.data.classes import IGNORE_INDEX, ClassSet

__all__ = ["UNCOVERED", "LabelMap", "LabelMapError", "check_label_map_targets", "load_label_map", "validate_label_map"]

UNCOVERED = -1  # a table entry no source id maps from


class LabelMapError(ValueError):
    """A label-map file that cannot be used: missing, unparsable, or with ids outside 0..255."""


@dataclass(frozen=True, eq=False)
class LabelMap:
    """A lookup table ``lut[source id] = study id`` (``UNCOVERED`` where the map says nothing).

    ``origin`` names where the table came from (a file, or a reader's built-in table) for errors;
    ``unmapped`` is ``error`` (uncovered ids raise) or ``ignore`` (they become 255).
    """

    lut: np.ndarray
    origin: str
    unmapped: str = "error"

    @classmethod
    def from_pairs(cls, pairs: Mapping[int, int], origin: str, unmapped: str = "error") -> LabelMap:
        """A map from ``{source id: study id}``; 255 -> 255 unless ``pairs`` says otherwise."""
        lut = np.full(256, UNCOVERED, np.int16)
        lut[IGNORE_INDEX] = IGNORE_INDEX
        for source, target in pairs.items():
            lut[int(source)] = int(target)
        return cls(lut, origin, unmapped)

    def apply(self, ids: np.ndarray, path: str) -> np.ndarray:
        """``ids`` (uint8) mapped to study ids; uncovered ids raise naming ``path`` (or become 255)."""
        from proveseg.data.decode import LabelDecodeError

        out = self.lut[ids]
        uncovered = out == UNCOVERED
        if uncovered.any():
            if self.unmapped != "ignore":
                values, counts = np.unique(ids[uncovered], return_counts=True)
                listed = ", ".join(f"{v} ({n} px)" for v, n in zip(values[:8].tolist(), counts[:8].tolist(),
                                                                   strict=True))
                raise LabelDecodeError(f"{path}: label ids {listed} are not in the label map {self.origin}: add "
                                       "them to the map, or set unmapped: ignore on the source to map them to "
                                       f"{IGNORE_INDEX}")
            out[uncovered] = IGNORE_INDEX
        return out.astype(np.uint8)

    def targets(self) -> list[int]:
        """The study ids the map produces (255 included when it does)."""
        return sorted({int(t) for t in self.lut.tolist() if t != UNCOVERED})

    def digest(self) -> str:
        """Content hash: the table and the policy (what a record table's hash must change with)."""
        return hashlib.sha256(self.lut.tobytes() + self.unmapped.encode()).hexdigest()


def _as_id(value: object, where: str, field: str) -> int:
    """``value`` as an id in 0..255, or LabelMapError naming ``where`` and ``field``."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.lstrip("-").isdigit():
        raise LabelMapError(f"{where}: field {field!r} is {value!r}, expected an integer id 0..{IGNORE_INDEX}")
    number = int(text)
    if not 0 <= number <= IGNORE_INDEX:
        raise LabelMapError(f"{where}: field {field!r} is {number}, outside 0..{IGNORE_INDEX}")
    return number


def _csv_pairs(path: Path) -> list[tuple[int, int, str]]:
    """The (source, target, where) of each row; ``where`` is the row's line in the file (header: line 1)."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"source", "target"} - set(reader.fieldnames or [])
        if missing:
            raise LabelMapError(f"{path}: header {reader.fieldnames} lacks {sorted(missing)}; expected columns "
                                "source,target")
        pairs = []
        for row in reader:
            where = f"row {reader.line_num}"  # the line: blank lines, which DictReader skips, still count
            if None in row:  # fields beyond the header
                raise LabelMapError(f"{path}: {where}: {len(row) - 1 + len(row[None])} fields, header has "
                                    f"{len(row) - 1}")
            pairs.append((_as_id(row["source"], f"{path}: {where}", "source"),
                          _as_id(row["target"], f"{path}: {where}", "target"), where))
        return pairs


def _yaml_pairs(path: Path) -> list[tuple[int, int, str]]:
    """The (source, target, where) of each key, read from the YAML node tree: keys and values as their text.

    Not ``safe_load``'s values: YAML 1.1 reads ``010`` as octal 8 and ``0x0a`` as 10, and a key given
    twice would silently keep its last value. The text is parsed as a decimal id here.
    """
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise LabelMapError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(node, yaml.MappingNode) or not node.value:
        raise LabelMapError(f"{path}: expected a mapping of source id -> target id (e.g. `7: 0`)")
    pairs = []
    for key, value in node.value:
        where = f"line {key.start_mark.line + 1}: key {key.value!r}" if isinstance(key, yaml.ScalarNode) else ""
        if not where or not isinstance(value, yaml.ScalarNode):
            raise LabelMapError(f"{path}: line {key.start_mark.line + 1}: expected `source id: target id`, "
                                "each a plain integer")
        pairs.append((_as_id(key.value, f"{path}: {where}", "source"),
                      _as_id(value.value, f"{path}: {where}", "target"), where))
    return pairs


def load_label_map(path: Path, unmapped: str = "error") -> LabelMap:
    """Read a ``source,target`` CSV or a ``{source: target}`` YAML; errors name the file, row and field."""
    if not path.is_file():
        raise LabelMapError(f"{path}: label map not found")
    if path.suffix.lower() not in (".csv", ".yaml", ".yml"):
        raise LabelMapError(f"{path}: a label map is a .csv (source,target) or .yaml ({{source: target}}) file")
    try:
        rows = _csv_pairs(path) if path.suffix.lower() == ".csv" else _yaml_pairs(path)
    except UnicodeDecodeError as exc:
        raise LabelMapError(f"{path}: not UTF-8 at byte {exc.start}") from None
    if not rows:
        raise LabelMapError(f"{path}: no rows: a label map must cover the ids of its labels")
    seen: dict[int, str] = {}
    for source, _, where in rows:
        if source in seen:
            raise LabelMapError(f"{path}: {where}: source id {source} is mapped twice (first at {seen[source]})")
        seen[source] = where
    return LabelMap.from_pairs({s: t for s, t, _ in rows}, str(path), unmapped)


def validate_label_map(path: Path | None, unmapped: str) -> None:
    """A config validator's check of a ``label_map`` field: raises ValueError naming the file, row and field."""
    if path is None:
        return
    try:
        load_label_map(path, unmapped)
    except LabelMapError as exc:
        raise ValueError(f"label_map: {exc}") from None


def check_label_map_targets(label_map: LabelMap, class_set: ClassSet, what: str) -> None:
    """Every target of ``label_map`` must be a class id of ``class_set`` or 255; else LabelMapError naming both."""
    bad = [t for t in label_map.targets() if t >= class_set.num_classes and t != IGNORE_INDEX]
    if bad:
        raise LabelMapError(f"{what}: label map {label_map.origin} maps to {bad}, which are not class ids of "
                            f"{class_set.name} (0..{class_set.num_classes - 1}, or {IGNORE_INDEX} = ignore)")
