"""Exact-ratio batch plans as pure functions over numpy index arrays.

A plan deals every batch from *groups* (real, generated, noise, unlabeled), each with a fixed
share of the batch. Per batch, a group gets floor or ceil of ``share * batch_size`` samples and its
running total never drifts by a whole sample from ``batches * share * batch_size`` (error
diffusion). Inside a group, members (datasets, generators) are interleaved by stride scheduling
in proportion to ``size * repeat``. A member is drawn without replacement within a pass; pass
``p`` of member ``m`` of group ``g`` is ``default_rng([seed, g, m, p]).permutation(size)``.

Everything is a function of (spec, batch index range): resuming at batch ``k`` recomputes the
plan and slices it, and the result equals the uninterrupted plan. With ``world_size`` ranks the
global batch holds ``world_size`` copies of the per-rank composition; rank ``r`` takes the r-th
block of each group's draws, so ranks never share a sample within a pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

__all__ = ["BatchPlanSpec", "Group", "Member", "PlanError", "PlannedBatches", "group_counts", "iter_plan",
           "plan_batches"]


class PlanError(ValueError):
    """A plan that cannot be honoured exactly (empty group with a share, bad shares, ...)."""


@dataclass(frozen=True)
class Member:
    """One source inside a group: ``size`` samples, drawn ``repeat`` times as often per sample."""

    name: str
    size: int
    repeat: float = 1.0

    @property
    def effective(self) -> float:
        return self.size * self.repeat


@dataclass(frozen=True)
class Group:
    """A share of every batch, filled from its members."""

    name: str
    share: float
    members: tuple[Member, ...]

    @property
    def size(self) -> int:
        return sum(m.size for m in self.members)


@dataclass(frozen=True)
class BatchPlanSpec:
    """What a plan depends on; validated on construction."""

    groups: tuple[Group, ...]
    batch_size: int
    seed: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.world_size < 1:
            raise PlanError(f"batch_size={self.batch_size} and world_size={self.world_size} must be >= 1")
        if not self.groups:
            raise PlanError("a plan needs at least one group")
        for g in self.groups:
            if not 0.0 <= g.share <= 1.0:
                raise PlanError(f"group {g.name!r}: share {g.share} outside [0, 1]")
            if g.share > 0 and g.size == 0:
                raise PlanError(f"group {g.name!r} has share {g.share} but no samples: refusing to fill its "
                                "slots from another group")
            for m in g.members:
                if m.size < 0 or not m.repeat > 0:
                    raise PlanError(f"group {g.name!r}, member {m.name!r}: size {m.size}, repeat {m.repeat}: "
                                    "size must be >= 0 and repeat > 0")
                if g.share > 0 and m.size == 0:
                    raise PlanError(f"group {g.name!r}, member {m.name!r} has no samples")
        total = sum(Fraction(g.share).limit_denominator(10**6) for g in self.groups)
        if total != 1:
            raise PlanError(f"group shares sum to {float(total)}, expected 1: "
                            + ", ".join(f"{g.name}={g.share}" for g in self.groups))

    @property
    def offsets(self) -> np.ndarray:
        """Global id of the first sample of each member, in group then member order."""
        sizes = [m.size for g in self.groups for m in g.members]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def counts_per_batch(self) -> list[tuple[int, int]]:
        """(floor, ceil) of each group's per-rank count."""
        return [(int(np.floor(g.share * self.batch_size)), int(np.ceil(g.share * self.batch_size)))
                for g in self.groups]


@dataclass(frozen=True)
class PlannedBatches:
    """Batches ``start..stop`` of a plan: ids, pass numbers and groups, shaped (batches, world, B)."""

    start: int
    ids: np.ndarray
    passes: np.ndarray
    groups: np.ndarray


def _shares(spec: BatchPlanSpec) -> list[Fraction]:
    return [Fraction(g.share).limit_denominator(10**6) for g in spec.groups]


def cumulative_counts(spec: BatchPlanSpec, batches: np.ndarray) -> np.ndarray:
    """Per-rank samples of each group in batches ``0..b-1`` for each ``b`` in ``batches``: (len, G).

    O(1) per batch for any number of groups: the closed form for one or two groups, one period of
    the error diffusion (cached per shares and batch size) for three or more.
    """
    b = np.asarray(batches, dtype=np.int64)
    shares = _shares(spec)
    size = spec.batch_size
    if len(shares) <= 2:  # closed form: floor(b * B * s) is error diffusion with exact integers
        first = (b * size * shares[0].numerator) // shares[0].denominator
        cols = [first] if len(shares) == 1 else [first, b * size - first]
        return np.stack(cols, axis=1)
    table = _diffusion_period(tuple(shares), size)
    if table is None:  # a period too long to tabulate: replay from batch 0 (never seen for real shares)
        return _diffusion_replay(tuple(shares), size, int(b.max(initial=0)))[b]
    period = len(table) - 1
    turns, rest = np.divmod(b, period)
    return turns[:, None] * table[-1] + table[rest]


