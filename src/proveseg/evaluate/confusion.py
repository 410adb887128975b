"""Confusion matrices by ``bincount`` over the code ``label * C + pred``.

With the ignore value (255) at or above C, ignored pixels land beyond the first C*C bins and are
sliced off: no boolean mask and no flatten copy (../shared/DESIGN.md section 8). The code is
``add(pred, label, alpha=C)`` in int16 (uint8 labels) or int32, on the CPU chunk by chunk from
operands cast to that dtype (see ``_code``). A
label that is neither a class nor the ignore value lands in the bins between C*C and ignore*C, or
beyond the ignore row, and raises: nothing is dropped silently.
Predictions must be class ids in [0, C) (an argmax always is); labels wider than uint8 must stay
below 2**31 / C (the int32 code).
"""

from __future__ import annotations

import numpy as np
import torch

from proveseg.data.classes import IGNORE_INDEX

__all__ = ["confusion_matrix", "confusion_matrix_torch", "per_image_confusion"]


def confusion_matrix_torch(label: torch.Tensor, pred: torch.Tensor, num_classes: int,
                           ignore: int = IGNORE_INDEX) -> torch.Tensor:
    """(C, C) int64 matrix (rows = label, columns = prediction) on the tensors' device."""
    c = num_classes
    if ignore < c:
        raise ValueError(f"ignore value {ignore} must be >= the number of classes {c}")
    if label.shape != pred.shape:
        raise ValueError(f"label shape {tuple(label.shape)} != prediction shape {tuple(pred.shape)}")
    # The code is written straight into the narrowest dtype that holds it: one pass over the inputs,
    # and bincount's own passes (min, max, count) read 2 or 4 bytes a pixel instead of 8.
    narrow = label.dtype == torch.uint8 and (IGNORE_INDEX + 1) * c <= torch.iinfo(torch.int16).max
    if label.is_floating_point() or pred.is_floating_point():
        raise ValueError(f"labels ({label.dtype}) and predictions ({pred.dtype}) must be integer class ids")
    code = _code(label, pred, c, torch.int16 if narrow else torch.int32)
    counts = torch.bincount(code, minlength=ignore * c + c)
    invalid = torch.cat([counts[c * c: ignore * c], counts[ignore * c + c:]])  # beyond: labels above ignore
    if invalid.any():
        raise ValueError(f"labels outside 0..{c - 1} and {ignore} in {int(invalid.sum())} pixels")
    return counts[: c * c].reshape(c, c)


_CHUNK = 1 << 15  # pixels per CPU step: the narrow code and both narrowed operands stay in cache


def _code(label: torch.Tensor, pred: torch.Tensor, c: int, dtype: torch.dtype) -> torch.Tensor:
    """``label * c + pred`` as a flat ``dtype`` tensor, wrapping like a cast of the wide result.

    On the CPU an add whose output dtype differs from its inputs' is not vectorised (0.8 ns a
    pixel against 0.25 for a cast): each chunk is cast to ``dtype`` first (a truncation, the same
    residue modulo 2**bits as the wide sum's) and added there.
    """
    code = torch.empty(label.numel(), dtype=dtype, device=label.device)
    if label.device.type != "cpu":
        if pred.dtype.itemsize < code.dtype.itemsize:  # uint8 + uint8 * C would be computed (and wrap) in uint8
            pred = pred.to(dtype)
        torch.add(pred.reshape(-1), label.reshape(-1), alpha=c, out=code)
        return code
    lab, prd = label.reshape(-1), pred.reshape(-1)
    scratch = torch.empty(min(len(code), _CHUNK), dtype=dtype)
    for lo in range(0, len(code), _CHUNK):
        out = code[lo:lo + _CHUNK]
        tmp = scratch[:len(out)]
        out.copy_(lab[lo:lo + _CHUNK])
        tmp.copy_(prd[lo:lo + _CHUNK])
        torch.add(tmp, out, alpha=c, out=out)
    return code


def confusion_matrix(label: np.ndarray, pred: np.ndarray, num_classes: int, ignore: int = IGNORE_INDEX) -> np.ndarray:
    """NumPy front end of :func:`confusion_matrix_torch` (zero-copy views, same kernel)."""
    lab, prd = torch.from_numpy(np.ascontiguousarray(label)), torch.from_numpy(np.ascontiguousarray(pred))
    return confusion_matrix_torch(lab, prd, num_classes, ignore).numpy()


def per_image_confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int,
                        ignore: int = IGNORE_INDEX) -> np.ndarray:
    """(N, C, C) matrices, one per image of (N, H, W) labels and predictions."""
    return np.stack([confusion_matrix(lab, prd, num_classes, ignore) for lab, prd in zip(labels, preds, strict=True)])
