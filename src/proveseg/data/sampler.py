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
        size = self.spec.batch_size
        for planned in iter_plan(self.spec, self.start, self.stop, self.chunk):
            # keys for the whole chunk in one C-level zip; each batch is then a slice (no per-batch zip)
            keys = list(zip(planned.ids[:, self.rank].ravel().tolist(), planned.passes[:, self.rank].ravel().tolist(),
                            strict=True))
            for lo in range(0, len(keys), size):
                yield keys[lo:lo + size]