_MAX_PERIOD = 1 << 22  # rows of the cached table; shares with denominators up to 10**6 (x B) stay below


def _diffusion_setup(shares: tuple[Fraction, ...], size: int) -> tuple[list[int], list[int], int, int]:
    """(floor of each group's exact count, its fractional part in units of 1/denom, denom, extra slots)."""
    exact = [s * size for s in shares]
    base = [int(e) for e in exact]
    denom = int(np.lcm.reduce([e.denominator for e in exact]))
    frac = [int((e - int(e)) * denom) for e in exact]
    return base, frac, denom, size - sum(base)


def _diffusion_steps(frac: list[int], denom: int, extra: int, steps: int) -> Iterator[tuple[list[int], list[int]]]:
    """Each batch's groups that get an extra slot, and the deficits after it.

    Each batch gives every group floor(B s) and hands the remaining slots to the groups furthest
    behind their target (largest deficit first, ties to the first group).
    """
    deficit = [0] * len(frac)
    order = range(len(frac))
    for _ in range(steps):
        deficit = [d + f for d, f in zip(deficit, frac, strict=True)]
        chosen = sorted(order, key=lambda g: -deficit[g])[:extra]  # sorted is stable: ties to the first group
        for g in chosen:
            deficit[g] -= denom
        yield chosen, deficit


def _diffusion_replay(shares: tuple[Fraction, ...], size: int, stop: int) -> np.ndarray:
    """Cumulative counts of batches 0..stop, replayed step by step: (stop + 1, G)."""
    base, frac, denom, extra = _diffusion_setup(shares, size)
    cum = np.zeros((stop + 1, len(shares)), dtype=np.int64)
    extras = np.zeros((stop + 1, len(shares)), dtype=np.int64)
    for i, (chosen, _) in enumerate(_diffusion_steps(frac, denom, extra, stop)):
        extras[i + 1, chosen] = 1
    cum[:] = np.arange(stop + 1)[:, None] * np.asarray(base, np.int64) + np.cumsum(extras, axis=0)
    return cum


@lru_cache(maxsize=32)
def _diffusion_period(shares: tuple[Fraction, ...], size: int) -> np.ndarray | None:
    """Cumulative counts over one period of the error diffusion, (P + 1, G), or None beyond ``_MAX_PERIOD``.

    The diffusion is deterministic in its integer deficits, which start at zero; the first batch
    after which they are all zero again ends a period (it is ``denom`` batches in practice), and
    every later batch repeats it, so batch ``k`` costs a table lookup whatever ``k`` is.
    """
    base, frac, denom, extra = _diffusion_setup(shares, size)
    rows = [[0] * len(shares)]
    for chosen, deficit in _diffusion_steps(frac, denom, extra, min(denom, _MAX_PERIOD) * 4):
        row = [c + b for c, b in zip(rows[-1], base, strict=True)]
        for g in chosen:
            row[g] += 1
        rows.append(row)
        if not any(deficit):
            return np.asarray(rows, dtype=np.int64)
        if len(rows) > _MAX_PERIOD:
            return None
    return None


def group_counts(spec: BatchPlanSpec, start: int, stop: int) -> np.ndarray:
    """Per-rank samples of each group in each batch ``start..stop-1``: (batches, G)."""
    return np.diff(cumulative_counts(spec, np.arange(start, stop + 1)), axis=0)


