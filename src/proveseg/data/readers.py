"""Readers: a dataset on disk -> a sorted :class:`RecordTable` of (image, label, domain) rows.

Every reader pairs each image with its label file. An image without its label is an error that
names the file, or, under ``on_invalid='skip'``, a counted skip: nothing is dropped silently.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from proveseg.data.records import SOURCE_DOMAIN, RecordTable

__all__ = ["ACDC_DOMAINS", "IMAGE_EXTENSIONS", "READERS", "ReadResult", "ReaderError", "read_dataset"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ACDC_DOMAINS = {"fog": "fog", "night": "night", "rain": "rainy", "snow": "snowy", "ref": "clear_day"}


class ReaderError(ValueError):
    """A dataset folder or list that cannot be read as configured."""


@dataclass
class ReadResult:
    """Records found, and what was skipped (reason -> example paths, count)."""

    records: RecordTable
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, path: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(path)


def _walk_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ReaderError(f"{folder}: image folder not found")
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        out += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return out


def _pair(name: str, pairs: list[tuple[Path, Path, str]], on_invalid: str, labeled: bool = True) -> ReadResult:
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


def read_folder(root: Path, name: str, on_invalid: str, *, images: str = "images", labels: str = "labels",
                label_ext: str = ".png", label_suffix: str = "", domain: str | None = None,
                domain_level: int = 0, labeled: bool = True) -> ReadResult:
    """``root/images/<...>/x.jpg`` with ``root/labels/<...>/x<suffix>.png``.

    The domain is ``domain`` if given, else the path component ``domain_level`` below ``images/``
    (the synthetic benchmark: ``train/images/<domain>/scene.jpg``).
    """
    image_root, label_root = root / images, root / labels
    pairs = []
    for img in _walk_images(image_root):
        rel = img.relative_to(image_root)
        if domain is None and len(rel.parts) <= domain_level + 1:
            raise ReaderError(f"{img}: no folder at level {domain_level} under {image_root} to take the domain from")
        dom = domain if domain is not None else rel.parts[domain_level]
        pairs.append((img, (label_root / rel).with_name(rel.stem + label_suffix + label_ext), dom))
    return _pair(name, pairs, on_invalid, labeled)


def read_cityscapes(root: Path, name: str, on_invalid: str, *, split: str = "train",
                    domain: str = SOURCE_DOMAIN) -> ReadResult:
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``gtFine`` train-id (or id) labels."""
    pairs = []
    for img in _walk_images(root / "leftImg8bit" / split):
        stem = img.name.removesuffix("_leftImg8bit.png")
        folder = root / "gtFine" / img.relative_to(root / "leftImg8bit").parent
        train_ids = folder / f"{stem}_gtFine_labelTrainIds.png"
        pairs.append((img, train_ids if train_ids.exists() else folder / f"{stem}_gtFine_labelIds.png", domain))
    return _pair(name, pairs, on_invalid)


def read_acdc(root: Path, name: str, on_invalid: str, *, split: str = "train") -> ReadResult:
    """``rgb_anon/<condition>/<split>/<seq>/*_rgb_anon.png`` with ``gt/...`` labels; domain = condition."""
    pairs = []
    image_root = root / "rgb_anon"
    if not image_root.is_dir():
        raise ReaderError(f"{image_root}: ACDC image folder not found")
    for condition in sorted(p.name for p in image_root.iterdir() if p.is_dir()):
        folder = image_root / condition / split
        if not folder.is_dir():
            continue
        for img in _walk_images(folder):
            stem = img.name.removesuffix("_rgb_anon.png")
            gt = root / "gt" / img.relative_to(image_root).parent
            train_ids = gt / f"{stem}_gt_labelTrainIds.png"
            label = train_ids if train_ids.exists() else gt / f"{stem}_gt_labelIds.png"
            pairs.append((img, label, ACDC_DOMAINS.get(condition, condition)))
    return _pair(name, pairs, on_invalid)


def read_csv_list(root: Path, name: str, on_invalid: str, *, domain: str | None = None) -> ReadResult:
    """A CSV list with ``image``, ``label`` (optional) and ``domain`` columns, paths relative to it."""
    try:
        with root.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except UnicodeDecodeError as exc:
        raise ReaderError(f"{root}: not UTF-8 at byte {exc.start}") from None
    pairs, labeled = [], bool(rows) and "label" in rows[0]
    for i, row in enumerate(rows, start=2):
        if not row.get("image"):
            raise ReaderError(f"{root}: row {i}: field 'image' is empty")
        dom = row.get("domain") or domain
        if not dom:
            raise ReaderError(f"{root}: row {i}: field 'domain' is empty and no default domain is configured")
        pairs.append((root.parent / row["image"], root.parent / (row.get("label") or ""), dom))
    return _pair(name, pairs, on_invalid, labeled)


READERS: dict[str, Callable[..., ReadResult]] = {
    "folder": read_folder,
    "cityscapes": read_cityscapes,
    "acdc": read_acdc,
    "csv": read_csv_list,
}


def read_dataset(reader: str, root: str | Path, name: str, on_invalid: str = "error", **options: object) -> ReadResult:
    """Run the reader called ``reader``; an unknown name lists the valid ones."""
    if reader not in READERS:
        raise KeyError(f"unknown reader {reader!r}; valid: {', '.join(READERS)}")
    return READERS[reader](Path(root), name, on_invalid, **options)
