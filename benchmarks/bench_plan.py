"""Batch-plan speed and memory against ConcatDataset + WeightedRandomSampler, same effective set.

Sources of 735,577 (x2), 755, 2,686,666 and 16,994 (x4) samples: 4,226,551 effective, batch 8.
Every contest is timed untraced, contestants alternating within each of ``REPEATS`` repetitions
(min / median printed); peak memory is measured in separate traced runs of each side.

1. The trainer's path: ``PlanBatchSampler`` (256-batch chunks, lists of (id, pass) keys, what the
   DataLoader consumes) against ``BatchSampler(WeightedRandomSampler)``, one pass each. Target:
   <= 5 us per batch.
2. A whole pass planned in 16,384-batch chunks (bulk planning, e.g. ``verify-batches``) against
   the same baseline. Targets: first batch <= 0.3 s, pass <= 1 s, <= 150 MB extra, >= 3x faster.
3. Three groups (real + generated + unlabeled, every self-training run): a 256-batch chunk planned
   at batch 160,000 against one at batch 0, caches cleared before each, as a resumed run meets
   it. Target: within 2x.
4. 10,000 batches of 4 real + 4 generated over 7,527 real + 37,635 generated in <= 10 ms.

Same-run baselines: torch's ``BatchSampler(WeightedRandomSampler)`` for the first batch and the
passes; for 4., two ``BatchSampler(RandomSampler(replacement=True))`` of 4 each, zipped (the
hand-written way to get a fixed 4 + 4 per batch).
"""

from __future__ import annotations

import inspect
import os
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import BatchSampler, RandomSampler, WeightedRandomSampler

from proveseg.data import plan as plan_module
from proveseg.data.plan import BatchPlanSpec, Group, Member, iter_plan, plan_batches
from proveseg.data.sampler import PlanBatchSampler

SOURCES = [("a", 735_577, 2.0), ("b", 755, 1.0), ("c", 2_686_666, 1.0), ("d", 16_994, 4.0)]
BATCH, REPEATS = 8, 3


def _clear() -> None:
    plan_module._permutation.cache_clear()
    plan_module._diffusion_period.cache_clear()


def _time(fn: Callable[[], object]) -> float:
    _clear()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _peak_mb(fn: Callable[[], object]) -> float:
    _clear()
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return peak


def _interleaved(contestants: dict[str, Callable[[], object]], repeats: int = REPEATS) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in contestants}
    for _ in range(repeats):
        for name, fn in contestants.items():
            times[name].append(_time(fn))
    return times


def _fmt(values: list[float], scale: float = 1.0, unit: str = "s") -> str:
    return f"{min(values) * scale:8.3f} / {float(np.median(values)) * scale:8.3f} {unit}"


def _torch_baseline(effective: int) -> Callable[[], int]:
    weights = torch.cat([torch.full((s,), r / 1.0) for _, s, r in SOURCES])

    def run() -> int:
        sampler = BatchSampler(WeightedRandomSampler(weights, effective, replacement=True,
                                                     generator=torch.Generator().manual_seed(0)), BATCH, False)
        return sum(1 for _ in sampler)
    return run


def _torch_first_batch(effective: int) -> Callable[[], object]:
    weights = torch.cat([torch.full((s,), r / 1.0) for _, s, r in SOURCES])
    return lambda: next(iter(BatchSampler(WeightedRandomSampler(
        weights, effective, replacement=True, generator=torch.Generator().manual_seed(0)), BATCH, False)))


def _torch_four_plus_four() -> int:
    real, gen = (BatchSampler(RandomSampler(range(n), replacement=True, num_samples=40_000,
                                            generator=torch.Generator().manual_seed(0)), 4, False)
                 for n in (7_527, 37_635))
    return sum(1 for _ in zip(real, gen, strict=True))


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _three_groups() -> BatchPlanSpec:
    return BatchPlanSpec((Group("real", 0.7 * 0.37, (Member("r", 2_975),)),
                          Group("generated", 0.7 * 0.63, (Member("g", 17_850),)),
                          Group("unlabeled", 0.3, (Member("u", 19_998),))), BATCH, seed=0)


