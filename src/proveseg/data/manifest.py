"""Generated-image manifests (../shared/DESIGN.md section 3): load, validate, turn into records.

Validation gives every rejected row a reason. The columns stay Arrow strings end to end: pyarrow
parses the CSV, and its hash kernels (unique, index_in) reduce each path column to its distinct
folders, which are resolved (symlinks too), checked against the root and listed once each in
Python; names are looked up in the listing as sets (an ``exists`` call per file is ~6x slower, a
thread pool of them slower still: DESIGN.md section 8), and only the entries the listing marks as
symlinks are resolved one by one. A row repeating an earlier one is rejected (it would count
twice). Image, original and label headers are read in a thread pool by a byte-level parser (size,
EXIF orientation, end marker); ``deep`` also decodes the image and label fully and checks label
values against the class set.

Optional ``image2_path`` / ``label2_path`` columns pair a row with a second image and its label;
``pair="original"`` pairs each generated image with its own ``original_path`` (and ``label_path``)
instead. A pair goes through the same path, existence, header and (``deep``) decoding checks as the
contract columns, under its own reasons (:data:`proveseg.data.paircheck.PAIR_REASONS`). A header
column that looks like a contract or pair column under another spelling (``label2``, ``Label_Path``,
``lable_path``) is a ManifestError: it would otherwise be ignored as an extra column."""

from __future__ import annotations

import csv
import difflib
import io
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from proveseg.data.classes import ClassSet
from proveseg.data.filters import check_filter
from proveseg.data.imageheader import ImageHeader
from proveseg.data.labelmap import LabelMap
from proveseg.data.paircheck import PAIR_REASONS, pair_problem, read_headers, shown_size
from proveseg.data.records import RecordTable

_STR = np.dtypes.StringDType()

__all__ = ["MANIFEST_COLUMNS", "PAIR_COLUMNS", "REASONS", "ROOT_MARKER", "ManifestError", "ManifestReport",
           "validate_manifest"]

