"""The ``csv`` reader: a CSV list with ``image``, ``label`` (optional) and ``domain`` columns.

Optional ``image2`` / ``label2`` columns pair a row with a second image and its label (a video's
next frame, a generated image's original): a row with an empty ``image2`` has no pair. A pair's
files must exist and have readable headers, ``label2`` the size of ``image2``, and under
``pair_geometry: shared`` ``image2`` the size of ``image`` (:mod:`proveseg.data.paircheck`); a bad
pair is an error naming the file, row and field, or under ``on_invalid: skip`` a counted skip of
the row. A column the reader does not know is an error naming it (a misspelled ``label`` would
otherwise turn a labeled list into an unlabeled one); columns kept for other tools are declared
in ``ignore_columns``.

Every row's image must exist (else an error naming the row, or under ``on_invalid: skip`` a counted
``missing_image`` skip); two rows listing the same image, an empty ``label`` field in a list with a
``label`` column, and a row with more or fewer fields than the header are errors naming the file and row(s).
Row numbers are the file's line numbers (the header is line 1).
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict, deque
from pathlib import Path
from typing import Literal

from proveseg.data.paircheck import pair_problem, read_headers
from proveseg.data.records import RecordTable
from proveseg.readers.base import ReaderError, ReadResult, SourceBase, pair_labels

__all__ = ["CSV_COLUMNS", "CsvSource"]

CSV_COLUMNS = ("image", "label", "domain", "image2", "label2")
_Pair = tuple[str, str]  # (image2, label2) as resolved paths; label2 '' when the pair has none


class CsvSource(SourceBase):
    """``root`` is the CSV file; paths in it are relative to its folder. No ``label`` column: unlabeled."""

    reader: Literal["csv"] = "csv"
    domain: str | None = None  # fixed domain for rows whose domain column is empty (or absent)
    pair_geometry: Literal["shared", "independent"] = "shared"  # how image2/mask2 follow the crop and flip
    ignore_columns: tuple[str, ...] = ()  # columns of the list that proveseg does not read (declared, not guessed)

    def read(self) -> ReadResult:
        """Every row of the list, paired with its label file (and its second image, when given)."""
        root = self.root
        header, rows = self._rows()
        pairs, labeled = [], "label" in header
        second: list[_Pair] = []
        seen: dict[str, int] = {}  # image path -> the row that listed it first
        for i, row in rows:
            if not row.get("image"):
                raise ReaderError(f"{root}: row {i}: field 'image' is empty")
            if labeled and not row.get("label"):
                raise ReaderError(f"{root}: row {i}: field 'label' is empty (every row of a list with a 'label' "
                                  "column needs its label file)")
            dom = row.get("domain") or self.domain
            if not dom:
                raise ReaderError(f"{root}: row {i}: field 'domain' is empty and no default domain is configured")
            image = root.parent / row["image"]
            first = seen.setdefault(os.path.normpath(image), i)
            if first != i:
                raise ReaderError(f"{root}: rows {first} and {i} list the same image {row['image']!r} "
                                  "(duplicate_row: it would count twice)")
            pairs.append((image, root.parent / (row.get("label") or ""), dom))
            image2, label2 = row.get("image2") or "", row.get("label2") or ""
            if label2 and not image2:
                raise ReaderError(f"{root}: row {i}: field 'label2' is set but 'image2' is empty")
            second.append((str(root.parent / image2) if image2 else "", str(root.parent / label2) if label2 else ""))
        keep, skips = self._check_images(pairs, [i for i, _ in rows])
        if "image2" in header:
            keep_pairs, pair_skips = self._check_pairs(pairs, second, [i for i, _ in rows], keep)
            keep, skips = keep_pairs, skips + pair_skips
        kept = [p for p, k in zip(pairs, keep, strict=True) if k]
        result = pair_labels(self.name, kept, self.on_invalid, labeled)
        for reason, path in skips:
            result.skip(reason, path)
        if "image2" in header:
            result.records = _with_pairs(result.records, kept, [s for s, k in zip(second, keep, strict=True) if k],
                                         self.pair_geometry, labeled)
        return result

    def unlabeled_reason(self) -> str:
        """Why the list gives no labels: its header lacks the ``label`` column."""
        header, _ = self._rows()
        return f"{self.root}: header lacks column 'label' (found {', '.join(header)})"

    def _rows(self) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
        """The header and the rows with their line numbers; an unknown, repeated or missing column, or a
        row too long or too short, is an error."""
        root = self.root
        try:
            with root.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                header = [name.strip() for name in reader.fieldnames or []]
                reader.fieldnames = header
                rows = [(reader.line_num, row) for row in reader]  # the line, so a blank line keeps rows true
        except UnicodeDecodeError as exc:
            raise ReaderError(f"{root}: not UTF-8 at byte {exc.start}") from None
        except csv.Error as exc:
            raise ReaderError(f"{root}: malformed CSV: {exc}") from None
        unknown = [c for c in header if c not in CSV_COLUMNS and c not in self.ignore_columns]
        if unknown:
            raise ReaderError(f"{root}: unknown column(s) {', '.join(map(repr, unknown))}; the csv reader reads "
                              f"{', '.join(CSV_COLUMNS)} (list columns it should not read in ignore_columns)")
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            raise ReaderError(f"{root}: header names column(s) {', '.join(map(repr, repeated))} more than once")
        if "image" not in header:
            raise ReaderError(f"{root}: header lacks column 'image'; found {', '.join(header) or 'nothing'}")
        if "label2" in header and "image2" not in header:
            raise ReaderError(f"{root}: column 'label2' without column 'image2'")
        for i, row in rows:
            if None in row:  # DictReader puts the fields beyond the header under the key None
                raise ReaderError(f"{root}: row {i}: {len(header) + len(row[None])} fields, header has {len(header)}")
            if None in row.values():  # and a row too short gets None for the fields it lacks
                raise ReaderError(f"{root}: row {i}: {sum(v is not None for v in row.values())} field(s), "
                                  f"header has {len(header)}")
        return header, rows

    def _check_images(self, pairs: list[tuple[Path, Path, str]], lines: list[int],
                      ) -> tuple[list[bool], list[tuple[str, str]]]:
        """Which rows' image files exist, and a (reason, path) per missing one; under ``on_invalid: error``, raise."""
        listing: dict[str, set[str]] = {}
        missing = [r for r, (image, _, _) in enumerate(pairs) if not _exists(str(image), listing)]
        if missing and self.on_invalid == "error":
            shown = "; ".join(f"row {lines[r]}: field 'image': {pairs[r][0]} not found" for r in missing[:3])
            raise ReaderError(f"{self.root}: {len(missing)} row(s) whose image does not exist: {shown}; fix them or "
                              "set on_invalid: skip to train without them (they will be counted)")
        keep = [True] * len(pairs)
        for r in missing:
            keep[r] = False
        return keep, [("missing_image", f"{self.root}: row {lines[r]}: image: {pairs[r][0]} not found")
                      for r in missing]

    def _check_pairs(self, pairs: list[tuple[Path, Path, str]], second: list[_Pair], lines: list[int],
                     keep: list[bool]) -> tuple[list[bool], list[tuple[str, str]]]:
        """Which rows to keep (of those ``keep`` holds) and the (reason, path) of each skipped one;
        under ``on_invalid: error``, raise."""
        keep = list(keep)
        problems: list[tuple[int, str, str, str]] = []  # (row, reason, field, detail)
        listing: dict[str, set[str]] = {}
        rows = [r for r, (image2, _) in enumerate(second) if image2 and keep[r]]
        for r in rows:
            for what, path in (("image2", second[r][0]), ("label2", second[r][1])):
                if path and not _exists(path, listing):
                    problems.append((r, f"missing_{what}", what, f"{path} not found"))
                    break
        missing = {p[0] for p in problems}
        rows = [r for r in rows if r not in missing]
        threads = min(8, os.cpu_count() or 1)
        heads = read_headers([str(pairs[r][0]) for r in rows] + [second[r][0] for r in rows]
                             + [second[r][1] for r in rows if second[r][1]], threads)
        n, labels = len(rows), iter(heads[2 * len(rows):])
        for k, r in enumerate(rows):
            label2 = next(labels) if second[r][1] else None
            found = pair_problem(heads[k], heads[n + k], label2, self.pair_geometry,
                                 (str(pairs[r][0]), second[r][0], second[r][1]))
            if found is not None:
                problems.append((r, *found))
        problems.sort()
        if problems and self.on_invalid == "error":
            shown = "; ".join(f"row {lines[r]}: field {field!r}: {reason} ({detail})"
                              for r, reason, field, detail in problems[:3])
            raise ReaderError(f"{self.root}: {len(problems)} row(s) with an invalid pair: {shown}; fix them or set "
                              "on_invalid: skip to train without them (they will be counted)")
        for r, *_ in problems:
            keep[r] = False
        return keep, [(reason, f"{self.root}: row {lines[r]}: {field}: {detail}")
                      for r, reason, field, detail in problems]


