"""Collation of loader samples: uint8 images batched in the layout they were decoded in.

Decoders produce (H, W, 3) pixels; the dataset hands them on as (3, H, W) views of that memory
(transforms keep the strides). Stacking those views into a contiguous (N, 3, H, W) batch is a
strided gather, several times a copy; writing them into an (N, H, W, 3) buffer is a plain copy per
image. The batch is returned as the (N, 3, H, W) channels-last view of that buffer, and
:func:`proveseg.data.transforms.to_model_input` lays it out for the model on its device (free
on a GPU, and exactly what ``channels_last`` training wants). In a loader worker the buffers come
from a :class:`~proveseg.data.shmpool.BatchBufferPool` when one is given. Strings and other
non-tensor values go through ``default_collate``. Written here because torch's collate has no
notion of memory format or of reusable buffers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import default_collate

from proveseg.data.shmpool import SLOT_KEY, BatchBufferPool, LocalBufferPool

__all__ = ["BatchCollator", "collate_samples"]


def _is_image(t: torch.Tensor) -> bool:
    return t.dtype == torch.uint8 and t.dim() == 3 and t.shape[0] == 3


def _stackable(values: list[Any]) -> bool:
    first = values[0]
    return isinstance(first, torch.Tensor) and all(
        isinstance(v, torch.Tensor) and v.shape == first.shape and v.dtype == first.dtype for v in values)


def _view(storage: torch.UntypedStorage, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """A contiguous tensor of ``shape`` over ``storage`` (which holds exactly that many bytes)."""
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)


def _stack_into(values: list[torch.Tensor], storage: torch.UntypedStorage) -> torch.Tensor:
    """``values`` stacked in ``storage``; (3, H, W) uint8 images as the channels-last view of (N, H, W, 3)."""
    first = values[0]
    if _is_image(first):
        c, h, w = first.shape
        out = _view(storage, first.dtype, (len(values), h, w, c))
        for i, image in enumerate(values):
            out[i].copy_(image.permute(1, 2, 0))
        return out.permute(0, 3, 1, 2)
    out = _view(storage, first.dtype, (len(values), *first.shape))
    return torch.stack(values, out=out)


class BatchCollator:
    """Collate samples into a batch; tensors go into pooled worker buffers when ``pool`` is given."""

    def __init__(self, pool: BatchBufferPool | LocalBufferPool | None = None) -> None:
        self.pool = pool

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        columns = {k: [s[k] for s in samples] for k in samples[0]} if samples else {}
        images = columns.get("image", [])
        if not images or not _is_image(images[0]) or not _stackable(images):
            return default_collate(list(samples))  # float images, or sizes that do not stack: torch's rules
        tensors = {k: v for k, v in columns.items() if _stackable(v)}
        nbytes = {k: len(v) * v[0].numel() * v[0].element_size() for k, v in tensors.items()}
        if self.pool is not None:
            slot, storages = self.pool.storages(nbytes)
        else:
            slot, storages = BatchBufferPool.fresh(nbytes)
        batch: dict[str, Any] = {k: _stack_into(v, storages[k]) if k in tensors else default_collate(v)
                                 for k, v in columns.items()}
        if slot >= 0:
            batch[SLOT_KEY] = slot
        return batch


collate_samples = BatchCollator()
"""A batch of dataset samples; same-size uint8 images are stacked channels-last (see the module docstring)."""