MANIFEST_COLUMNS = ("generated_path", "original_path", "label_path", "dataset", "source_domain", "target_domain")
PAIR_COLUMNS = ("image2_path", "label2_path")  # optional: a second image (and its label) per row
ROOT_MARKER = ".proveseg-root"
REASONS = (
    "empty_field", "absolute_path", "path_escapes_root", "missing_generated", "missing_original", "missing_label",
    "unreadable_image", "truncated_image", "unreadable_label", "truncated_label", "size_mismatch",
    "exif_rotation", "label_out_of_range", "duplicate_row", *PAIR_REASONS, "label2_out_of_range",
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
    paired: int | None = None  # valid rows with a second image; None when the manifest is not paired
    filtered: int = 0  # rows the datasets / target_domains filter left out: not validated, not used, counted

    def as_dict(self) -> dict[str, object]:
        pairs = {} if self.paired is None else {"paired": self.paired}
        filtered = {"filtered": self.filtered} if self.filtered else {}
        return {"rows": self.rows, "found": self.found, "valid": self.valid, **pairs,
                "rejected": dict(sorted(self.rejected.items())), "examples": self.examples, **filtered}


@dataclass
class ManifestReport:
    """Per-dataset counts, each rejected row's reason, and the records of the valid rows."""

    path: str
    generator: str
    datasets: dict[str, DatasetReport]
    rejected_rows: list[tuple[int, str, str]]  # (row number in the file, reason, detail)
    _columns: dict[str, pa.Array] = field(repr=False, default_factory=dict)
    extra_columns: list[str] = field(default_factory=list)  # header columns beyond the contract: kept, ignored
    pair_geometry: str = "shared"  # how a row's second image follows the first through the transforms

    @cached_property
    def records(self) -> RecordTable:
        """Records of the valid rows (kind ``generated``), built on first use, in ``RecordTable.sorted`` order;
        with pair columns when paired.

        Arrow sorts the byte strings (the order numpy's lexsort gives, stable too) and takes the
        rows before anything becomes a numpy string: sorting numpy StringDType columns took longer
        than validating the manifest, and grew worse than linearly.
        """
        cols = self._columns
        order = _sorted_order(cols["dataset"], cols["target_domain"], cols["generated_path"])
        c = {name: _numpy_strings(pc.take(column, order)) for name, column in cols.items()}
        pairs = {}
        if "image2_path" in c:
            pairs = {"image2": c["image2_path"], "label2": c["label2_path"],
                     "pair_geometry": np.where(c["image2_path"] != "", self.pair_geometry, "").astype(_STR)}
        return RecordTable.from_columns({
            "image": c["generated_path"], "label": c["label_path"], "dataset": c["dataset"],
            "domain": c["target_domain"], "kind": "generated", "source": self.generator,
            "origin": c["original_path"], **pairs}, n=len(c["dataset"]))

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
        return {"manifest": self.path, "generator": self.generator, "extra_columns": list(self.extra_columns),
                "datasets": {k: v.as_dict() for k, v in sorted(self.datasets.items())}}


def _sorted_order(dataset: pa.Array, domain: pa.Array, image: pa.Array) -> pa.Array:
    """Row order by (dataset, domain, image), stable: one string sort of ``image``, then the few
    (dataset, domain) groups by a stable integer sort (numpy's radix sort for 16-bit codes).

    Arrow's three-key string sort compared the dataset and domain strings in every comparison and
    grew 1.8x per row from 100k to 1M rows; this is 1.5x and a third faster at 1M.
    """
    if dataset.null_count or domain.null_count:
        keys = pa.table({"dataset": dataset, "domain": domain, "image": image})
        return pc.sort_indices(keys, sort_keys=[("dataset", "ascending"), ("domain", "ascending"),
                                                ("image", "ascending")])
    by_image = pc.array_sort_indices(image).to_numpy()
    codes = np.zeros(len(image), np.int64)
    for column in (dataset, domain):
        encoded = pc.dictionary_encode(column)
        rank = np.empty(len(encoded.dictionary), np.int64)  # the dictionary's values in Arrow's string order
        rank[pc.array_sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(rank))
        codes = codes * len(rank) + rank[encoded.indices.to_numpy()]
    small = codes.astype(np.int16) if codes.max(initial=0) < 2**15 else codes
    return pa.array(by_image[np.argsort(small[by_image], kind="stable")])


def _numpy_strings(column: pa.Array) -> np.ndarray:
    """A StringDType copy of an Arrow string column, without a Python string per row when it is ASCII.

    Arrow pads the strings with NULs to the longest one, and numpy reads that buffer as fixed-width
    bytes and converts it in C. The per-row Python strings of ``to_numpy`` cost more per row at 1M
    rows than at 100k (allocation). Fixed-width bytes lose trailing NULs and pad by code points,
    so nulls, non-ASCII text and strings ending in NUL take the per-row route.
    """
    if (not len(column) or column.null_count or not pc.all(pc.string_is_ascii(column)).as_py()
            or pc.any(pc.ends_with(column, "\x00")).as_py()):
        return column.to_numpy(zero_copy_only=False).astype(_STR)
    width = max(int(pc.max(pc.binary_length(column)).as_py()), 1)
    padded = pc.utf8_rpad(column, width=width, padding="\x00")
    offsets = np.dtype(np.int64 if pa.types.is_large_string(padded.type) else np.int32)
    first = int(np.frombuffer(padded.buffers()[1], offsets, 1, padded.offset * offsets.itemsize)[0])
    return np.frombuffer(padded.buffers()[2], f"S{width}", len(padded), first).astype(_STR)


def find_root(manifest: Path) -> Path:
    """Nearest ancestor holding a ``.proveseg-root`` marker, else the manifest's own folder."""
    for folder in (manifest.parent, *manifest.parent.parents):
        if (folder / ROOT_MARKER).exists():
            return folder
    return manifest.parent


def read_manifest_columns(path: Path) -> tuple[np.ndarray, dict[str, pa.Array]]:
    """Row numbers (the header is row 1) and contract columns (Arrow strings, whitespace trimmed).

    pyarrow's C++ reader takes the common case, one line per row; a file it refuses, or whose rows
    span lines or include blank lines, goes through the ``csv`` module, which names the offending
    row in its errors and counts lines exactly. Both give the same columns (tested).
    """
    numbers, columns, _ = _read_manifest(path)
    return numbers, columns


def _read_manifest(path: Path) -> tuple[np.ndarray, dict[str, pa.Array], list[str]]:
    """:func:`read_manifest_columns` and the header's names (stripped, in file order)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read ({exc.strerror or exc})") from None
    _check_column_names(path, _header_names(raw))
    columns = _read_with_arrow(raw)
    if columns is not None:
        n = len(columns[MANIFEST_COLUMNS[0]])
        lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1)
        if lines == n + 1 and raw.count(b"\r") == raw.count(b"\r\n"):  # the csv module counts a lone CR as a line
            return (np.arange(2, n + 2, dtype=np.int64), {c: _trim(v) for c, v in columns.items()},
                    _header_names(raw))
    numbers, rows = _read_with_csv_module(path, raw)
    return numbers, {c: _trim(pa.array(v, pa.string())) for c, v in rows.items()}, _header_names(raw)


# Other tools' names for the contract columns, named as that column when it is missing; beside it
# they go through the spelling rules below like any other column (``mask`` beside ``label_path`` is
# still refused as a lookalike, ``image_path`` beside ``generated_path`` as a misnamed ``image2_path``).
_SYNONYMS = {
    "generated_path": ("image", "image_path", "img", "img_path", "gen", "gen_path", "generated", "generated_image",
                       "fake", "fake_path", "output", "output_path", "translated", "translated_path"),
    "original_path": ("original", "orig", "orig_path", "original_image", "src", "src_path", "source_image",
                      "source_path", "input", "input_path", "real", "real_path"),
    "label_path": ("label", "labels", "mask", "mask_path", "gt", "gt_path", "annotation", "annotation_path",
                   "seg", "seg_path", "segmentation"),
    "target_domain": ("domain", "target", "condition", "weather", "target_condition", "target_weather"),
    "source_domain": ("source_condition", "source_weather"),
}


def _resembles(name: str, header: Sequence[str] = ()) -> str | None:
    """The contract or pair column that ``name`` looks like under another spelling, or None."""
    known = (*MANIFEST_COLUMNS, *PAIR_COLUMNS)
    if name in known:
        return None
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    for column, names in _SYNONYMS.items():
        if key in names and column not in header:
            return column
    stem = key.removesuffix("path").rstrip("_").replace("mask", "label")
    for column in known:
        if stem in (column, column.removesuffix("_path")):
            return column
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    return close[0] if close else None


def _check_column_names(path: Path, header: list[str]) -> None:
    """Refuse a column that looks like a contract or pair column misspelled: it would be ignored silently."""
    for name in header:
        like = _resembles(name, header)
        if like is not None:
            raise ManifestError(
                f"{path}: column {name!r} looks like {like!r} and would be ignored; rename it {like!r} (the "
                f"manifest's columns: {', '.join((*MANIFEST_COLUMNS, *PAIR_COLUMNS))}; other extra columns are "
                "kept, ignored and listed)")


def _header_names(raw: bytes) -> list[str]:
    """The first CSV record, decoded (a byte-order mark dropped) and stripped; only its bytes are read."""
    text = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig", errors="replace", newline="")
    try:
        return [name.strip() for name in next(csv.reader(text), [])]
    except csv.Error:  # the readers above accepted the file; be as lenient here
        return []


def _read_with_arrow(raw: bytes) -> dict[str, pa.Array] | None:
    """Contract columns parsed by pyarrow, or None when the file needs the careful reader."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return None
    end = raw.find(b"\n")
    try:
        header = next(csv.reader([raw[: end if end >= 0 else len(raw)].decode("utf-8").rstrip("\r")]))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return None
    if ([h.strip() for h in header] != header or len(set(header)) != len(header)
            or not set(MANIFEST_COLUMNS) <= set(header)):
        return None  # the careful reader strips names and names a repeated or missing column
    wanted = [*MANIFEST_COLUMNS, *(c for c in PAIR_COLUMNS if c in header)]
    try:
        table = pacsv.read_csv(io.BytesIO(raw), parse_options=pacsv.ParseOptions(newlines_in_values=True),
                               convert_options=pacsv.ConvertOptions(
                                   column_types=dict.fromkeys(wanted, pa.string()),
                                   include_columns=wanted, strings_can_be_null=False,
                                   quoted_strings_can_be_null=False))
    except pa.ArrowException:
        return None
    return {c: table.column(c).combine_chunks() for c in wanted}


def _read_with_csv_module(path: Path, raw: bytes) -> tuple[np.ndarray, dict[str, list[str]]]:
    try:
        reader = csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline=""))  # Excel writes a byte-order mark
        header = next(reader, None)
        if header is None:
            raise ManifestError(f"{path}: empty file, expected a header with {', '.join(MANIFEST_COLUMNS)}")
        header = [name.strip() for name in header]
        _check_header(path, header)
        rows, numbers = [], []
        for row in reader:
            if row:
                rows.append(row)
                numbers.append(reader.line_num)
    except UnicodeDecodeError as exc:
        hint = "; it starts like UTF-16: save it as UTF-8" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ManifestError(f"{path}: not valid UTF-8 (byte {exc.start}: {exc.reason}){hint}") from None
    except csv.Error as exc:
        raise ManifestError(f"{path}: malformed CSV: {exc}") from None
    widths = np.fromiter(map(len, rows), np.int64, len(rows))
    bad = np.flatnonzero(widths != len(header))
    if len(bad):
        raise ManifestError(f"{path}: row {numbers[bad[0]]}: {widths[bad[0]]} fields, header has {len(header)}")
    fields = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    wanted = [*MANIFEST_COLUMNS, *(c for c in PAIR_COLUMNS if c in header)]
    return np.asarray(numbers, np.int64), {c: list(fields[header.index(c)]) for c in wanted}


