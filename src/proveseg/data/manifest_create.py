"""Build a generated-image manifest from a generator's output folder (``proveseg manifest create``).

A generated image is named after the original it was made from; the layout says where the target
domain is in its path:

- ``target/name``: ``GENERATED_DIR/<target>/<name>.<ext>`` (the synthetic benchmark's layout)
- ``name_target``: ``GENERATED_DIR/<name>_<target>.<ext>`` (the target after the last underscore)
- ``flat``: ``GENERATED_DIR/<name>.<ext>``, one target domain given by the caller

Each image is matched to the original with stem ``<name>`` anywhere under the originals folder, and
that original's label at the same relative path under the labels folder (``label_suffix`` and
``label_ext`` as in the ``folder`` reader). Every image that cannot be matched is counted under one
reason of ``REASONS``; none is dropped silently. Paths in the manifest are relative to its folder.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from proveseg.atomic import atomic_write_text
from proveseg.data.manifest import MANIFEST_COLUMNS, find_root
from proveseg.readers.base import IMAGE_EXTENSIONS, walk_folders, walk_images

__all__ = ["LAYOUTS", "MAX_EXAMPLES", "REASONS", "ManifestPlan", "create_manifest", "index_originals",
           "manifest_text", "parse_generated", "plan_manifest"]

LAYOUTS = ("target/name", "name_target", "flat")
REASONS = ("not_in_layout", "no_original", "ambiguous_original", "no_label")
MAX_EXAMPLES = 5


@dataclass
class ManifestPlan:
    """The manifest rows and every generated image left out, by reason (examples: ``path: detail``)."""

    out: Path
    rows: list[tuple[str, ...]] = field(default_factory=list)
    unmatched: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    root: Path | None = None  # data root that ``manifest validate`` will check paths against
    outside_root: int = 0  # rows with a path leaving that root (validate rejects them without --root)

    @property
    def matched(self) -> int:
        """Rows in the manifest."""
        return len(self.rows)

    @property
    def n_unmatched(self) -> int:
        """Generated images not in the manifest."""
        return sum(self.unmatched.values())

    def skip(self, reason: str, example: str) -> None:
        """Count one generated image left out for ``reason``, keeping the first examples."""
        self.unmatched[reason] = self.unmatched.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(example)

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {"out": str(self.out), "matched": self.matched, "unmatched": dict(self.unmatched),
                "examples": {k: list(v) for k, v in self.examples.items()},
                "root": None if self.root is None else str(self.root), "outside_root": self.outside_root}


def parse_generated(rel: PurePosixPath, layout: str, target: str | None = None) -> tuple[str, str] | None:
    """``(name, target_domain)`` of a generated image at ``rel`` (relative to the generated folder), or None."""
    parts, stem = rel.parts, rel.stem
    if layout == "target/name":
        return (stem, parts[0]) if len(parts) == 2 else None
    if len(parts) != 1:
        return None
    if layout == "name_target":
        name, sep, dom = stem.rpartition("_")
        return (name, dom) if sep and name and dom else None
    if layout == "flat":
        return (stem, target) if target else None
    raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def index_originals(originals: Path) -> dict[str, list[Path]]:
    """Original images under ``originals`` (recursively, any ``IMAGE_EXTENSIONS``) by stem."""
    index: dict[str, list[Path]] = {}
    for path in walk_images(originals):
        index.setdefault(path.stem, []).append(path)
    return index


def _generated_images(folder: Path, exts: Sequence[str]) -> list[Path]:
    """Files under ``folder`` ending in one of ``exts`` (case-insensitive), sorted, hidden ones left out."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: generated-image folder not found")
    wanted = tuple(e.lower() for e in exts)
    return [Path(dirpath) / f for dirpath, filenames in walk_folders(folder, hidden=False)
            for f in filenames if f.lower().endswith(wanted)]


def _rel(path: Path, base: Path) -> str:
    """``path`` relative to ``base``, with forward slashes."""
    return PurePosixPath(Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base)))).as_posix()


