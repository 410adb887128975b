"""The ``csv`` reader: a CSV list with ``image``, ``label`` (optional) and ``domain`` columns."""

from __future__ import annotations

import csv
from typing import Literal

from proveseg.readers.base import ReaderError, ReadResult, SourceBase, pair_labels

__all__ = ["CsvSource"]


class CsvSource(SourceBase):
    """``root`` is the CSV file; paths in it are relative to its folder. No ``label`` column: unlabeled."""

    reader: Literal["csv"] = "csv"
    domain: str | None = None  # fixed domain for rows whose domain column is empty (or absent)

    def read(self) -> ReadResult:
        """Every row of the list, paired with its label file."""
        root = self.root
        try:
            with root.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except UnicodeDecodeError as exc:
            raise ReaderError(f"{root}: not UTF-8 at byte {exc.start}") from None
        pairs, labeled = [], bool(rows) and "label" in rows[0]
        for i, row in enumerate(rows, start=2):
            if not row.get("image"):
                raise ReaderError(f"{root}: row {i}: field 'image' is empty")
            dom = row.get("domain") or self.domain
            if not dom:
                raise ReaderError(f"{root}: row {i}: field 'domain' is empty and no default domain is configured")
            pairs.append((root.parent / row["image"], root.parent / (row.get("label") or ""), dom))
        return pair_labels(self.name, pairs, self.on_invalid, labeled)
