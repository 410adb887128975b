"""Property tests of the batch plan: exact composition, passes, determinism, resume, DDP, repeats."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proveseg.data.plan import BatchPlanSpec, Group, Member, PlanError, group_counts, plan_batches

sizes = st.integers(min_value=1, max_value=60)
ratios = st.sampled_from([0.0, 0.125, 0.25, 0.3, 1 / 3, 0.5, 0.7, 0.75, 0.9, 1.0])
repeats = st.sampled_from([1.0, 2.0, 4.0, 0.5])


@st.composite
def specs(draw: st.DrawFn, world: int = 1) -> BatchPlanSpec:
    ratio = draw(ratios)
    real = tuple(Member(f"r{i}", draw(sizes), draw(repeats)) for i in range(draw(st.integers(1, 3))))
    gen = tuple(Member(f"g{i}", draw(sizes), draw(repeats)) for i in range(draw(st.integers(1, 3))))
    return BatchPlanSpec((Group("real", ratio, real), Group("generated", 1 - ratio, gen)),
                         batch_size=draw(st.integers(1, 12)), seed=draw(st.integers(0, 2**16)), world_size=world)


def _group_of(spec: BatchPlanSpec, ids: np.ndarray) -> np.ndarray:
    bounds = np.cumsum([g.size for g in spec.groups])
    return np.searchsorted(bounds, ids, side="right")


@settings(max_examples=150, deadline=None)
@given(specs(), st.integers(1, 40))
def test_every_batch_holds_floor_or_ceil_and_totals_never_drift(spec: BatchPlanSpec, n: int) -> None:
    planned = plan_batches(spec, 0, n)
    groups = _group_of(spec, planned.ids[:, 0])
    assert np.array_equal(groups, planned.groups[:, 0])
    real = (groups == 0).sum(axis=1)
    r, b = spec.groups[0].share, spec.batch_size
    assert set(real.tolist()) <= {math.floor(r * b), math.ceil(r * b)}
    drift = np.cumsum(real) - np.arange(1, n + 1) * r * b
    assert np.abs(drift).max() < 1


@settings(max_examples=100, deadline=None)
@given(specs(), st.integers(1, 30))
def test_no_sample_repeats_inside_a_pass(spec: BatchPlanSpec, n: int) -> None:
    planned = plan_batches(spec, 0, n)
    ids, passes = planned.ids.ravel(), planned.passes.ravel()
    pairs = set(zip(ids.tolist(), passes.tolist(), strict=True))
    assert len(pairs) == len(ids)
    offsets = spec.offsets
    member = np.searchsorted(offsets, ids, side="right") - 1
    for m in np.unique(member):
        for p in np.unique(passes[member == m]):
            drawn = ids[(member == m) & (passes == p)]
            assert len(np.unique(drawn)) == len(drawn)


@settings(max_examples=60, deadline=None)
@given(specs(), st.integers(2, 30), st.data())
def test_resume_at_k_equals_uninterrupted(spec: BatchPlanSpec, n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n))
    full = plan_batches(spec, 0, n)
    tail = plan_batches(spec, k, n)
    assert np.array_equal(full.ids[k:], tail.ids)
    assert np.array_equal(full.passes[k:], tail.passes)


@settings(max_examples=40, deadline=None)
@given(specs())
def test_same_seed_same_plan_other_seed_other_plan(spec: BatchPlanSpec) -> None:
    a = plan_batches(spec, 0, 30).ids
    assert np.array_equal(a, plan_batches(spec, 0, 30).ids)
    other = BatchPlanSpec(spec.groups, spec.batch_size, spec.seed + 1)
    if max(m.size for g in spec.groups if g.share > 0 for m in g.members) >= 6:
        assert not np.array_equal(a, plan_batches(other, 0, 30).ids)


@settings(max_examples=60, deadline=None)
@given(specs(world=3), st.integers(1, 20))
def test_ranks_have_equal_composition_and_disjoint_samples_within_a_pass(spec: BatchPlanSpec, n: int) -> None:
    planned = plan_batches(spec, 0, n)
    for b in range(n):
        comps = [np.bincount(planned.groups[b, r], minlength=2).tolist() for r in range(3)]
        assert comps[0] == comps[1] == comps[2]
    keys = list(zip(planned.ids.ravel().tolist(), planned.passes.ravel().tolist(), strict=True))
    assert len(set(keys)) == len(keys)


def test_repeat_weights_are_realised() -> None:
    members = (Member("a", 300, 2.0), Member("b", 50), Member("c", 1000), Member("d", 40, 4.0))
    spec = BatchPlanSpec((Group("real", 1.0, members),), batch_size=8, seed=3)
    effective = np.array([m.effective for m in members])
    n = int(effective.sum()) // 8 * 3
    ids = plan_batches(spec, 0, n).ids.ravel()
    counts = np.bincount(np.searchsorted(spec.offsets, ids, side="right") - 1, minlength=4)
    expected = len(ids) * effective / effective.sum()
    assert np.abs(counts - expected).max() <= 2
    assert counts[0] / 300 == pytest.approx(2 * counts[2] / 1000, rel=0.01)
    assert counts[3] / 40 == pytest.approx(4 * counts[2] / 1000, rel=0.01)


def test_exact_ratio_examples() -> None:
    gen = Group("generated", 0.5, (Member("g", 40),))
    spec = BatchPlanSpec((Group("real", 0.5, (Member("r", 10),)), gen), batch_size=8)
    assert group_counts(spec, 0, 100).tolist() == [[4, 4]] * 100
    spec0 = BatchPlanSpec((Group("real", 0.0, (Member("r", 10),)), Group("generated", 1.0, (Member("g", 40),))), 8)
    assert group_counts(spec0, 0, 10).tolist() == [[0, 8]] * 10


def test_three_groups_stay_within_a_sample() -> None:
    groups = tuple(Group(n, s, (Member(n, 20),)) for n, s in (("real", 0.3), ("generated", 0.3), ("noise", 0.4)))
    spec = BatchPlanSpec(groups, batch_size=7)
    counts = group_counts(spec, 0, 200)
    assert (counts.sum(axis=1) == 7).all()
    for g, share in enumerate((0.3, 0.3, 0.4)):
        assert set(counts[:, g].tolist()) <= {math.floor(7 * share), math.ceil(7 * share)}
        assert np.abs(np.cumsum(counts[:, g]) - np.arange(1, 201) * 7 * share).max() < 1


def test_empty_group_with_a_share_is_an_error_naming_it() -> None:
    with pytest.raises(PlanError, match="'generated'"):
        BatchPlanSpec((Group("real", 0.5, (Member("r", 10),)), Group("generated", 0.5, ())), batch_size=8)
    with pytest.raises(PlanError, match="sum to"):
        BatchPlanSpec((Group("real", 0.5, (Member("r", 10),)),), batch_size=8)
