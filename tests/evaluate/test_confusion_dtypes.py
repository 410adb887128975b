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