def _check_header(path: Path, header: list[str]) -> None:
    """Every contract column exactly once (a repeated one would leave the data column a guess)."""
    missing = [c for c in MANIFEST_COLUMNS if c not in header]
    if missing:
        raise ManifestError(f"{path}: header lacks column(s) {', '.join(missing)}; found {', '.join(header)}")
    for c in (*MANIFEST_COLUMNS, *PAIR_COLUMNS):
        where = [i + 1 for i, name in enumerate(header) if name == c]
        if len(where) > 1:
            raise ManifestError(f"{path}: header names column {c!r} {len(where)} times (columns "
                                f"{', '.join(map(str, where))}); which one holds the data is ambiguous")


def _trim(column: pa.Array) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(column)
    return column if pc.all(pc.equal(trimmed, column)).as_py() in (True, None) else trimmed


@dataclass
class _Resolved:
    """One path column resolved: the absolute path per row and a code: 0 found, or one of the below.

    ``distinct``: no two rows resolve to the same path (known without hashing the paths).
    """

    paths: pa.Array
    code: np.ndarray
    distinct: bool = False


_ABSOLUTE, _ESCAPES, _MISSING, _LINK_ESCAPES = 1, 2, 3, 4


class _Listings:
    """Each folder's entry names and which of them are symlinks, listed once per validation and shared
    by the three path columns; each folder's real path (symlinks resolved), resolved once.

    ``listdir`` builds the names in C; ``scandir`` costs a little more (a Python loop over the
    entries) but tells symlinks apart from the directory entry itself (``d_type``, no ``stat``), so
    only real symlinks are ever resolved. Any entry of the right name counts as found and the
    header pass (the default) rejects a folder or a broken link named like an image as unreadable.
    Listing in threads measured no faster (the work holds the GIL).
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self._real: dict[str, str] = {}

    def _list(self, folder: str) -> tuple[frozenset[str], frozenset[str]]:
        entries = self._entries.get(folder)
        if entries is None:
            try:
                with os.scandir(folder) as it:
                    found = list(it)
                entries = (frozenset([e.name for e in found]), frozenset([e.name for e in found if e.is_symlink()]))
            except (OSError, ValueError):  # ValueError: a NUL byte in the path
                entries = (frozenset(), frozenset())
            self._entries[folder] = entries
        return entries

    def __getitem__(self, folder: str) -> frozenset[str]:
        return self._list(folder)[0]

    def links(self, folder: str) -> frozenset[str]:
        """Names in ``folder`` that are symlinks."""
        return self._list(folder)[1]

    def real(self, folder: str) -> str:
        """``folder`` with every symlink resolved, with a trailing separator."""
        real = self._real.get(folder)
        if real is None:
            try:
                real = os.path.join(os.path.realpath(folder), "")
            except ValueError:  # a NUL byte: no such folder, its names will be missing
                real = os.path.join(folder, "")
            self._real[folder] = real
        return real


def _split(distinct: pa.Array) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """Names, distinct folder keys ('' when none) and each value's folder, by Arrow kernels."""
    parts = pc.split_pattern(distinct, "/", max_splits=1, reverse=True)
    flat, offsets = parts.flatten(), parts.offsets.to_numpy()
    names = flat.take(pa.array(offsets[1:] - 1))
    in_folder = pa.array(np.diff(offsets) == 2)
    keys = pc.if_else(in_folder, pc.binary_join_element_wise(flat.take(pa.array(offsets[:-1])), "/", ""), "")
    folders = pc.unique(keys)
    return names, folders, pc.index_in(keys, value_set=folders).to_numpy()


