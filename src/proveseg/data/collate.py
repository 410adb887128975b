"""Collation of loader samples: uint8 images batched in the layout they were decoded in.

Decoders produce (H, W, 3) pixels; the dataset hands them on as (3, H, W) views of that memory
(transforms keep the strides). Stacking those views into a contiguous (N, 3, H, W) batch is a
strided gather, several times a copy; writing them into an (N, H, W, 3) buffer is a plain copy per
image. The batch is returned as the (N, 3, H, W) channels-last view of that buffer, and
:func:`proveseg.data.transforms.to_model_input` lays it out for the model on its device (free
on a GPU, and exactly what ``channels_last`` training wants). Everything else is
``default_collate``. Written here because torch's collate has no notion of memory format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import default_collate, get_worker_info

__all__ = ["collate_samples"]


def _stack_channels_last(images: Sequence[torch.Tensor]) -> torch.Tensor:
    n, (c, h, w) = len(images), images[0].shape
    if get_worker_info() is not None:  # as default_collate does: build the batch in shared memory, no extra copy
        storage = images[0]._typed_storage()._new_shared(n * h * w * c, device="cpu")
        out = images[0].new(storage).resize_(n, h, w, c)
    else:
        out = torch.empty((n, h, w, c), dtype=images[0].dtype)
    for i, image in enumerate(images):
        out[i].copy_(image.permute(1, 2, 0))
    return out.permute(0, 3, 1, 2)


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A batch of dataset samples; same-size uint8 images are stacked channels-last (see the module docstring)."""
    images = [s["image"] for s in samples]
    if not images or images[0].dtype != torch.uint8 or any(i.shape != images[0].shape for i in images):
        return default_collate(list(samples))
    batch: dict[str, Any] = default_collate([{k: v for k, v in s.items() if k != "image"} for s in samples])
    batch["image"] = _stack_channels_last(images)
    return batch
