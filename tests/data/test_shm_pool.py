"""Pooled worker batch memory: reused only once the consumer has let go, never under a batch it still holds."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from proveseg.config import DataConfig
from proveseg.data.pipeline import build_training_data
from proveseg.data.shmpool import SLOT_KEY, PooledLoader


def _data(root: Path, n: int = 8):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(root / f"{i}.jpg", quality=90)
        Image.fromarray(rng.integers(0, 19, (24, 40), dtype=np.uint8)).save(root / f"{i}.png")
        rows.append((f"{i}.jpg", f"{i}.png", "clear_day"))
    with (root / "list.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("image", "label", "domain"), *rows])
    cfg = DataConfig.model_validate({"real": [{"name": "s", "reader": "csv", "root": str(root / "list.csv")}],
                                     "batch_size": 2, "transforms": {"hflip": True}})
    return build_training_data(cfg)


def _snapshot(batch: dict[str, object]) -> dict[str, np.ndarray]:
    return {k: v.clone().numpy() for k, v in batch.items() if isinstance(v, torch.Tensor)}


def _equal(a: dict[str, np.ndarray], b: dict[str, object]) -> bool:
    return all(np.array_equal(a[k], b[k].numpy()) for k in a)  # type: ignore[attr-defined]


def test_a_streaming_consumer_reuses_segments_and_sees_every_batch_as_loaded(tmp_path: Path) -> None:
    data = _data(tmp_path)
    reference = [_snapshot(b) for b in data.loader(0, 24, num_workers=0)]
    loader = data.loader(0, 24, num_workers=2)
    assert isinstance(loader, PooledLoader)
    for _ in range(2):  # persistent workers: the second pass reuses the first pass's segments
        for expected, batch in zip(reference, loader, strict=True):
            assert SLOT_KEY not in batch and _equal(expected, batch)
    assert loader.pool.released > 20  # the segments did go back to the workers


def test_batches_a_consumer_keeps_are_never_overwritten(tmp_path: Path) -> None:
    data = _data(tmp_path)
    reference = [_snapshot(b) for b in data.loader(0, 24, num_workers=0)]
    loader = data.loader(0, 24, num_workers=2)
    kept = list(loader)  # every batch held at once: the pool must fall back to fresh memory
    views, storages = [], []
    for b, batch in enumerate(loader):  # a second pass keeping only a view or a storage of some batches
        if b % 3 == 0:
            views.append((b, batch["image"][1:], batch["mask"][:, 2:]))
        elif b % 3 == 1:
            storages.append((b, batch["index"].untyped_storage(), batch["index"].clone()))
    for expected, batch in zip(reference, kept, strict=True):
        assert _equal(expected, batch)
    for b, image, mask in views:
        assert np.array_equal(image.numpy(), reference[b]["image"][1:])
        assert np.array_equal(mask.numpy(), reference[b]["mask"][:, 2:])
    for _b, storage, index in storages:
        assert torch.equal(torch.empty(0, dtype=torch.int64).set_(storage, 0, index.shape), index)


def test_passes_cut_short_give_their_prefetched_segments_back(tmp_path: Path) -> None:
    data = _data(tmp_path)
    reference = [_snapshot(b) for b in data.loader(0, 24, num_workers=0)]
    loader = data.loader(0, 24, num_workers=2)
    assert isinstance(loader, PooledLoader)
    kept = None
    for _ in range(5):  # the DataLoader drops what it prefetched; those segments must not stay taken
        for b, batch in enumerate(loader):
            if b == 1:
                kept = batch
                break
    released = loader.pool.released
    for expected, batch in zip(reference, loader, strict=True):
        assert _equal(expected, batch)
    assert loader.pool.released - released > 15  # the pool still reuses after the cut passes
    assert kept is not None and _equal(reference[1], kept)  # and never under a batch still held


def test_a_pooled_loader_needs_persistent_workers_and_copies(tmp_path: Path) -> None:
    import copy

    import pytest
    from torch.utils.data import DataLoader

    from proveseg.data.shmpool import BatchBufferPool

    with pytest.raises(ValueError, match="persistent workers"):
        PooledLoader(DataLoader(range(4), num_workers=1), BatchBufferPool(1, 2))
    loader = _data(tmp_path).loader(0, 4, num_workers=1)
    assert isinstance(loader, PooledLoader) and len(copy.copy(loader)) == 4
    plain = _data(tmp_path).loader(0, 4, num_workers=1, reuse_worker_memory=False)
    assert not isinstance(plain, PooledLoader) and all(SLOT_KEY not in b for b in plain)


def test_without_workers_buffers_are_reused_only_once_nothing_else_holds_them(tmp_path: Path) -> None:
    data = _data(tmp_path)
    reference = [_snapshot(b) for b in data.loader(0, 24, num_workers=0, reuse_worker_memory=False)]
    loader = data.loader(0, 24, num_workers=0)
    pool = loader.collate_fn.pool  # type: ignore[attr-defined]
    for expected, batch in zip(reference, loader, strict=True):  # streaming: reused
        assert _equal(expected, batch)
    assert pool.reused > 15
    kept = list(loader)  # all kept: none may be written again
    views = [(b, batch["image"].numpy()[0]) for b, batch in enumerate(loader)]  # only a numpy view kept
    for expected, batch in zip(reference, kept, strict=True):
        assert _equal(expected, batch)
    for b, view in views:
        assert np.array_equal(view, reference[b]["image"][0])