def _folder_codes(folders: list[str], base: str, root: str, allow_absolute: bool, listings: _Listings,
                  ) -> tuple[np.ndarray, list[str], list[tuple[int, str, bool]]]:
    """Per folder key: its code and normalised path with a separator; and (index, path, absolute) to list."""
    folder_code = np.zeros(len(folders), np.int8)
    prefixes, checks = [], []
    for k, key in enumerate(folders):
        absolute = os.path.isabs(key)
        folder = os.path.normpath(key if absolute else os.path.join(base, key or "."))
        if absolute and not allow_absolute:
            folder_code[k] = _ABSOLUTE
        elif not absolute and not os.path.join(folder, "").startswith(root):
            folder_code[k] = _ESCAPES
        elif not absolute and not listings.real(folder).startswith(root):
            folder_code[k] = _LINK_ESCAPES  # inside the root as text, outside through a symlinked folder
        else:
            checks.append((k, folder, absolute))
        prefixes.append(os.path.join(folder, ""))
    return folder_code, prefixes, checks


def _name_code(name: str, folder: str, missing: set[str], links: frozenset[str], root: str) -> int:
    """The code of one name that is missing from its folder's listing or is a symlink there."""
    if name in missing:
        return _ESCAPES if name in ("", ".", "..") else _MISSING
    if name in links and not os.path.realpath(os.path.join(folder, name)).startswith(root):
        return _LINK_ESCAPES
    return 0


def _resolve_column(values: pa.Array, base: str, root: str, allow_absolute: bool, listings: _Listings,
                    ) -> _Resolved:
    """Resolve a path column against ``base`` and check each file against its folder's listing.

    The work is per distinct value (original and label columns repeat each source once per target
    domain) split into folder and name by Arrow kernels, and per distinct folder in Python;
    per-row results come back through Arrow's hash lookup of each value among the distinct ones.
    A relative path inside the root may still leave it through a symlink: each folder's real path
    is checked, and each name the listing marks as a symlink is resolved.
    """
    distinct = pc.unique(values)
    names, folders, folder_of = _split(distinct)
    folder_code, prefixes, checks = _folder_codes(folders.to_pylist(), base, root, allow_absolute, listings)
    code = folder_code[folder_of]
    order = np.argsort(folder_of, kind="stable")
    bounds = np.searchsorted(folder_of[order], np.arange(len(folders) + 1))
    grouped_names = names.take(pa.array(order)).to_pylist()
    for k, folder, absolute in checks:
        group = grouped_names[bounds[k]:bounds[k + 1]]
        missing = set(group).difference(listings[folder])
        links = frozenset() if absolute else listings.links(folder).intersection(group)
        if missing or links:  # only then is any work done per name
            for i, name in zip(order[bounds[k]:bounds[k + 1]].tolist(), group, strict=True):
                if name in missing or name in links:
                    code[i] = _name_code(name, folder, missing, links, root)
    full = pc.binary_join_element_wise(pa.array(prefixes, pa.string()).take(pa.array(folder_of)), names, "")
    unique_folders = len(set(prefixes)) == len(prefixes)  # then distinct values are distinct paths
    if len(distinct) == len(values):  # unique() keeps first-seen order: the values themselves
        return _Resolved(full, code, unique_folders)
    inverse = pc.index_in(values, value_set=distinct)
    return _Resolved(full.take(inverse), code[inverse.to_numpy()])