def _exists(path: str, listing: dict[str, set[str]]) -> bool:
    """Whether ``path`` is in its folder's listing (each folder listed once)."""
    folder, name = os.path.split(path)
    names = listing.get(folder)
    if names is None:
        names = listing[folder] = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    return name in names


def _with_pairs(records: RecordTable, pairs: list[tuple[Path, Path, str]], second: list[_Pair],
                geometry: str, labeled: bool) -> RecordTable:
    """``records`` (sorted, some rows perhaps skipped for a missing label) with each row's pair columns.

    Rows are matched by (image, label, domain): rows sharing that key are skipped or kept together,
    and the stable sort keeps them in file order, so each takes its own pair.
    """
    queue: dict[tuple[str, str, str], deque[_Pair]] = defaultdict(deque)
    for (image, label, domain), pair in zip(pairs, second, strict=True):
        queue[str(image), str(label) if labeled else "", domain].append(pair)
    image2, label2 = [], []
    for key in zip(records.image.tolist(), records.label.tolist(), records.domain.tolist(), strict=True):
        a, b = queue[key].popleft()
        image2.append(a)
        label2.append(b)
    geometries = [geometry if a else "" for a in image2]
    columns = {name: getattr(records, name) for name in records.columns}
    return RecordTable.from_columns({**columns, "image2": image2, "label2": label2, "pair_geometry": geometries},
                                    n=len(records))