def main() -> None:
    members = tuple(Member(n, s, r) for n, s, r in SOURCES)
    spec = BatchPlanSpec((Group("real", 1.0, members),), BATCH, seed=0)
    effective = int(sum(m.effective for m in members))
    n_batches = effective // BATCH
    baseline = _torch_baseline(effective)
    load = os.getloadavg()[0]

    def sampler_pass() -> int:  # as ``TrainingData.loader`` builds it: the default chunk
        return sum(1 for _ in PlanBatchSampler(spec, 0, n_batches))

    def chunked_pass() -> int:
        return sum(len(p.ids) for p in iter_plan(spec, 0, n_batches, chunk=16384))

    firsts = _interleaved({"ours": lambda: plan_batches(spec, 0, 1), "torch": _torch_first_batch(effective)})
    first = firsts["ours"]
    passes = _interleaved({"sampler": sampler_pass, "chunks": chunked_pass, "torch": baseline})
    peaks = {name: _peak_mb(fn) for name, fn in (("sampler", sampler_pass), ("chunks", chunked_pass),
                                                  ("torch", baseline))}
    three = _three_groups()
    late = _interleaved({"batch 0": lambda: plan_batches(three, 0, 256),
                         "batch 160,000": lambda: plan_batches(three, 160_000, 160_256)}, repeats=5)
    small = BatchPlanSpec((Group("real", 0.5, (Member("r", 7_527),)), Group("generated", 0.5, (Member("g", 37_635),))),
                          8, seed=0)
    smalls = _interleaved({"ours": lambda: plan_batches(small, 0, 10_000), "torch": _torch_four_plus_four})
    small_time = smalls["ours"]

    med = {name: float(np.median(v)) for name, v in passes.items()}
    print(f"plan over {effective:,} effective samples ({len(SOURCES)} sources, batch {BATCH}, {n_batches:,} batches); "
          f"untraced, {REPEATS} interleaved repetitions, min / median; load {load:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end:")
    print(f"  first batch                                  {_fmt(first, 1e3, 'ms')}   (target <= 300 ms: "
          f"{_verdict(float(np.median(first)) <= 0.3)}); baseline's first batch {_fmt(firsts['torch'], 1e3, 'ms')}")
    per_batch = [t / n_batches * 1e6 for t in passes["sampler"]]
    base_per_batch = [t / n_batches * 1e6 for t in passes["torch"]]
    chunk = inspect.signature(PlanBatchSampler).parameters["chunk"].default  # what TrainingData.loader gets
    print(f"  1. trainer's path, PlanBatchSampler ({chunk}-batch chunks): {_fmt(passes['sampler'])} = "
          f"{_fmt(per_batch, unit='us/batch')} (target <= 5 us/batch: "
          f"{'met' if np.median(per_batch) <= 5 else 'NOT met'}), peak {peaks['sampler']:.0f} MB")
    print(f"     baseline BatchSampler(WeightedRandomSampler):       {_fmt(passes['torch'])} = "
          f"{_fmt(base_per_batch, unit='us/batch')}, peak {peaks['torch']:.0f} MB "
          f"-> sampler {med['torch'] / med['sampler']:.2f}x the baseline's speed")
    ok = med["chunks"] <= 1 and peaks["chunks"] <= 150 and med["torch"] / med["chunks"] >= 3
    print(f"  2. whole pass in 16,384-batch chunks: {_fmt(passes['chunks'])} (target <= 1 s), peak "
          f"{peaks['chunks']:.0f} MB (target <= 150 MB) -> {med['torch'] / med['chunks']:.1f}x the baseline "
          f"(target >= 3x; all three: {_verdict(ok)})")
    ratio = float(np.median(late["batch 160,000"]) / np.median(late["batch 0"]))
    print(f"  3. three groups, a 256-batch chunk at batch 0: {_fmt(late['batch 0'], 1e3, 'ms')}; at batch 160,000: "
          f"{_fmt(late['batch 160,000'], 1e3, 'ms')} -> {ratio:.2f}x "
          f"(target <= 2x: {'met' if ratio <= 2 else 'NOT met'})")
    print(f"  4. 10,000 batches of 4 real + 4 generated over 7,527 + 37,635: {_fmt(small_time, 1e3, 'ms')} "
          f"(target <= 10 ms: {_verdict(float(np.median(small_time)) <= 0.01)}); baseline, two RandomSamplers "
          f"of 4 zipped: {_fmt(smalls['torch'], 1e3, 'ms')}")


if __name__ == "__main__":
    main()