_headers = read_headers  # the thread-pooled header reads, shared with the csv reader's pair checks


_shown = shown_size


def _compare(img: ImageHeader | str, lab: ImageHeader | str, orig: ImageHeader | str,
             paths: tuple[str, str, str]) -> tuple[str, str] | None:
    """The first problem of a row's (generated, label, original) headers, naming the file; None when none."""
    image, label, original = paths
    for header, path, what in ((img, image, "image"), (lab, label, "label")):
        if isinstance(header, str):
            return f"unreadable_{what}", f"{path}: {header}"
        if not header.complete:
            return f"truncated_{what}", f"{path}: end marker missing"
    assert isinstance(img, ImageHeader) and isinstance(lab, ImageHeader)
    if lab.format == "JPEG":
        return "unreadable_label", (f"{label}: a JPEG label: lossy compression changes class ids and colours near "
                                    "every edge; labels must be stored losslessly (PNG)")
    if img.orientation != lab.orientation:
        return "exif_rotation", f"image EXIF orientation {img.orientation} ({image}), label {lab.orientation} ({label})"
    if (img.width, img.height) != (lab.width, lab.height):
        return "size_mismatch", f"image {img.width}x{img.height} ({image}), label {lab.width}x{lab.height} ({label})"
    if isinstance(orig, str):
        return "unreadable_image", f"original {original}: {orig}"
    if not orig.complete:
        return "truncated_image", f"original {original}: end marker missing"
    if _shown(orig) != _shown(lab):
        (ow, oh), (lw, lh) = _shown(orig), _shown(lab)
        return "size_mismatch", (f"original {ow}x{oh} ({original}), label {lw}x{lh} ({label}): the noise control "
                                 "draws noise of the original's size")
    return None


def _decode_check(image: str, label: str, class_set: ClassSet | None, view: str = "",
                  label_map: LabelMap | None = None) -> tuple[str, str] | None:
    """The first decoding problem of an image and its label (``view`` '2': a pair's, whose label may be '');
    the label's ids go through ``label_map`` (the generator's) when given."""
    from proveseg.data.decode import LabelDecodeError, decode_image, decode_label

    try:
        decode_image(image, exif=False)
    except OSError as exc:
        return f"unreadable_image{view}", f"decode failed: {exc}"
    if not label:
        return None
    try:
        decode_label(label, class_set, label_map=label_map)
    except LabelDecodeError as exc:
        return f"label{view}_out_of_range", str(exc)
    except OSError as exc:
        return f"unreadable_label{view}", f"decode failed: {exc}"
    return None


def validate_manifest(path: str | Path, generator: str | None = None, *, datasets: Iterable[str] | None = None,
                      target_domains: Iterable[str] | None = None, deep: bool = False,
                      class_set: ClassSet | None = None, root: str | Path | None = None,
                      allow_absolute: bool = False, threads: int = 4, check_files: bool = True,
                      pair: str = "columns", pair_geometry: str = "shared",
                      label_map: LabelMap | None = None) -> ManifestReport:
    """Validate a manifest and return its report with the records of the valid rows.

    ``datasets`` / ``target_domains`` filter rows before validation; the rows they leave out are counted per
    dataset value as ``filtered`` (a value no row of which is kept gets a report of its own, with ``rows`` 0).
    ``check_files=False`` checks existence only; ``deep`` decodes every image and label fully.
    A manifest with a header but no rows is a ManifestError (a generator that wrote nothing).
    ``pair``: ``columns`` pairs the rows that fill ``image2_path`` (when the manifest has that
    column), ``original`` pairs every row with its ``original_path`` and ``label_path``; a pair's
    transforms follow ``pair_geometry`` (``shared`` also requires equal sizes). ``deep`` decodes the
    labels through ``label_map`` (the generator's, see :mod:`proveseg.data.labelmap`) when given.
    """
    path = Path(path).resolve()
    name = generator or path.parent.name
    root_dir = Path(root).resolve() if root is not None else find_root(path)
    numbers, cols, header = _read_manifest(path)
    if not len(numbers):
        raise ManifestError(f"{path}: a header but no rows")
    for column, wanted in (("dataset", datasets), ("target_domain", target_domains)):
        check_filter(f"{path} (generator {name})", f"{column} filter", None if wanted is None else list(wanted),
                     pc.unique(cols[column]).to_pylist())
    numbers, cols, filtered = _filter_rows(numbers, cols, datasets=datasets, target_domains=target_domains)
    pair_paths = _pair_paths(path, cols, pair, pair_geometry)
    out = _Rejections(len(numbers))
    for c in MANIFEST_COLUMNS:
        out.reject(np.flatnonzero(pc.utf8_length(cols[c]).to_numpy() == 0), "empty_field", f"field {c!r} is empty")
    if pair_paths:
        out.reject(np.flatnonzero(_filled(cols["label2_path"]) & ~_filled(cols["image2_path"])), "empty_field",
                   "field 'image2_path' is empty but 'label2_path' is set")
    resolved = _resolve_paths(cols, path.parent, root_dir, allow_absolute, out, pair_paths)
    found = out.code < 0
    _reject_duplicates(cols, resolved, numbers, out)
    if check_files or deep:
        _check_headers(resolved, out, threads, pair_geometry)
    if deep:
        _check_decoding(resolved, out, class_set, threads, label_map)
    valid = out.code < 0
    reports = _dataset_reports(cols["dataset"], numbers, found, out)
    for value, n in filtered.items():
        reports.setdefault(value, DatasetReport()).filtered = n
    reports = dict(sorted(reports.items()))
    bad = np.flatnonzero(~valid)
    rejected = [(int(numbers[r]), REASONS[out.code[r]], out.detail[r]) for r in bad.tolist()]
    columns = {**{c: resolved[c].paths for c in (*_PATHS, *pair_paths)}, "dataset": cols["dataset"],
               "target_domain": cols["target_domain"]}
    if pair == "original":
        columns.update(image2_path=resolved["original_path"].paths, label2_path=resolved["label_path"].paths)
    if "image2_path" in columns:
        _count_pairs(reports, cols["dataset"], valid & _filled(columns["image2_path"]))
    if len(bad):
        keep_rows = pa.array(np.flatnonzero(valid))
        columns = {c: v.take(keep_rows) for c, v in columns.items()}
    extra = list(dict.fromkeys(h for h in header if h not in (*MANIFEST_COLUMNS, *PAIR_COLUMNS)))
    return ManifestReport(str(path), name, reports, rejected, columns, extra, pair_geometry)


