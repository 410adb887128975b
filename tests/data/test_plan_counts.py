"""Three or more groups: the tabulated error diffusion equals replaying every batch from 0."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from proveseg.data import plan as plan_module
from proveseg.data.plan import BatchPlanSpec, Group, Member, cumulative_counts, plan_batches


def _replayed(spec: BatchPlanSpec, batches: np.ndarray) -> np.ndarray:
    """The implementation before the period table (proveseg 2f49132), kept verbatim as the reference."""
    b = np.asarray(batches, dtype=np.int64)
    shares = [Fraction(g.share).limit_denominator(10**6) for g in spec.groups]
    size = spec.batch_size
    stop = int(b.max(initial=0))
    exact = [s * size for s in shares]
    base = np.array([int(e) for e in exact], dtype=np.int64)
    denom = int(np.lcm.reduce([e.denominator for e in exact]))
    frac = np.array([int((e - int(e)) * denom) for e in exact], dtype=np.int64)
    extra = int(size - base.sum())
    cum = np.zeros((stop + 1, len(shares)), dtype=np.int64)
    deficit = np.zeros(len(shares), dtype=np.int64)
    for i in range(stop):
        deficit += frac
        chosen = np.argsort(-deficit, kind="stable")[:extra]
        deficit[chosen] -= denom
        cum[i + 1] = cum[i] + base
        cum[i + 1, chosen] += 1
    return cum[b]


def _spec(shares: list[float], batch: int, world: int = 1) -> BatchPlanSpec:
    groups = tuple(Group(f"g{i}", s, (Member(f"m{i}", 50 + 7 * i),)) for i, s in enumerate(shares))
    return BatchPlanSpec(groups, batch, seed=3, world_size=world)


CASES = [
    ([0.25, 0.25, 0.5], 8, 1), ([0.35, 0.35, 0.3], 8, 2), ([0.2, 0.3, 0.5], 7, 1), ([1 / 3, 1 / 3, 1 / 3], 4, 1),
    ([0.37 * 0.7, 0.63 * 0.7, 0.3], 16, 4), ([0.1, 0.2, 0.3, 0.4], 5, 1), ([0.123, 0.456, 0.101, 0.32], 9, 2),
    ([0.05, 0.05, 0.45, 0.45], 3, 1), ([0.5, 0.25, 0.125, 0.125], 2, 8), ([0.6, 0.4, 0.0], 6, 1),
    ([0.011, 0.489, 0.5], 1, 1), ([0.2, 0.2, 0.2, 0.2, 0.2], 12, 1),
]


@pytest.mark.parametrize(("shares", "batch", "world"), CASES)
def test_counts_equal_the_replay_over_many_batches(shares: list[float], batch: int, world: int) -> None:
    spec = _spec(shares, batch, world)
    batches = np.arange(3001)
    assert np.array_equal(cumulative_counts(spec, batches), _replayed(spec, batches))
    scattered = np.array([0, 1, 999, 2999, 3000, 12_345, 40_001])
    assert np.array_equal(cumulative_counts(spec, scattered), _replayed(spec, scattered))


def test_plan_at_a_late_batch_equals_the_replay_and_does_not_replay() -> None:
    spec = _spec([0.37 * 0.7, 0.63 * 0.7, 0.3], 8)
    late = np.arange(160_000, 160_257)
    assert np.array_equal(cumulative_counts(spec, late), _replayed(spec, late))
    plan_module._diffusion_period.cache_clear()
    planned = plan_batches(spec, 160_000, 160_256)
    per_group = np.stack([(planned.groups[:, 0] == g).sum(axis=1) for g in range(3)], axis=1)
    assert np.array_equal(per_group, np.diff(_replayed(spec, late), axis=0))
    info = plan_module._diffusion_period.cache_info()
    table = plan_module._diffusion_period(tuple(plan_module._shares(spec)), spec.batch_size)
    assert info.misses == 1 and table is not None and len(table) <= 1001  # one period, not 160,000 rows


def test_a_period_too_long_to_tabulate_falls_back_to_the_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec([0.123, 0.456, 0.101, 0.32], 9)
    monkeypatch.setattr(plan_module, "_MAX_PERIOD", 10)
    plan_module._diffusion_period.cache_clear()
    batches = np.arange(0, 2500, 7)
    assert np.array_equal(cumulative_counts(spec, batches), _replayed(spec, batches))
    plan_module._diffusion_period.cache_clear()
