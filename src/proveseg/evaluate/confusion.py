"""Confusion matrices by ``bincount`` over a compact code of label and prediction.

``code = lut[label] + pred`` where the lookup table sends class ``c`` to ``c * C`` and the ignore
value to an overflow region that is sliced off, so no boolean mask or flatten copy is needed
(../shared/DESIGN.md section 8: about 13x a per-image ``histc``). A label that is neither a class
nor the ignore value lands in a second overflow region and raises: nothing is dropped silently.
"""

from __future__ import annotations

import numpy as np
import torch

from proveseg.data.classes import IGNORE_INDEX

__all__ = ["confusion_matrix", "confusion_matrix_torch", "per_image_confusion"]


def _lut(num_classes: int, ignore: int) -> np.ndarray:
    c = num_classes
    lut = np.full(256, c * c + c, dtype=np.int64)  # invalid labels -> second overflow region
    lut[:c] = np.arange(c, dtype=np.int64) * c
    lut[ignore] = c * c
    return lut.astype(np.uint16 if c * c + 2 * c < 2**16 else np.int64)


def _check(counts: np.ndarray, num_classes: int) -> np.ndarray:
    c = num_classes
    if counts[c * c + c:].any():
        raise ValueError(f"labels outside 0..{c - 1} and {IGNORE_INDEX} in {int(counts[c * c + c:].sum())} pixels")
    return counts[: c * c].reshape(c, c)


def confusion_matrix(label: np.ndarray, pred: np.ndarray, num_classes: int, ignore: int = IGNORE_INDEX) -> np.ndarray:
    """(C, C) int64 matrix, rows = label, columns = prediction; ignore pixels never count."""
    if label.shape != pred.shape:
        raise ValueError(f"label shape {label.shape} != prediction shape {pred.shape}")
    lut = _lut(num_classes, ignore)
    code = lut[label.astype(np.uint8, copy=False)]
    code += pred.astype(code.dtype, copy=False)
    counts = np.bincount(code.ravel(), minlength=num_classes * num_classes + 2 * num_classes)
    return _check(counts, num_classes)


def per_image_confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int,
                        ignore: int = IGNORE_INDEX) -> np.ndarray:
    """(N, C, C) matrices, one per image of (N, H, W) labels and predictions."""
    return np.stack([confusion_matrix(lab, prd, num_classes, ignore) for lab, prd in zip(labels, preds, strict=True)])


def confusion_matrix_torch(label: torch.Tensor, pred: torch.Tensor, num_classes: int,
                           ignore: int = IGNORE_INDEX) -> torch.Tensor:
    """The same on torch tensors, on their device (the GPU when the predictions are there)."""
    c = num_classes
    lut = torch.from_numpy(_lut(c, ignore).astype(np.int64)).to(label.device)
    code = lut[label.long()] + pred.long()
    counts = torch.bincount(code.reshape(-1), minlength=c * c + 2 * c)
    if counts[c * c + c:].any():
        raise ValueError(f"labels outside 0..{c - 1} and {ignore} in {int(counts[c * c + c:].sum())} pixels")
    return counts[: c * c].reshape(c, c)