def _filled(column: pa.Array) -> np.ndarray:
    """Whether each value is non-empty."""
    return np.asarray(pc.utf8_length(column).to_numpy(zero_copy_only=False) > 0)


def _pair_paths(path: Path, cols: dict[str, pa.Array], pair: str, geometry: str) -> tuple[str, ...]:
    """The pair path columns to validate (``()`` when the rows are not paired through columns).

    A manifest with ``image2_path`` but no ``label2_path`` gets an empty ``label2_path``: its pairs
    have no label.
    """
    if pair not in ("columns", "original") or geometry not in ("shared", "independent"):
        raise ValueError(f"pair {pair!r} / pair_geometry {geometry!r}: expected columns|original / shared|independent")
    if "image2_path" not in cols:
        return ()
    if pair == "original":
        raise ManifestError(f"{path}: pair: original pairs each row with its original_path, but the manifest also "
                            "has an image2_path column: use one or the other")
    cols.setdefault("label2_path", pa.array([""] * len(cols["image2_path"]), pa.string()))
    return PAIR_COLUMNS


def _count_pairs(reports: dict[str, DatasetReport], dataset: pa.Array, paired: np.ndarray) -> None:
    """Set each dataset report's number of valid paired rows."""
    names = np.asarray(dataset.to_numpy(zero_copy_only=False), dtype=object)
    for name, report in reports.items():
        report.paired = int(np.count_nonzero(paired & (names == name)))


def _filter_rows(numbers: np.ndarray, cols: dict[str, pa.Array], *, datasets: Iterable[str] | None,
                 target_domains: Iterable[str] | None) -> tuple[np.ndarray, dict[str, pa.Array], dict[str, int]]:
    """The rows whose dataset and target domain are among those wanted (``None``: any), and the number of
    rows left out per dataset value."""
    keep = None
    for column, wanted in (("dataset", datasets), ("target_domain", target_domains)):
        if wanted is not None:
            hit = pc.is_in(cols[column], value_set=pa.array(list(wanted), pa.string()))
            keep = hit if keep is None else pc.and_(keep, hit)
    if keep is None:
        return numbers, cols, {}
    mask = keep.to_numpy(zero_copy_only=False)
    left_out = pc.value_counts(cols["dataset"].filter(pa.array(~mask))).to_pylist()
    rows = np.flatnonzero(mask)
    return (numbers[rows], {c: v.take(pa.array(rows)) for c, v in cols.items()},
            {str(v["values"]): int(v["counts"]) for v in left_out})


