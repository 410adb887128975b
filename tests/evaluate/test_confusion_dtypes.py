"""The confusion kernel gives the int64 answer whatever integer dtypes labels and predictions come in."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from proveseg.evaluate.confusion import confusion_matrix_torch


@pytest.mark.parametrize("label_dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("pred_dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
def test_every_integer_dtype_counts_like_int64(label_dtype: torch.dtype, pred_dtype: torch.dtype) -> None:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 19, (64, 96))
    label[:5] = 255
    pred = rng.integers(0, 19, (64, 96))
    expected = np.zeros((19, 19), np.int64)
    keep = label != 255
    np.add.at(expected, (label[keep], pred[keep]), 1)
    got = confusion_matrix_torch(torch.from_numpy(label).to(label_dtype), torch.from_numpy(pred).to(pred_dtype), 19)
    assert np.array_equal(got.numpy(), expected)


def test_labels_above_the_ignore_value_raise() -> None:
    with pytest.raises(ValueError, match="labels outside"):
        confusion_matrix_torch(torch.tensor([[300, 1]]), torch.tensor([[0, 1]]), 19)


@pytest.mark.parametrize("label_dtype", [torch.uint8, torch.int64])
def test_images_over_several_cpu_chunks_count_every_pixel(label_dtype: torch.dtype) -> None:
    from proveseg.evaluate.confusion import _CHUNK

    rng = np.random.default_rng(1)
    shape = (3 * _CHUNK // 256 + 1, 256 + 7)  # several chunks and a ragged last one
    label = rng.integers(0, 19, shape)
    label[::7] = 255
    pred = rng.integers(0, 19, shape)
    expected = np.zeros((19, 19), np.int64)
    keep = label != 255
    np.add.at(expected, (label[keep], pred[keep]), 1)
    lab, prd = torch.from_numpy(label).to(label_dtype), torch.from_numpy(pred)
    assert np.array_equal(confusion_matrix_torch(lab, prd, 19).numpy(), expected)
    # non-contiguous views count the same
    assert np.array_equal(confusion_matrix_torch(lab.t(), prd.t(), 19).numpy(), expected)
    lab[-1, -1] = 20  # an invalid label in the last chunk still raises
    with pytest.raises(ValueError, match="labels outside"):
        confusion_matrix_torch(lab, prd, 19)


@pytest.mark.parametrize("bad", [-1, 19, 254, 256, 70_000])
def test_every_label_that_is_neither_a_class_nor_ignore_raises(bad: int) -> None:
    from proveseg.evaluate.confusion import _CHUNK

    label = torch.zeros(2 * _CHUNK + 5, dtype=torch.int64)
    label[_CHUNK // 2] = bad  # in the first of three chunks: later chunks must not hide it
    with pytest.raises(ValueError, match=r"labels outside|negative"):
        confusion_matrix_torch(label, torch.zeros_like(label), 19)
