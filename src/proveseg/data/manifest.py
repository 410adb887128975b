"""Generated-image manifests (../shared/DESIGN.md section 3): load, validate, turn into records.

Validation gives every rejected row a reason. Existence is checked by listing each folder once
and looking names up in a set (about 3x faster here than an ``exists`` call per file, while a
thread pool of ``exists`` calls is 14x slower: see DESIGN.md section 8). Image and label headers
are read in a thread pool by a byte-level parser (size, EXIF orientation, end marker); ``deep``
also decodes both files fully and checks label values against the class set.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from proveseg.data.classes import ClassSet
from proveseg.data.imageheader import HeaderError, ImageHeader, read_header
from proveseg.data.records import RecordTable

_STR = np.dtypes.StringDType()

__all__ = ["MANIFEST_COLUMNS", "REASONS", "ROOT_MARKER", "ManifestError", "ManifestReport", "validate_manifest"]

MANIFEST_COLUMNS = ("generated_path", "original_path", "label_path", "dataset", "source_domain", "target_domain")
ROOT_MARKER = ".proveseg-root"
REASONS = (
    "empty_field", "absolute_path", "path_escapes_root", "missing_generated", "missing_original", "missing_label",
    "unreadable_image", "truncated_image", "unreadable_label", "truncated_label", "size_mismatch",
    "exif_rotation", "label_out_of_range",
)
_PATHS = ("generated_path", "original_path", "label_path")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, row and field."""


@dataclass
class DatasetReport:
    rows: int = 0
    found: int = 0
    valid: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, object]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"rows": self.rows, "found": self.found, "valid": self.valid,
                "rejected": dict(sorted(self.rejected.items())), "examples": self.examples}


@dataclass
class ManifestReport:
    """Per-dataset counts, each rejected row's reason, and the records of the valid rows."""

    path: str
    generator: str
    datasets: dict[str, DatasetReport]
    rejected_rows: list[tuple[int, str, str]]  # (row number in the file, reason, detail)
    _columns: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    @cached_property
    def records(self) -> RecordTable:
        """Records of the valid rows (kind ``generated``), built on first use."""
        c = self._columns
        return RecordTable.from_columns({
            "image": c["generated_path"], "label": c["label_path"], "dataset": c["dataset"],
            "domain": c["target_domain"], "kind": "generated", "source": self.generator,
            "origin": c["original_path"]}, n=len(c["dataset"])).sorted()

    @property
    def n_invalid(self) -> int:
        return len(self.rejected_rows)

    def rejected_by_reason(self) -> dict[str, int]:
        """Rejected rows per reason, over every dataset."""
        out: dict[str, int] = {}
        for rep in self.datasets.values():
            for reason, n in rep.rejected.items():
                out[reason] = out.get(reason, 0) + n
        return dict(sorted(out.items()))

    def as_dict(self) -> dict[str, object]:
        return {"manifest": self.path, "generator": self.generator,
                "datasets": {k: v.as_dict() for k, v in sorted(self.datasets.items())}}


def find_root(manifest: Path) -> Path:
    """Nearest ancestor holding a ``.proveseg-root`` marker, else the manifest's own folder."""
    for folder in (manifest.parent, *manifest.parent.parents):
        if (folder / ROOT_MARKER).exists():
            return folder
    return manifest.parent


