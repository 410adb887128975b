"""Reusable shared-memory batch buffers for loader workers.

torch's DataLoader gives every batch from a worker a fresh shared-memory segment: the worker
page-faults every page of it into tmpfs (about 2 us per 4 KiB page on the development machines:
1 ms per 512x1024 image with its mask, 3.5 ms at 1024x2048, a fifth of what a worker spends on a
sample) and the main process maps and unmaps it. A pool keeps each worker's last few segments and
writes the next batch into one the main process has finished with. Written here because neither
torch nor a maintained library pools worker batch memory.

A segment is written again only after the main process has seen that nothing references it any
more (every tensor, view and storage of the batch dropped: torch's own ``StorageWeakRef`` reports
it expired) or that the batch was copied out of it (pinned memory). Until then the worker takes a
fresh segment, which is what torch does anyway: a consumer that keeps its batches keeps them
intact and only loses the reuse.

The references counted are the training process's: a batch handed to another process (through a
``torch.multiprocessing`` queue, say) must be cloned first, or the loader built with
``reuse_worker_memory=False`` (torch's fresh segment per batch). A new pass over the loader takes
back the segments of batches that were prefetched for the previous pass and never delivered
(persistent workers drop them when a pass is cut short); so the pool requires persistent workers,
whose dropped batches can never arrive later.
"""

from __future__ import annotations

import ctypes
import multiprocessing
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import get_worker_info

__all__ = ["SLOT_KEY", "BatchBufferPool", "LocalBufferPool", "PooledLoader"]

SLOT_KEY = "_proveseg_slot"  # travels with a pooled batch from the worker; the main process removes it


class BatchBufferPool:
    """``slots`` reusable batch segments per worker, shared between the workers and the main process.

    Workers call :meth:`storages` from the collate function; the main process passes every batch
    through :meth:`track`, which hands segments back once nothing references them.
    """

    def __init__(self, workers: int, slots: int) -> None:
        self.slots = slots
        # 1 = the segment's last batch is released: its worker may write it; taken and freed under the lock.
        # The default multiprocessing context, the one a DataLoader without ``multiprocessing_context`` uses.
        self._free = multiprocessing.Array(ctypes.c_uint8, [1] * (workers * slots))
        self._mine: dict[int, dict[str, torch.UntypedStorage]] = {}  # worker side: this worker's segments
        self._held: list[tuple[int, list[StorageWeakRef]]] = []  # main side: batches out with the consumer
        self.released = 0  # main side: segments handed back to their worker

    @staticmethod
    def fresh(nbytes: dict[str, int]) -> tuple[int, dict[str, torch.UntypedStorage]]:
        """(-1, new storages): shared memory in a loader worker (as ``default_collate`` does), plain elsewhere."""
        if get_worker_info() is None:
            return -1, {name: torch.UntypedStorage(n) for name, n in nbytes.items()}
        return -1, {name: torch.UntypedStorage._new_shared(n) for name, n in nbytes.items()}

    def storages(self, nbytes: dict[str, int]) -> tuple[int, dict[str, torch.UntypedStorage]]:
        """(slot, storages of the given sizes): a released segment of this worker, else fresh ones (slot -1)."""
        info = get_worker_info()
        if info is None:  # the main process: nothing crosses a process boundary
            return self.fresh(nbytes)
        for k in range(info.id * self.slots, (info.id + 1) * self.slots):
            with self._free.get_lock():
                if not self._free[k]:
                    continue
                self._free[k] = 0
            held = self._mine.setdefault(k, {})
            for name, n in nbytes.items():
                if name not in held or held[name].nbytes() != n:
                    held[name] = torch.UntypedStorage._new_shared(n)
            return k, held
        return self.fresh(nbytes)

    def track(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Main process: remove the slot mark from ``batch``, hand back every earlier segment nothing uses."""
        slot = int(batch.pop(SLOT_KEY, -1))
        self._release_expired()
        if slot >= 0:
            refs = [StorageWeakRef(v.untyped_storage()) for v in batch.values()
                    if isinstance(v, torch.Tensor) and v.is_shared()]
            if refs:
                self._held.append((slot, refs))
            else:  # copied out (pinned) on its way here: the segment is free already
                self._release(slot)
        return batch

    def reclaim(self) -> None:
        """Main process, before a new pass: every segment not under a batch the consumer still holds is free.

        The others held batches prefetched for the previous pass, which the DataLoader drops when
        it starts the next one (persistent workers), so they can never be delivered.
        """
        self._release_expired()
        held = {k for k, _ in self._held}
        with self._free.get_lock():
            for k in range(len(self._free)):
                if k not in held and not self._free[k]:
                    self._free[k] = 1

    def _release_expired(self) -> None:
        """Hand back every segment whose batch nothing references any more."""
        still = []
        for k, refs in self._held:
            if all(ref.expired() for ref in refs):
                self._release(k)
            else:
                still.append((k, refs))
        self._held = still

    def __getstate__(self) -> dict[str, Any]:
        # workers get the shared flags, never the main process's weak references (raw pointers) or segments
        return {**self.__dict__, "_held": [], "_mine": {}}

    def _release(self, k: int) -> None:
        with self._free.get_lock():
            self._free[k] = 1
        self.released += 1


_use_count = getattr(torch._C, "_storage_Use_Count", None)  # private; without it every batch gets fresh memory


class LocalBufferPool:
    """Batch buffers reused within one process (a loader without workers).

    Glibc maps every allocation as large as a batch (64 MB at 1024x2048, batch 8) afresh and
    faults each page in again. Here a buffer is reused once the pool holds its only reference: a
    batch, view, numpy array or storage the consumer keeps holds another, so the buffer under
    it is never written.
    """

    def __init__(self, slots: int = 3) -> None:
        self._slots: list[dict[str, torch.UntypedStorage]] = []
        self.max_slots = slots
        self.reused = 0

    def storages(self, nbytes: dict[str, int]) -> tuple[int, dict[str, torch.UntypedStorage]]:
        """(-1, storages of the given sizes): a free slot's, else new ones (kept while slots remain)."""
        if _use_count is None:
            return BatchBufferPool.fresh(nbytes)
        for held in self._slots:
            if held.keys() == nbytes.keys() and all(
                    held[k].nbytes() == n and _use_count(held[k]._cdata) == 1 for k, n in nbytes.items()):
                self.reused += 1
                return -1, held
        fresh = {name: torch.UntypedStorage(n) for name, n in nbytes.items()}
        if len(self._slots) < self.max_slots:
            self._slots.append(fresh)
        else:  # a slot whose sizes changed (another batch shape) or that is still held: replace the oldest
            self._slots = [*self._slots[1:], fresh]
        return -1, fresh


class PooledLoader:
    """A DataLoader whose batches come through a :class:`BatchBufferPool` (same length, same batches)."""

    def __init__(self, loader: torch.utils.data.DataLoader[Any], pool: BatchBufferPool) -> None:
        if not loader.persistent_workers:
            raise ValueError("a pooled loader needs persistent workers (see proveseg.data.shmpool)")
        self.loader, self.pool = loader, pool

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        self.pool.reclaim()  # before the DataLoader restarts (and drops what the last pass prefetched)
        for batch in self.loader:
            yield self.pool.track(batch)

    def __getattr__(self, name: str) -> Any:  # batch_sampler, dataset, num_workers, ... as on the DataLoader
        if name in ("loader", "pool"):  # not set yet (copy, unpickling): no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self.loader, name)