def _label_for(original: Path, originals: Path, labels: Path, suffix: str, ext: str) -> Path:
    rel = original.relative_to(originals)
    return (labels / rel).with_name(rel.stem + suffix + ext)


def _check_options(layout: str, target: str | None, image_ext: Sequence[str]) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if layout == "flat" and not target:
        raise ValueError("--layout flat needs --target DOMAIN (the one target domain of the folder)")
    if layout != "flat" and target:
        raise ValueError(f"--target is for --layout flat; layout {layout} takes the target from each path")
    if not image_ext:
        raise ValueError("--image-ext: no extension given")


def plan_manifest(generated: Path, originals: Path, labels: Path, *, out: Path | None = None,
                  dataset: str = "custom", layout: str = "target/name", target: str | None = None,
                  source_domain: str = "clear_day", image_ext: Sequence[str] | None = None,
                  label_suffix: str = "", label_ext: str = ".png") -> ManifestPlan:
    """Match every generated image to its original and label; writes nothing.

    ``image_ext``: extensions of the generated images (``jpg`` or ``.jpg``; default ``IMAGE_EXTENSIONS``).
    """
    exts = IMAGE_EXTENSIONS if image_ext is None else tuple("." + e.lstrip(".") for e in image_ext if e.strip("."))
    _check_options(layout, target, exts)
    # folders resolved like ``validate_manifest`` resolves the manifest; files under them are kept as found
    generated, originals, labels = Path(generated).resolve(), Path(originals).resolve(), Path(labels).resolve()
    plan = ManifestPlan(Path(out) if out is not None else generated / "manifest.csv")
    index = index_originals(originals)
    base = plan.out.resolve().parent
    for image in _generated_images(generated, exts):
        rel = PurePosixPath(image.relative_to(generated).as_posix())
        parsed = parse_generated(rel, layout, target)
        if parsed is None:
            plan.skip("not_in_layout", f"{rel}: not {_LAYOUT_SHAPES[layout]}")
            continue
        name, dom = parsed
        found = index.get(name, [])
        if not found:
            plan.skip("no_original", f"{rel}: no original named {name} under {originals}")
            continue
        if len(found) > 1:
            shown = [str(p.relative_to(originals)) for p in found[:3]] + ["..."] * (len(found) > 3)
            plan.skip("ambiguous_original", f"{rel}: {len(found)} originals named {name}: {', '.join(shown)}")
            continue
        label = _label_for(found[0], originals, labels, label_suffix, label_ext)
        if not label.is_file():
            plan.skip("no_label", f"{rel}: label {label} not found")
            continue
        plan.rows.append((_rel(image, base), _rel(found[0], base), _rel(label, base), dataset, source_domain, dom))
    plan.rows.sort()
    plan.root = find_root(plan.out.resolve())
    plan.outside_root = _count_outside(plan.rows, base, plan.root)
    return plan


_LAYOUT_SHAPES = {"target/name": "<target>/<name>.<ext>", "name_target": "<name>_<target>.<ext>",
                  "flat": "<name>.<ext> directly in the folder"}


def _count_outside(rows: Iterable[tuple[str, ...]], base: Path, root: Path) -> int:
    """Rows with a path outside ``root`` (by text; ``manifest validate`` also follows symlinks)."""
    top = os.path.abspath(root)
    n = 0
    for row in rows:
        paths = (os.path.normpath(os.path.join(base, p)) for p in row[:3])
        n += any(os.path.commonpath([top, p]) != top for p in paths)
    return n


def manifest_text(rows: Iterable[Sequence[str]]) -> str:
    """The manifest CSV: the ``MANIFEST_COLUMNS`` header, then ``rows``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue()


def create_manifest(generated: Path, originals: Path, labels: Path, **options: Any) -> ManifestPlan:
    """``plan_manifest`` then write the matched rows atomically to ``plan.out`` (even when some are unmatched)."""
    plan = plan_manifest(generated, originals, labels, **options)
    atomic_write_text(plan.out, manifest_text(plan.rows))
    return plan