def read_manifest_rows(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Row numbers (the header is row 1) and contract columns of a manifest; structural errors raise."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise ManifestError(f"{path}: empty file, expected a header with {', '.join(MANIFEST_COLUMNS)}")
            missing = [c for c in MANIFEST_COLUMNS if c not in header]
            if missing:
                raise ManifestError(f"{path}: header lacks column(s) {', '.join(missing)}; found {', '.join(header)}")
            rows, numbers = [], []
            for row in reader:
                if row:
                    rows.append(row)
                    numbers.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    except csv.Error as exc:
        raise ManifestError(f"{path}: malformed CSV: {exc}") from None
    widths = np.fromiter(map(len, rows), np.int64, len(rows))
    bad = np.flatnonzero(widths != len(header))
    if len(bad):
        raise ManifestError(f"{path}: row {numbers[bad[0]]}: {widths[bad[0]]} fields, header has {len(header)}")
    fields = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    columns = {}
    for c in MANIFEST_COLUMNS:
        col = np.asarray(fields[header.index(c)], dtype=_STR)
        padded = np.strings.startswith(col, " ") | np.strings.endswith(col, " ")
        columns[c] = np.strings.strip(col) if padded.any() else col
    return np.asarray(numbers, np.int64), columns


def _resolve_column(values: np.ndarray, base: str, root: str, allow_absolute: bool,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Absolute paths, a reason code per row (0 ok, 1 absolute, 2 escapes) and existence.

    Work is per distinct directory (resolved, checked and listed once), not per row.
    """
    dirs, seps, names = np.strings.rpartition(values, np.asarray("/", dtype=_STR))
    keys, inverse = np.unique(np.strings.add(dirs, seps), return_inverse=True)
    full_dirs, dir_reason, listings = [], np.zeros(len(keys), np.int8), []
    for k, key in enumerate(keys.tolist()):
        absolute = os.path.isabs(key)
        full = os.path.normpath(key if absolute else os.path.join(base, key or "."))
        if absolute and not allow_absolute:
            dir_reason[k] = 1
        elif not absolute and not (full + os.sep).startswith(root):
            dir_reason[k] = 2
        full_dirs.append(full)
        try:
            listings.append(frozenset(os.listdir(full)) if dir_reason[k] == 0 else None)
        except OSError:
            listings.append(frozenset())
    reason = dir_reason[inverse]
    special = (names == "") | (names == ".") | (names == "..")
    reason[special & (reason == 0)] = 2  # a path ending in '..' or '.' is not a file under the root
    paths = np.strings.add(np.asarray(full_dirs, dtype=_STR)[inverse], np.strings.add(os.sep, names))
    exists = np.zeros(len(values), bool)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
    for k, listing in enumerate(listings):
        if listing:  # set lookups: np.isin on StringDType is orders of magnitude slower here
            rows = order[bounds[k]:bounds[k + 1]]
            exists[rows] = [name in listing for name in names[rows].tolist()]
    return paths, reason, exists & (reason == 0)


def _headers(paths: list[str], threads: int) -> list[ImageHeader | str]:
    """Header of each path, or the reason it could not be read, in a thread pool (reads wait on I/O)."""
    def read(chunk: list[str]) -> list[ImageHeader | str]:
        out: list[ImageHeader | str] = []
        for p in chunk:
            try:
                out.append(read_header(p))
            except (HeaderError, OSError) as exc:
                out.append(str(exc) or type(exc).__name__)
        return out

    chunks = [paths[k:k + 1024] for k in range(0, len(paths), 1024)]
    if threads <= 1 or len(chunks) <= 1:
        return [h for c in chunks for h in read(c)]
    with ThreadPoolExecutor(threads) as pool:
        return [h for part in pool.map(read, chunks) for h in part]


def _compare(img: ImageHeader | str, lab: ImageHeader | str) -> tuple[str, str] | None:
    if isinstance(img, str):
        return "unreadable_image", img
    if not img.complete:
        return "truncated_image", "end marker missing"
    if isinstance(lab, str):
        return "unreadable_label", lab
    if not lab.complete:
        return "truncated_label", "end marker missing"
    if img.orientation != lab.orientation:
        return "exif_rotation", f"image EXIF orientation {img.orientation}, label {lab.orientation}"
    if (img.width, img.height) != (lab.width, lab.height):
        return "size_mismatch", f"image {img.width}x{img.height}, label {lab.width}x{lab.height}"
    return None


def _decode_check(image: str, label: str, class_set: ClassSet | None) -> tuple[str, str] | None:
    from proveseg.data.decode import LabelDecodeError, decode_image, decode_label

    try:
        decode_image(image, exif=False)
    except (OSError, SyntaxError) as exc:
        return "unreadable_image", f"decode failed: {exc}"
    try:
        decode_label(label, class_set)
    except LabelDecodeError as exc:
        return "label_out_of_range", str(exc)
    except (OSError, SyntaxError) as exc:
        return "unreadable_label", f"decode failed: {exc}"
    return None


def validate_manifest(path: str | Path, generator: str | None = None, *, datasets: Iterable[str] | None = None,
                      target_domains: Iterable[str] | None = None, deep: bool = False,
                      class_set: ClassSet | None = None, root: str | Path | None = None,
                      allow_absolute: bool = False, threads: int = 4, check_files: bool = True) -> ManifestReport:
    """Validate a manifest and return its report with the records of the valid rows.

    ``datasets`` / ``target_domains`` filter rows before validation (filtered rows are not counted).
    ``check_files=False`` checks existence only; ``deep`` decodes every image and label fully.
    """
    path = Path(path).resolve()
    name = generator or path.parent.name
    root_dir = Path(root).resolve() if root is not None else find_root(path)
    numbers, cols = read_manifest_rows(path)
    keep = np.ones(len(numbers), bool)
    if datasets is not None:
        keep &= np.isin(cols["dataset"], np.asarray(list(datasets), dtype=_STR))
    if target_domains is not None:
        keep &= np.isin(cols["target_domain"], np.asarray(list(target_domains), dtype=_STR))
    numbers = numbers[keep]
    cols = {c: v[keep] for c, v in cols.items()}
    n = len(numbers)
    reason = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)

    def reject(rows: np.ndarray, why: str, text: np.ndarray | str) -> None:
        fresh = rows[reason[rows] == ""]
        reason[fresh] = why
        detail[fresh] = text if isinstance(text, str) else np.asarray(text, dtype=object)[reason[rows] == why]

    for c in MANIFEST_COLUMNS:
        empty = np.flatnonzero(cols[c] == "")
        reject(empty, "empty_field", f"field {c!r} is empty")
    resolved, exists = {}, {}
    root_prefix = os.path.join(str(root_dir), "")
    for c in _PATHS:
        full, code, exists[c] = _resolve_column(cols[c], str(path.parent), root_prefix, allow_absolute)
        resolved[c] = full
        for value, why in ((1, "absolute_path"), (2, "path_escapes_root")):
            rows = np.flatnonzero(code == value)
            reject(rows, why, np.asarray([f"{c}={v!r} (root {root_dir})" for v in cols[c][rows].tolist()]))
    for c in _PATHS:
        rows = np.flatnonzero(~exists[c] & (reason == ""))
        text = np.asarray([f"{c}: {p}" for p in resolved[c][rows].tolist()])
        reject(rows, f"missing_{c.removesuffix('_path')}", text)
    found = reason == ""
    if check_files or deep:
        rows = np.flatnonzero(found)
        images = resolved["generated_path"][rows].tolist()
        unique_labels, label_of = np.unique(resolved["label_path"][rows], return_inverse=True)
        img_headers = _headers(images, threads)
        lab_headers = _headers(unique_labels.tolist(), threads)
        for i, row in enumerate(rows.tolist()):
            outcome = _compare(img_headers[i], lab_headers[label_of[i]])
            if outcome is not None:
                reason[row], detail[row] = outcome
        if deep:
            rows = np.flatnonzero(reason == "")
            pairs = list(zip(resolved["generated_path"][rows].tolist(), resolved["label_path"][rows].tolist(),
                             strict=True))
            with ThreadPoolExecutor(max(1, threads)) as pool:  # decoding releases the GIL
                outcomes = list(pool.map(lambda pair: _decode_check(pair[0], pair[1], class_set), pairs))
            for row, outcome in zip(rows.tolist(), outcomes, strict=True):
                if outcome is not None:
                    reason[row], detail[row] = outcome
    valid = reason == ""
    reports: dict[str, DatasetReport] = {}
    for ds in np.unique(cols["dataset"]).tolist():
        in_ds = cols["dataset"] == ds
        rep = DatasetReport(rows=int(in_ds.sum()), found=int((in_ds & found).sum()), valid=int((in_ds & valid).sum()))
        for row in np.flatnonzero(in_ds & ~valid).tolist():
            rep.rejected[reason[row]] = rep.rejected.get(reason[row], 0) + 1
            if sum(1 for e in rep.examples if e["reason"] == reason[row]) < 3:
                rep.examples.append({"row": int(numbers[row]), "reason": reason[row], "detail": detail[row]})
        reports[ds] = rep
    rejected = [(int(numbers[r]), str(reason[r]), str(detail[r])) for r in np.flatnonzero(~valid).tolist()]
    v = np.flatnonzero(valid)
    columns = {**{c: resolved[c][v] for c in _PATHS}, "dataset": cols["dataset"][v],
               "target_domain": cols["target_domain"][v]}
    return ManifestReport(str(path), name, reports, rejected, columns)
