"""Record tables: one numpy column per field, deterministic order, a content hash.

A study may hold millions of entries, so a table is a handful of numpy string columns, never a
list of per-sample objects. The columns follow ../shared/DESIGN.md section 2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["COLUMNS", "KINDS", "NOISE_SOURCE", "SOURCE_DOMAIN", "RecordTable"]

COLUMNS = ("image", "label", "dataset", "domain", "kind", "source", "origin")
KINDS = ("real", "generated", "noise", "unlabeled")
SOURCE_DOMAIN = "clear_day"  # the domain generated images are translated from
NOISE_SOURCE = "random_noise"  # the source name of the noise control's samples
_STR = np.dtypes.StringDType()


@dataclass(frozen=True, eq=False)
class RecordTable:
    """Columnar table of samples. ``label`` and ``origin`` are empty strings when absent."""

    image: np.ndarray
    label: np.ndarray
    dataset: np.ndarray
    domain: np.ndarray
    kind: np.ndarray
    source: np.ndarray
    origin: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.image)
        for name in COLUMNS:
            col = getattr(self, name)
            if col.ndim != 1 or len(col) != n:
                raise ValueError(f"record column {name!r} has shape {col.shape}, expected ({n},)")
        known = np.zeros(n, bool)
        for kind in KINDS:  # linear, where np.unique would sort every row's string
            known |= self.kind == kind
        bad = set(self.kind[~known].tolist())
        if bad:
            raise ValueError(f"record kinds {sorted(bad)} not in {KINDS}")

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence[str] | np.ndarray | str], n: int | None = None) -> RecordTable:
        """Build a table; a plain string value is broadcast to every row."""
        lengths = {len(v) for v in columns.values() if not isinstance(v, str)}
        if n is None:
            if len(lengths) != 1:
                raise ValueError(f"columns have lengths {sorted(lengths)}; pass n or equal-length columns")
            n = lengths.pop()
        missing = set(COLUMNS) - set(columns) - {"label", "origin"}
        if missing:
            raise ValueError(f"record columns missing: {sorted(missing)}")
        out = {}
        for name in COLUMNS:
            value = columns.get(name, "")
            out[name] = np.full(n, value, dtype=_STR) if isinstance(value, str) else np.asarray(value, dtype=_STR)
        return cls(**out)

    @classmethod
    def empty(cls) -> RecordTable:
        return cls.from_columns({name: [] for name in COLUMNS}, n=0)

    @classmethod
    def concat(cls, tables: Sequence[RecordTable]) -> RecordTable:
        if not tables:
            return cls.empty()
        return cls(**{name: np.concatenate([getattr(t, name) for t in tables]) for name in COLUMNS})

    def __len__(self) -> int:
        return len(self.image)

    def take(self, indices: np.ndarray) -> RecordTable:
        """Rows at ``indices`` (integer array or boolean mask)."""
        return RecordTable(**{name: getattr(self, name)[indices] for name in COLUMNS})

    def sorted(self) -> RecordTable:
        """Rows in a deterministic order: dataset, domain, image path."""
        order = np.lexsort((self.image, self.domain, self.dataset))
        return self.take(order)

    def row(self, i: int) -> dict[str, str]:
        return {name: str(getattr(self, name)[i]) for name in COLUMNS}

    def sha256(self) -> str:
        """Hash of the ordered entries; any change in content or order changes it."""
        h = hashlib.sha256()
        for name in COLUMNS:
            h.update(name.encode())
            h.update("\x1f".join(getattr(self, name).tolist()).encode("utf-8"))
            h.update(b"\x1e")
        return h.hexdigest()

    def counts(self, column: str) -> dict[str, int]:
        values, counts = np.unique(getattr(self, column), return_counts=True)
        return {str(v): int(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)}