def _resolve_paths(cols: dict[str, pa.Array], base: Path, root_dir: Path, allow_absolute: bool,
                   out: _Rejections, pair_paths: tuple[str, ...] = ()) -> dict[str, _Resolved]:
    """Resolve the path columns; reject absolute paths, paths leaving the root, then missing files.

    A pair column's empty values (rows without a pair, or a pair without a label) stay empty.
    """
    resolved: dict[str, _Resolved] = {}
    listings = _Listings()
    root_prefix = os.path.join(str(root_dir), "")
    for c in (*_PATHS, *pair_paths):
        resolved[c] = res = _resolve_column(cols[c], str(base), root_prefix, allow_absolute, listings)
        if c in pair_paths:
            empty = ~_filled(cols[c])
            res.code[empty], res.distinct = 0, False
            res.paths = pc.if_else(pa.array(empty), "", res.paths)
        for value, why in ((_ABSOLUTE, "absolute_path"), (_ESCAPES, "path_escapes_root")):
            out.reject(np.flatnonzero(res.code == value), why,
                       _details(f"{c}=", cols[c], f" (root {root_dir})", quoted=True))
        out.reject(np.flatnonzero(res.code == _LINK_ESCAPES), "path_escapes_root",
                   _link_details(c, cols[c], res, root_dir))
    for c in (*_PATHS, *pair_paths):
        out.reject(np.flatnonzero(resolved[c].code == _MISSING), f"missing_{c.removesuffix('_path')}",
                   _details(f"{c}: ", resolved[c].paths))
    return resolved


def _link_details(c: str, values: pa.Array, res: _Resolved, root_dir: Path) -> Callable[[np.ndarray], list[str]]:
    """Details of rows whose path leaves the root through a symlink: the value and where it really leads."""
    def describe(rows: np.ndarray) -> list[str]:
        return [f"{c}={v!r} leads through a symlink to {os.path.realpath(p)}, outside the root {root_dir}"
                for v, p in zip(_pick(values, rows), _pick(res.paths, rows), strict=True)]
    return describe


def _reject_duplicates(cols: dict[str, pa.Array], resolved: dict[str, _Resolved], numbers: np.ndarray,
                       out: _Rejections) -> None:
    """Reject each row (not yet rejected) whose generated image an earlier row already lists.

    The key is the generated image alone (its resolved path): listed twice, under another target
    domain or with another original or label, it would count twice, and at most one of the rows is
    right. Free when no two rows resolve to the same generated image (the common case, known from
    the resolver); the detail names the earlier row and the columns in which the two rows differ.
    """
    alive = np.flatnonzero(out.code < 0)
    if resolved["generated_path"].distinct or len(alive) < 2:
        return
    take = pa.array(alive)
    key = pc.dictionary_encode(resolved["generated_path"].paths.take(take)).indices.to_numpy(zero_copy_only=False)
    first = np.unique(key, return_index=True, return_inverse=True)
    earlier = alive[first[1][first[2].reshape(-1)]]
    repeats = np.flatnonzero(earlier != alive)
    if not len(repeats):
        return
    first_of = dict(zip(alive[repeats].tolist(), earlier[repeats].tolist(), strict=True))
    compared = {c: resolved[c].paths if c in resolved else cols[c]
                for c in (*MANIFEST_COLUMNS[1:], *PAIR_COLUMNS) if c in resolved or c in cols}

    def describe(rows: np.ndarray) -> list[str]:
        details = []
        for r in rows.tolist():
            e = first_of[r]
            differ = [c for c, v in compared.items() if v[r].as_py() != v[e].as_py()]
            details.append(f"same generated image as row {numbers[e]}"
                           + (f", with another {', '.join(differ)}" if differ else ""))
        return details

    out.reject(alive[repeats], "duplicate_row", describe)


def _unique_headers(column: pa.Array, rows: np.ndarray, threads: int,
                    ) -> tuple[list[str], np.ndarray, list[ImageHeader | str]]:
    """The distinct paths of ``rows``, each row's index among them, and their headers (each read once)."""
    values = column.take(pa.array(rows, pa.int64()))
    unique = pc.unique(values).to_pylist()
    return unique, pc.index_in(values, value_set=pa.array(unique, pa.string())).to_numpy(), _headers(unique, threads)


def _check_headers(resolved: dict[str, _Resolved], out: _Rejections, threads: int, geometry: str = "shared") -> None:
    """Read the headers of each image, label and original not yet rejected; reject unreadable, truncated
    or mismatched ones (the original's size must match the label: the noise control draws noise of it).
    Then the pairs' headers, against ``geometry`` (:func:`proveseg.data.paircheck.pair_problem`)."""
    rows = np.flatnonzero(out.code < 0)
    images = _pick(resolved["generated_path"].paths, rows)
    img_headers = _headers(images, threads)
    labels, label_of, lab_headers = _unique_headers(resolved["label_path"].paths, rows, threads)
    originals, original_of, orig_headers = _unique_headers(resolved["original_path"].paths, rows, threads)
    for i, row in enumerate(rows.tolist()):
        lab, orig = label_of[i], original_of[i]
        outcome = _compare(img_headers[i], lab_headers[lab], orig_headers[orig],
                           (images[i], labels[lab], originals[orig]))
        if outcome is not None:
            out.reject(np.asarray([row]), *outcome)
    if "image2_path" in resolved:
        _check_pair_headers(resolved, out, threads, geometry, dict(zip(rows.tolist(), img_headers, strict=True)))


