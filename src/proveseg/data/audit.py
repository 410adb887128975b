"""ConsumptionAudit: count what a consumer actually received, and compare it with the request.

The counts come from loaded batches (their ``kind``, ``source``, ``domain`` and ``index``
fields, and ``paired`` for tables with pair columns), not from the plan. That count is the proof
written to ``composition.json``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from proveseg.data.records import KINDS, RecordTable

__all__ = ["CompositionMismatch", "ConsumptionAudit", "chain_sequence"]


def chain_sequence(sequence: str, ids: np.ndarray) -> str:
    """The next link of a run's ``sequence_sha256``: SHA-256 of the previous hex digest and the batch's int64 ids."""
    return hashlib.sha256(sequence.encode() + np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()


class CompositionMismatch(RuntimeError):
    """What was consumed is not what was requested."""


class ConsumptionAudit:
    """Running counts of consumed samples by kind, source and domain, per batch and overall."""

    def __init__(self, num_ids: int, keep_batches: int = 8) -> None:
        self.kinds: Counter[str] = Counter()
        self.sources: Counter[str] = Counter()
        self.domains: Counter[str] = Counter()
        self.kind_domain: Counter[str] = Counter()
        self.paired_sources: Counter[str] = Counter()  # samples that came with a second image, by source
        self.paired_kinds: Counter[str] = Counter()
        self.per_batch: list[tuple[int, ...]] = []
        self.first_batches: list[dict[str, object]] = []
        self.keep_batches = keep_batches
        self.seen = np.zeros(num_ids, dtype=bool)
        self.samples = 0

    def update(self, batch: Mapping[str, object]) -> None:
        """Count one collated batch (lists of strings for kind/source/domain, a tensor of indices)."""
        kinds = list(batch["kind"])  # type: ignore[call-overload]
        sources = list(batch["source"])  # type: ignore[call-overload]
        domains = list(batch["domain"])  # type: ignore[call-overload]
        index = np.asarray(batch["index"]).reshape(-1)
        if not len(kinds) == len(sources) == len(domains) == len(index):
            raise CompositionMismatch("batch fields kind/source/domain/index have different lengths")
        counts = Counter(kinds)
        unknown = set(counts) - set(KINDS)
        if unknown:
            raise CompositionMismatch(f"batch holds unknown kinds {sorted(unknown)}")
        self.kinds.update(counts)
        self.sources.update(sources)
        self.domains.update(domains)
        self.kind_domain.update(f"{k}/{d}" for k, d in zip(kinds, domains, strict=True))
        if "paired" in batch:
            paired = np.asarray(batch["paired"]).reshape(-1).astype(bool)
            if len(paired) != len(kinds):
                raise CompositionMismatch("batch field paired has another length than kind/source/domain/index")
            self.paired_sources.update(s for s, p in zip(sources, paired.tolist(), strict=True) if p)
            self.paired_kinds.update(k for k, p in zip(kinds, paired.tolist(), strict=True) if p)
        self.per_batch.append(tuple(counts.get(k, 0) for k in KINDS))
        if len(self.first_batches) < self.keep_batches:
            self.first_batches.append({**{k: counts.get(k, 0) for k in KINDS}, "sources": dict(Counter(sources))})
        self.seen[index] = True
        self.samples += len(index)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue counting after a resume (tensors and plain containers)."""
        import torch

        return {
            "kinds": dict(self.kinds), "sources": dict(self.sources), "domains": dict(self.domains),
            "kind_domain": dict(self.kind_domain), "paired_sources": dict(self.paired_sources),
            "paired_kinds": dict(self.paired_kinds), "per_batch": torch.tensor(self.per_batch, dtype=torch.int64),
            "first_batches": self.first_batches, "seen": torch.from_numpy(self.seen.copy()), "samples": self.samples,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s counts."""
        self.kinds = Counter(state["kinds"])
        self.sources = Counter(state["sources"])
        self.domains = Counter(state["domains"])
        self.kind_domain = Counter(state["kind_domain"])
        self.paired_sources = Counter(state.get("paired_sources", {}))  # absent in checkpoints before pairs
        self.paired_kinds = Counter(state.get("paired_kinds", {}))
        self.per_batch = [tuple(int(v) for v in row) for row in state["per_batch"].tolist()]
        self.first_batches = list(state["first_batches"])
        self.seen = state["seen"].numpy().copy()
        self.samples = int(state["samples"])

    def merge_ranks(self, records: RecordTable, all_reduce: Callable[[np.ndarray], np.ndarray]) -> None:
        """Sum every rank's counts (``all_reduce`` sums an int64 array over ranks), so the record covers all ranks.

        ``first_batches`` stays this rank's; the per-batch rows become the sum over ranks.
        """
        sources = sorted(set(records.source.tolist()))
        domains = sorted(set(records.domain.tolist()))
        pairs = [f"{k}/{d}" for k in KINDS for d in domains]
        counters = [(self.kinds, list(KINDS)), (self.sources, sources), (self.domains, domains),
                    (self.kind_domain, pairs), (self.paired_sources, sources), (self.paired_kinds, list(KINDS))]
        vector = np.array([c.get(k, 0) for c, keys in counters for k in keys] + [self.samples], np.int64)
        vector = all_reduce(vector)
        at = 0
        for counter, keys in counters:
            counter.clear()
            counter.update({k: int(v) for k, v in zip(keys, vector[at:at + len(keys)], strict=True) if v})
            at += len(keys)
        self.samples = int(vector[-1])
        self.seen = all_reduce(self.seen.astype(np.int64)) > 0
        self.per_batch = [tuple(int(v) for v in row) for row in all_reduce(self.composition()).tolist()]

    def composition(self) -> np.ndarray:
        """Consumed counts per batch and kind: (batches, len(KINDS))."""
        return np.asarray(self.per_batch, dtype=np.int64).reshape(-1, len(KINDS))

    def mismatches(self, expected: np.ndarray, start: int = 0) -> list[str]:
        """Differences between consumed and expected per-batch kind counts (``expected``: batches x KINDS)."""
        got = self.composition()
        problems = []
        if got.shape != expected.shape:
            problems.append(f"consumed {got.shape[0]} batches, expected {expected.shape[0]}")
            n = min(len(got), len(expected))
            got, expected = got[:n], expected[:n]
        for b in np.flatnonzero((got != expected).any(axis=1))[:5].tolist():
            want = ", ".join(f"{expected[b, k]} {kind}" for k, kind in enumerate(KINDS) if expected[b, k])
            have = ", ".join(f"{got[b, k]} {kind}" for k, kind in enumerate(KINDS) if got[b, k])
            problems.append(f"batch {start + b}: requested {want}, consumed {have or 'nothing'}")
        totals_expected, totals_got = expected.sum(axis=0), got.sum(axis=0)
        for k, kind in enumerate(KINDS):
            if totals_expected[k] != totals_got[k]:
                problems.append(f"{kind}: requested {totals_expected[k]} samples, consumed {totals_got[k]}")
        return problems

    def unique_per_source(self, records: RecordTable) -> dict[str, int]:
        """Distinct samples seen per source."""
        seen = np.flatnonzero(self.seen)
        values, counts = np.unique(records.source[seen], return_counts=True)
        return {str(v): int(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)}

    def to_dict(self, records: RecordTable, requested: Mapping[str, object],
                hashes: Mapping[str, str], validation: Mapping[str, object] | None = None,
                problems: Sequence[str] = ()) -> dict[str, object]:
        """The ``composition.json`` document (../shared/DESIGN.md section 3)."""
        comp = self.composition()
        pairs = {}
        if records.has_pairs:  # only then: a record of a table without pairs stays as it was
            pairs = {"paired_per_source": dict(sorted(self.paired_sources.items())),
                     "paired_per_kind": {k: int(self.paired_kinds.get(k, 0)) for k in KINDS}}
        return {
            "requested": dict(requested),
            "consumed": {
                "batches": len(comp),
                "samples": int(self.samples),
                "per_kind": {k: int(self.kinds.get(k, 0)) for k in KINDS},
                "per_source": dict(sorted(self.sources.items())),
                "per_domain": dict(sorted(self.domains.items())),
                "per_kind_domain": dict(sorted(self.kind_domain.items())),
                "unique_per_source": self.unique_per_source(records),
                "per_batch_distinct": sorted({tuple(row) for row in comp.tolist()}),
                "first_batches": self.first_batches,
                **pairs,
            },
            "source_hashes": dict(sorted(hashes.items())),
            "manifest_validation": dict(validation or {}),
            "matches_request": not problems,
            "problems": list(problems),
        }
