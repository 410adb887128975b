"""Record tables: one numpy column per field, deterministic order, a content hash.

A study may hold millions of entries, so a table is a handful of numpy string columns, never a
list of per-sample objects. The columns follow ../shared/DESIGN.md section 2.

A table may also carry the optional pair columns (:data:`PAIR_COLUMNS`): a second image and label
per row (a video's next frame, a generated image's clear-day original) and how the transforms treat
the pair (``pair_geometry``: ``shared`` or ``independent``; empty on rows without a pair). They are
present for every row or for none; a table without them hashes exactly as before they existed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from proveseg.data.labelmap import LabelMap

__all__ = ["COLUMNS", "KINDS", "NOISE_SOURCE", "PAIR_COLUMNS", "PAIR_GEOMETRIES", "SOURCE_DOMAIN", "RecordTable"]

COLUMNS = ("image", "label", "dataset", "domain", "kind", "source", "origin")
PAIR_COLUMNS = ("image2", "label2", "pair_geometry")  # optional, all or none
PAIR_GEOMETRIES = ("shared", "independent")
KINDS = ("real", "generated", "noise", "unlabeled")
SOURCE_DOMAIN = "clear_day"  # the domain generated images are translated from
NOISE_SOURCE = "random_noise"  # the source name of the noise control's samples
_STR = np.dtypes.StringDType()


def _column(value: Sequence[str] | np.ndarray | str, n: int) -> np.ndarray:
    """A StringDType column: ``value`` broadcast to ``n`` rows, or ``value`` itself when it already is one.

    ``np.asarray(x, dtype=StringDType())`` copies unless ``x`` has that very dtype instance (each
    array has its own), and ``np.full`` sets the rows one by one: together they were a fifth of
    building a table from a manifest. The table shares a given StringDType array (tables are
    never written in place).
    """
    if isinstance(value, str):
        out = np.empty(n, dtype=_STR)
        out[:] = value
        return out
    if isinstance(value, np.ndarray) and isinstance(value.dtype, np.dtypes.StringDType) and value.dtype == _STR:
        return value
    return np.asarray(value, dtype=_STR)


@dataclass(frozen=True, eq=False)
class RecordTable:
    """Columnar table of samples. ``label`` and ``origin`` are empty strings when absent.

    ``image2`` / ``label2`` / ``pair_geometry`` are None for a table without pairs, else columns
    like the others ('' on the rows without a pair).

    ``label_maps`` holds, per source name, the table that turns that source's label ids into
    class ids when a label (and a pair's ``label2``) is decoded (sources without one are decoded as they are).
    """

    image: np.ndarray
    label: np.ndarray
    dataset: np.ndarray
    domain: np.ndarray
    kind: np.ndarray
    source: np.ndarray
    origin: np.ndarray
    image2: np.ndarray | None = None
    label2: np.ndarray | None = None
    pair_geometry: np.ndarray | None = None
    label_maps: Mapping[str, LabelMap] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.image)
        present = [name for name in PAIR_COLUMNS if getattr(self, name) is not None]
        if present and len(present) != len(PAIR_COLUMNS):
            raise ValueError(f"record pair columns {present} given without {sorted(set(PAIR_COLUMNS) - set(present))}")
        for name in self.columns:
            col = getattr(self, name)
            if col.ndim != 1 or len(col) != n:
                raise ValueError(f"record column {name!r} has shape {col.shape}, expected ({n},)")
        known = np.zeros(n, bool)
        for kind in KINDS:  # linear, where np.unique would sort every row's string
            known |= self.kind == kind
        bad = set(self.kind[~known].tolist())
        if bad:
            raise ValueError(f"record kinds {sorted(bad)} not in {KINDS}")
        if present:
            self._check_pairs()

    def _check_pairs(self) -> None:
        paired, label2, geometry = self.paired(), self._column("label2"), self._column("pair_geometry")
        unknown = set(np.unique(geometry[paired]).tolist()) - set(PAIR_GEOMETRIES)
        if unknown:
            raise ValueError(f"record pair geometries {sorted(unknown)} not in {PAIR_GEOMETRIES}")
        stray = np.flatnonzero(~paired & ((label2 != "") | (geometry != "")))
        if len(stray):
            raise ValueError(f"record {self.image[stray[0]]}: label2 or pair_geometry without an image2")

    @property
    def has_pairs(self) -> bool:
        """Whether the table carries the pair columns (some rows may still have no pair)."""
        return self.image2 is not None

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns this table holds: :data:`COLUMNS`, then :data:`PAIR_COLUMNS` when present."""
        return COLUMNS + PAIR_COLUMNS if self.has_pairs else COLUMNS

    def paired(self) -> np.ndarray:
        """Boolean mask of the rows that have a second image (all False without pair columns)."""
        return np.zeros(len(self), bool) if self.image2 is None else self.image2 != ""

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence[str] | np.ndarray | str], n: int | None = None) -> RecordTable:
        """Build a table; a plain string value is broadcast to every row. Pair columns are optional (all or none)."""
        lengths = {len(v) for v in columns.values() if not isinstance(v, str)}
        if n is None:
            if len(lengths) != 1:
                raise ValueError(f"columns have lengths {sorted(lengths)}; pass n or equal-length columns")
            n = lengths.pop()
        missing = set(COLUMNS) - set(columns) - {"label", "origin"}
        if missing:
            raise ValueError(f"record columns missing: {sorted(missing)}")
        names = COLUMNS + tuple(c for c in PAIR_COLUMNS if c in columns)
        out: dict[str, Any] = {}  # Any: the columns, never ``label_maps``
        for name in names:
            value = columns.get(name, "")
            out[name] = _column(value, n)
        return cls(**out)

    @classmethod
    def empty(cls) -> RecordTable:
        return cls.from_columns({name: [] for name in COLUMNS}, n=0)

    @classmethod
    def concat(cls, tables: Sequence[RecordTable]) -> RecordTable:
        """Rows of ``tables`` in order; the pair columns are kept if any table has them ('' elsewhere)."""
        if not tables:
            return cls.empty()
        maps: dict[str, LabelMap] = {}
        for t in tables:
            for source, label_map in t.label_maps.items():
                if source in maps and maps[source].digest() != label_map.digest():
                    raise ValueError(f"source {source!r} is read with two different label maps "
                                     f"({maps[source].origin}, {label_map.origin})")
                maps[source] = label_map
        names = COLUMNS + PAIR_COLUMNS if any(t.has_pairs for t in tables) else COLUMNS
        return cls(**{name: np.concatenate([t._column(name) for t in tables]) for name in names}, label_maps=maps)

    def _column(self, name: str) -> np.ndarray:
        value = getattr(self, name)
        return np.full(len(self), "", dtype=_STR) if value is None else value

    def __len__(self) -> int:
        return len(self.image)

    def take(self, indices: np.ndarray) -> RecordTable:
        """Rows at ``indices`` (integer array or boolean mask)."""
        return RecordTable(**{name: getattr(self, name)[indices] for name in self.columns}, label_maps=self.label_maps)

    def with_label_map(self, source: str, label_map: LabelMap | None) -> RecordTable:
        """This table with ``source``'s labels decoded through ``label_map`` (None: as they are)."""
        maps = {k: v for k, v in self.label_maps.items() if k != source}
        if label_map is not None:
            maps[source] = label_map
        return RecordTable(**{name: getattr(self, name) for name in self.columns}, label_maps=maps)

    def label_map_of(self, i: int) -> LabelMap | None:
        """The label map of row ``i``'s source, or None."""
        return self.label_maps.get(str(self.source[i])) if self.label_maps else None

    def sorted(self) -> RecordTable:
        """Rows in a deterministic order: dataset, domain, image path."""
        order = np.lexsort((self.image, self.domain, self.dataset))
        return self.take(order)

    def row(self, i: int) -> dict[str, str]:
        return {name: str(getattr(self, name)[i]) for name in self.columns}

    def sha256(self) -> str:
        """Hash of the ordered entries; any change in content or order changes it.

        The pair columns are hashed only when present, so a table without pairs keeps the hash it
        had before pairs existed (old run directories still verify).
        """
        h = hashlib.sha256()
        for name in self.columns:
            h.update(name.encode())
            h.update("\x1f".join(getattr(self, name).tolist()).encode("utf-8"))
            h.update(b"\x1e")
        present = set(np.unique(self.source).tolist()) if self.label_maps else set()
        for source in sorted(present & set(self.label_maps)):  # a table without maps hashes as before
            h.update(f"label_map\x1f{source}\x1f{self.label_maps[source].digest()}\x1e".encode())
        return h.hexdigest()

    def counts(self, column: str) -> dict[str, int]:
        values, counts = np.unique(getattr(self, column), return_counts=True)
        return {str(v): int(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)}
