"""Thin torch adapter: a BatchSampler that yields one rank's batches of a plan, chunk by chunk."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler

from proveseg.data.plan import BatchPlanSpec, iter_plan

__all__ = ["PlanBatchSampler"]


class PlanBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches ``start..stop-1`` of ``spec`` for ``rank``, as lists of (global id, pass) keys.

    Resuming after ``k`` batches is ``PlanBatchSampler(spec, start=k, ...)``: the plan is
    recomputed and sliced, never replayed.
    """

    def __init__(self, spec: BatchPlanSpec, start: int, stop: int, rank: int = 0, chunk: int = 256) -> None:
        if not 0 <= rank < spec.world_size:
            raise ValueError(f"rank {rank} outside world of size {spec.world_size}")
        self.spec, self.start, self.stop, self.rank, self.chunk = spec, start, stop, rank, chunk

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for planned in iter_plan(self.spec, self.start, self.stop, self.chunk):
            ids, passes = planned.ids[:, self.rank].tolist(), planned.passes[:, self.rank].tolist()
            for batch_ids, batch_passes in zip(ids, passes, strict=True):
                yield list(zip(batch_ids, batch_passes, strict=True))
