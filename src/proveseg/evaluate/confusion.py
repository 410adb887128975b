"""Confusion matrices by ``bincount`` over the code ``label * C + pred``.

With the ignore value (255) at or above C, ignored pixels land beyond the first C*C bins and are
sliced off: no boolean mask and no flatten copy (../shared/DESIGN.md section 8). The code is
``add(pred, label, alpha=C)`` in int16 (uint8 labels) or int32, on the CPU chunk by chunk from
operands cast to that dtype, each chunk counted while in cache (see ``_counts_cpu``). A
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
    dtype = torch.int16 if narrow else torch.int32
    nbins = ignore * c + c
    beyond: int | torch.Tensor  # pixels counted at or beyond nbins: labels above the ignore value
    if label.device.type == "cpu":
        counts, beyond = _counts_cpu(label, pred, c, dtype, nbins)
    else:
        counts = torch.bincount(_code(label, pred, c, dtype), minlength=nbins)
        counts, beyond = counts[:nbins], counts[nbins:].sum()
    invalid = counts[c * c: ignore * c].sum() + beyond
    if invalid:
        raise ValueError(f"labels outside 0..{c - 1} and {ignore} in {int(invalid)} pixels")
    return counts[: c * c].reshape(c, c)


_CHUNK = 1 << 17  # pixels per CPU step: the narrow code and its scratch operand stay in L2


def _code(label: torch.Tensor, pred: torch.Tensor, c: int, dtype: torch.dtype) -> torch.Tensor:
    """``label * c + pred`` as a flat ``dtype`` tensor on the tensors' (non-CPU) device."""
    code = torch.empty(label.numel(), dtype=dtype, device=label.device)
    if pred.dtype.itemsize < code.dtype.itemsize:  # uint8 + uint8 * C would be computed (and wrap) in uint8
        pred = pred.to(dtype)
    torch.add(pred.reshape(-1), label.reshape(-1), alpha=c, out=code)
    return code


def _counts_cpu(label: torch.Tensor, pred: torch.Tensor, c: int, dtype: torch.dtype,
                nbins: int) -> tuple[torch.Tensor, int]:
    """Counts of ``label * c + pred`` below ``nbins`` and the number at or above it, chunk by chunk.

    Each chunk is cast to ``dtype`` (a truncation, the same residue modulo 2**bits as the wide
    sum's), added there and counted while it is in cache: an add whose output dtype differs from
    its inputs' is not vectorised on the CPU (0.8 ns a pixel against 0.3 for a cast), and a
    full-size code buffer costs a page fault per 4 KiB when it is fresh memory.
    """
    lab, prd = label.reshape(-1), pred.reshape(-1)
    n = len(lab)
    code, scratch = torch.empty(min(n, _CHUNK), dtype=dtype), torch.empty(min(n, _CHUNK), dtype=dtype)
    total, beyond = torch.zeros(nbins, dtype=torch.int64), 0
    for lo in range(0, n, _CHUNK):
        out = code[:min(_CHUNK, n - lo)]
        tmp = scratch[:len(out)]
        out.copy_(lab[lo:lo + _CHUNK])
        tmp.copy_(prd[lo:lo + _CHUNK])
        torch.add(tmp, out, alpha=c, out=out)
        try:
            counts = torch.bincount(out, minlength=nbins)
        except RuntimeError as err:  # bincount refuses negative codes: a negative label or prediction
            raise ValueError(f"negative labels or predictions (class ids must be >= 0): {err}") from None
        total += counts[:nbins]
        beyond += int(counts[nbins:].sum()) if len(counts) > nbins else 0
    return total, beyond


def confusion_matrix(label: np.ndarray, pred: np.ndarray, num_classes: int, ignore: int = IGNORE_INDEX) -> np.ndarray:
    """NumPy front end of :func:`confusion_matrix_torch` (zero-copy views, same kernel)."""
    lab, prd = torch.from_numpy(np.ascontiguousarray(label)), torch.from_numpy(np.ascontiguousarray(pred))
    return confusion_matrix_torch(lab, prd, num_classes, ignore).numpy()


def per_image_confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int,
                        ignore: int = IGNORE_INDEX) -> np.ndarray:
    """(N, C, C) matrices, one per image of (N, H, W) labels and predictions."""
    return np.stack([confusion_matrix(lab, prd, num_classes, ignore) for lab, prd in zip(labels, preds, strict=True)])
