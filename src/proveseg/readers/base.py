"""What every reader shares: the common source fields, the result of a read, and image/label pairing.

Every reader pairs each image with its label file. An image without its label is an error that
names the file, or, under ``on_invalid: skip``, a counted skip: nothing is dropped silently.

Every source also takes ``label_map`` (a CSV or YAML table, source id -> study id, checked when
the config is validated) and ``unmapped`` (``error``: an id the map does not cover fails the
decode naming the file; ``ignore``: such ids become 255). A user's ``label_map`` replaces the
table a reader brings itself (:meth:`SourceBase.builtin_label_map`: IDD-AW, Mapillary).

A reader that knows its dataset's published splits says so in :meth:`SourceBase.default_splits`,
which is what lets a study name a dataset by ``reader`` and ``root`` alone.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from proveseg.data.labelmap import LabelMap, load_label_map, validate_label_map
from proveseg.data.records import RecordTable
from proveseg.fields import Repeat

__all__ = ["IMAGE_EXTENSIONS", "ReadResult", "ReaderError", "SourceBase", "SplitPresets", "pair_labels",
           "walk_folders", "walk_images"]

SplitPresets = dict[str, dict[str, Any] | None]  # split name (train / val / test) -> reader options, or None

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ReaderError(ValueError):
    """A dataset folder or list that cannot be read as configured."""


@dataclass
class ReadResult:
    """Records found, and what was skipped (reason -> count, reason -> example paths)."""

    records: RecordTable
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, path: str) -> None:
        """Count one skipped entry under ``reason`` (the first five paths are kept as examples)."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(path)


class SourceBase(BaseModel):
    """The fields of every source, whatever its reader; each reader's schema adds its own options.

    A schema narrows ``reader`` to its own name (``Literal["folder"]``), which is what selects it
    in a config, and implements :meth:`read`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # .inf/.nan: never a setting

    name: str
    reader: str
    root: Path
    repeat: Repeat = 1.0
    domains: list[str] | None = None  # keep only these domains (stage1: [clear_day])
    on_invalid: Literal["error", "skip"] = "error"
    take: tuple[float, float] | None = None  # keep this slice [start, end) of a seeded shuffle of the entries
    take_seed: int = 0  # the shuffle behind ``take`` (same seed + disjoint slices = disjoint subsets)
    label_map: Path | None = None  # CSV (source,target) or YAML {source: target}: label ids -> study ids
    unmapped: Literal["error", "ignore"] = "error"  # an id the label map does not cover: fail, or 255

    # split name (train / val / test) -> this reader's options for it; None: the reader has no presets
    DEFAULT_SPLITS: ClassVar[SplitPresets | None] = None

    @model_validator(mode="after")
    def _check_filters(self) -> SourceBase:
        if self.take is not None and not 0.0 <= self.take[0] < self.take[1] <= 1.0:
            raise ValueError(f"take {list(self.take)}: expected [start, end) with 0 <= start < end <= 1")
        if self.domains is not None and not self.domains:
            raise ValueError("domains is an empty list: it keeps nothing (leave it out, or null, to keep every domain)")
        validate_label_map(self.label_map, self.unmapped)
        return self

    @classmethod
    def default_splits(cls) -> SplitPresets | None:
        """The dataset's published splits as ``{train: {...}, val: {...} | None, test: {...}}`` of this reader's
        options, or None when the reader has none (a study must then spell out each split)."""
        return cls.DEFAULT_SPLITS

    def builtin_label_map(self) -> LabelMap | None:
        """The table this reader applies to its label files itself (None: they are already study ids)."""
        return None

    def effective_label_map(self) -> LabelMap | None:
        """The user's ``label_map`` if given, else the reader's own table, else None."""
        if self.label_map is not None:
            return load_label_map(self.label_map, self.unmapped)
        builtin = self.builtin_label_map()
        if builtin is not None and builtin.unmapped != self.unmapped:
            return LabelMap(builtin.lut, builtin.origin, self.unmapped)
        return builtin

    def unlabeled_reason(self) -> str:
        """Why this source's records come without labels (a labeled role refuses such a source with it)."""
        return f"{self.root}: the {self.reader} reader gives no labels"

    @abstractmethod
    def read(self) -> ReadResult:
        """Every record the reader finds, sorted (``domains`` and ``take`` are applied by ``read_source``)."""


def walk_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, in sorted order, following symlinked folders.

    A linked folder is read once: a link back to a folder above it (a cycle), or a second path to a
    folder already read (its images would count twice), is a :class:`ReaderError` naming the link.
    """
    if not folder.is_dir():
        raise ReaderError(f"{folder}: image folder not found")
    return [Path(dirpath) / f for dirpath, filenames in walk_folders(folder)
            for f in filenames if f.lower().endswith(IMAGE_EXTENSIONS)]


def walk_folders(folder: Path, hidden: bool = True) -> list[tuple[str, list[str]]]:
    """``(dirpath, sorted file names)`` of every folder under ``folder``, symlinks followed, each real folder once.

    ``hidden=False`` leaves out names starting with a dot. A symlink that leads back to a folder above it,
    or to a folder already walked through another path, raises :class:`ReaderError` naming the link.
    """
    seen = {os.path.realpath(folder): str(folder)}  # real path -> the path it was first read under
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if hidden or not d.startswith("."))
        here = os.path.realpath(dirpath)
        for d in dirnames:
            path = os.path.join(dirpath, d)
            real = os.path.realpath(path)
            first = seen.setdefault(real, path)
            if first == path:
                continue
            if here == real or here.startswith(real.rstrip(os.sep) + os.sep):
                raise ReaderError(f"{path}: symlink cycle: it leads back to {first} ({real}), a folder above it")
            raise ReaderError(f"{path}: leads to {real}, already read as {first}; its images would count twice "
                              "(remove one of the two paths)")
        out.append((dirpath, sorted(f for f in filenames if hidden or not f.startswith("."))))
    return out


def pair_labels(name: str, pairs: list[tuple[Path, Path, str]], on_invalid: str, labeled: bool = True) -> ReadResult:
    """Records of (image, label, domain) triples whose label exists; missing ones per policy."""
    listing: dict[Path, set[str]] = {}
    images, labels, domains = [], [], []
    result = ReadResult(RecordTable.empty())
    missing: list[str] = []
    for image, label, domain in pairs:
        if labeled:
            names = listing.get(label.parent)
            if names is None:  # one directory listing instead of an exists() call per file
                names = set(os.listdir(label.parent)) if label.parent.is_dir() else set()
                listing[label.parent] = names
            if label.name not in names:
                missing.append(f"{image} (expected label {label})")
                result.skip("missing_label", str(label))
                continue
        images.append(str(image))
        labels.append(str(label) if labeled else "")
        domains.append(domain)
    if missing and on_invalid == "error":
        raise ReaderError(f"dataset {name!r}: {len(missing)} image(s) without a label, e.g. {missing[0]}; "
                          "set on_invalid: skip to train without them (they will be counted)")
    result.records = RecordTable.from_columns({
        "image": images, "label": labels, "dataset": name, "domain": domains,
        "kind": "real" if labeled else "unlabeled", "source": name}, n=len(images)).sorted()
    return result