def _check_pair_headers(resolved: dict[str, _Resolved], out: _Rejections, threads: int, geometry: str,
                        img_headers: dict[int, ImageHeader | str]) -> None:
    """Reject the pairs (of rows not yet rejected) whose image2 / label2 are unreadable or of the wrong size."""
    rows = np.flatnonzero((out.code < 0) & _filled(resolved["image2_path"].paths))
    images, images2 = _pick(resolved["generated_path"].paths, rows), _pick(resolved["image2_path"].paths, rows)
    heads2 = _headers(images2, threads)
    labels2 = _pick(resolved["label2_path"].paths, rows)
    with_label = [k for k, label in enumerate(labels2) if label]
    label_heads = dict(zip(with_label, _headers([labels2[k] for k in with_label], threads), strict=True))
    for k, row in enumerate(rows.tolist()):
        found = pair_problem(img_headers[row], heads2[k], label_heads.get(k), geometry,
                             (images[k], images2[k], labels2[k]))
        if found is not None:
            reason, column, detail = found
            out.reject(np.asarray([row]), reason, f"{column}_path: {detail}")


def _check_decoding(resolved: dict[str, _Resolved], out: _Rejections, class_set: ClassSet | None,
                    threads: int, label_map: LabelMap | None = None) -> None:
    """Decode each image and label not yet rejected; reject failures and label values outside the class set."""
    rows = np.flatnonzero(out.code < 0)
    pairs = list(zip(_pick(resolved["generated_path"].paths, rows),
                     _pick(resolved["label_path"].paths, rows), strict=True))
    with ThreadPoolExecutor(max(1, threads)) as pool:  # decoding releases the GIL
        outcomes = list(pool.map(lambda pair: _decode_check(pair[0], pair[1], class_set, "", label_map), pairs))
    for row, outcome in zip(rows.tolist(), outcomes, strict=True):
        if outcome is not None:
            out.reject(np.asarray([row]), *outcome)
    if "image2_path" in resolved:
        rows = np.flatnonzero((out.code < 0) & _filled(resolved["image2_path"].paths))
        pairs = list(zip(_pick(resolved["image2_path"].paths, rows), _pick(resolved["label2_path"].paths, rows),
                         strict=True))
        with ThreadPoolExecutor(max(1, threads)) as pool:
            outcomes = list(pool.map(lambda pair: _decode_check(pair[0], pair[1], class_set, "2", label_map),
                                     pairs))
        for row, outcome in zip(rows.tolist(), outcomes, strict=True):
            if outcome is not None:
                out.reject(np.asarray([row]), *outcome)


def _pick(column: pa.Array, rows: np.ndarray) -> list[str]:
    return column.take(pa.array(rows, pa.int64())).to_pylist()


def _details(prefix: str, column: pa.Array, suffix: str = "", quoted: bool = False,
             ) -> Callable[[np.ndarray], list[str]]:
    """Detail texts, built only for the rejected rows: ``prefix``, the value (``repr`` if quoted), ``suffix``."""
    def describe(rows: np.ndarray) -> list[str]:
        return [f"{prefix}{v!r}{suffix}" if quoted else f"{prefix}{v}{suffix}" for v in _pick(column, rows)]
    return describe


class _Rejections:
    """The first reason each row was rejected for (a code into ``REASONS``, -1 when none) and its detail."""

    def __init__(self, n: int) -> None:
        self.code = np.full(n, -1, np.int8)
        self.detail: dict[int, str] = {}

    def reject(self, rows: np.ndarray, why: str, detail: str | Callable[[np.ndarray], list[str]]) -> None:
        fresh = rows[self.code[rows] < 0]
        if not len(fresh):
            return
        self.code[fresh] = REASONS.index(why)
        texts = [detail] * len(fresh) if isinstance(detail, str) else detail(fresh)
        self.detail.update(zip(fresh.tolist(), texts, strict=True))


def _dataset_reports(dataset: pa.Array, numbers: np.ndarray, found: np.ndarray,
                     out: _Rejections) -> dict[str, DatasetReport]:
    """Per dataset: rows, found, valid, rejected by reason, and up to three example rows per reason."""
    encoded = pc.dictionary_encode(dataset)
    names = encoded.dictionary.to_pylist()
    ds = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    k = len(names)
    valid = out.code < 0
    rows, fnd, vld = (np.bincount(ds[m], minlength=k) for m in (slice(None), found, valid))
    reports = {name: DatasetReport(rows=int(rows[d]), found=int(fnd[d]), valid=int(vld[d]))
               for d, name in enumerate(names)}
    bad = np.flatnonzero(~valid)
    key = ds[bad] * len(REASONS) + out.code[bad]
    order = np.argsort(key, kind="stable")
    keys, starts, counts = np.unique(key[order], return_index=True, return_counts=True)
    examples: list[tuple[int, DatasetReport, str]] = []
    for group, start, count in zip(keys.tolist(), starts.tolist(), counts.tolist(), strict=True):
        report, reason = reports[names[group // len(REASONS)]], REASONS[group % len(REASONS)]
        report.rejected[reason] = count
        examples.extend((int(r), report, reason) for r in bad[order[start:start + min(count, 3)]])
    for row, report, reason in sorted(examples, key=lambda e: e[0]):
        report.examples.append({"row": int(numbers[row]), "reason": reason, "detail": out.detail[row]})
    return dict(sorted(reports.items()))