def _stride_window(weights: np.ndarray, p0: int, p1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions p0..p1-1 of a stride-scheduled stream over members with these weights.

    Member m's i-th draw sits at time (i + 0.5) / w_m; the stream is all draws sorted by time,
    ties to the lower member. Returns, per member, the first draw number and how many draws were
    materialised, and ``take``: indices into the concatenation of those draws, in stream order.
    """
    if len(weights) == 1:
        return np.array([p0]), np.array([p1 - p0]), np.arange(p1 - p0)

    def before(t: float) -> np.ndarray:  # draws of each member strictly before time t
        n = np.maximum(np.ceil(t * weights - 0.5), 0).astype(np.int64)
        n -= ((n > 0) & ((n - 1 + 0.5) / weights >= t)).astype(np.int64)
        n += ((n + 0.5) / weights < t).astype(np.int64)
        return n

    # Any time with at most p0 draws before it works as a start (the draws from it to p0 are
    # materialised and skipped below), so the answer does not depend on which one is found.
    # Member m has ceil(t w_m - 0.5) +- 1 draws before t, so t = (p0 - M) / W has at most p0:
    # one check instead of a bisection (kept for float rounding beyond that bound).
    guess = before(max(0.0, (p0 - len(weights)) / float(weights.sum())))
    if guess.sum() <= p0:
        return _stride_from(weights, p0, p1, guess)
    lo, hi = 0.0, (p0 + 1) / weights.sum() + 1.0 / weights.min()
    while before(lo).sum() < p0 and (nxt := np.nextafter(lo, hi)) < hi:
        mid = (lo + hi) / 2 if (lo + hi) / 2 > lo else nxt
        if before(mid).sum() <= p0:
            lo = mid
        else:
            hi = mid
    return _stride_from(weights, p0, p1, before(lo))


def _stride_from(weights: np.ndarray, p0: int, p1: int, first: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_stride_window`` given ``first``: each member's draws before some time, p0 or fewer in all."""
    need = p1 - int(first.sum())
    margin = 2
    while True:
        counts = np.ceil(need * weights / weights.sum()).astype(np.int64) + margin
        spans = zip(first, counts, weights, strict=True)
        times = np.concatenate([(np.arange(f, f + c) + 0.5) / w for f, c, w in spans])
        order = np.argsort(times, kind="stable")[:need]
        horizon = float(np.min((first + counts + 0.5) / weights))
        if need == 0 or times[order[-1]] < horizon:
            return first, counts, order[p0 - int(first.sum()):]
        margin *= 4


@lru_cache(maxsize=16)
def _permutation(seed: int, group: int, member: int, pass_: int, size: int) -> np.ndarray:
    """Pass ``pass_`` of a member; cached because a sampler plans in consecutive chunks."""
    perm = np.random.default_rng([seed, group, member, pass_]).permutation(size)
    perm = perm.astype(np.int32 if size < 2**31 else np.int64)
    perm.flags.writeable = False
    return perm


def _member_samples(spec: BatchPlanSpec, g: int, m: int, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample index and pass number of draws ``first..first+count-1`` of member ``m`` in group ``g``."""
    size = spec.groups[g].members[m].size
    samples, passes = [], []
    for p in range(first // size, (first + count - 1) // size + 1):
        lo, hi = max(first, p * size) - p * size, min(first + count, (p + 1) * size) - p * size
        perm = _permutation(spec.seed, g, m, p, size)
        samples.append(perm[lo:hi])
        passes.append(np.full(hi - lo, p, np.int32))
    if not samples:
        return np.empty(0, np.int64), np.empty(0, np.int32)
    return np.concatenate(samples).astype(np.int64), np.concatenate(passes)


def _group_stream(spec: BatchPlanSpec, g: int, p0: int, p1: int) -> tuple[np.ndarray, np.ndarray]:
    """Global ids and passes of positions p0..p1-1 of group ``g``'s stream."""
    group = spec.groups[g]
    weights = np.array([m.effective for m in group.members], dtype=np.float64)
    first, counts, take = _stride_window(weights, p0, p1)
    base = sum(len(gg.members) for gg in spec.groups[:g])
    offsets = spec.offsets
    ids, passes = [], []
    for m in range(len(group.members)):
        samples, ps = _member_samples(spec, g, m, int(first[m]), int(counts[m]))
        ids.append(samples + offsets[base + m])
        passes.append(ps)
    return np.concatenate(ids)[take], np.concatenate(passes)[take]


def plan_batches(spec: BatchPlanSpec, start: int, stop: int) -> PlannedBatches:
    """Batches ``start..stop-1`` of the plan, as arrays shaped (stop - start, world_size, batch_size)."""
    if not 0 <= start <= stop:
        raise PlanError(f"batch range {start}..{stop} is not valid")
    n, world, size = stop - start, spec.world_size, spec.batch_size
    ids = np.empty((n, world, size), np.int64)
    passes = np.empty((n, world, size), np.int32)
    groups = np.empty((n, world, size), np.int8)
    cum = cumulative_counts(spec, np.arange(start, stop + 1))
    counts = np.diff(cum, axis=0)
    column = np.zeros(n, np.int64)
    for g in range(len(spec.groups)):
        per_batch = counts[:, g]
        total = int(per_batch.sum()) * world
        if total == 0:
            continue
        stream_ids, stream_passes = _group_stream(spec, g, int(cum[0, g]) * world, int(cum[-1, g]) * world)
        if np.all(per_batch == per_batch[0]):  # the usual case: a regular layout, no scatter
            c, col0 = int(per_batch[0]), int(column[0])
            ids[:, :, col0:col0 + c] = stream_ids.reshape(n, world, c)
            passes[:, :, col0:col0 + c] = stream_passes.reshape(n, world, c)
            groups[:, :, col0:col0 + c] = g
            column += per_batch
            continue
        batch_of = np.repeat(np.arange(n), per_batch * world)
        within = np.arange(total) - np.repeat(np.cumsum(per_batch * world) - per_batch * world, per_batch * world)
        rank, slot = np.divmod(within, per_batch[batch_of])
        col = column[batch_of] + slot
        ids[batch_of, rank, col] = stream_ids
        passes[batch_of, rank, col] = stream_passes
        groups[batch_of, rank, col] = g
        column += per_batch
    return PlannedBatches(start, ids, passes, groups)


def iter_plan(spec: BatchPlanSpec, start: int, stop: int, chunk: int = 4096) -> Iterator[PlannedBatches]:
    """Batches ``start..stop-1`` in chunks of ``chunk`` batches: bounded memory for long runs."""
    for lo in range(start, stop, chunk):
        yield plan_batches(spec, lo, min(lo + chunk, stop))
