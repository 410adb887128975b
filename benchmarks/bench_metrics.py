"""Confusion-matrix accumulation speed on 8 x 512 x 1024 int64 label/prediction maps, 19 classes.

Baselines in the same run, on the same arrays: the per-image ``torch.histc`` intersect-and-union
of MMSegmentation, torchmetrics' ``MulticlassJaccardIndex`` (validate_args=False), and the memory
bound: one read of both int64 inputs. Targets: >= 8x histc and >= 5x torchmetrics.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from proveseg.evaluate.confusion import confusion_matrix, confusion_matrix_torch

N, H, W, C = 8, 512, 1024, 19
PIXELS = N * H * W


def _best(fn, repeats: int = 5) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def histc_iou(label: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """MMSegmentation's intersect_and_union, image by image."""
    total = torch.zeros(3, C, dtype=torch.float64)
    for lab, prd in zip(label, pred, strict=True):
        keep = lab != 255
        lab, prd = lab[keep], prd[keep]
        inter = prd[prd == lab]
        area_i = torch.histc(inter.float(), bins=C, min=0, max=C - 1)
        area_p = torch.histc(prd.float(), bins=C, min=0, max=C - 1)
        area_l = torch.histc(lab.float(), bins=C, min=0, max=C - 1)
        total += torch.stack([area_i, area_p, area_l]).double()
    return total


def main() -> None:
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    label_np = rng.integers(0, C, (N, H, W)).astype(np.int64)
    label_np[:, :32] = 255
    pred_np = np.where(rng.random((N, H, W)) < 0.7, label_np % C, rng.integers(0, C, (N, H, W))).astype(np.int64)
    label, pred = torch.from_numpy(label_np), torch.from_numpy(pred_np)
    tm = MulticlassJaccardIndex(num_classes=C, average=None, ignore_index=255, validate_args=False)

    def ours_numpy() -> None:
        for lab, prd in zip(label_np, pred_np, strict=True):
            confusion_matrix(lab, prd, C)

    def ours_torch() -> None:
        for lab, prd in zip(label, pred, strict=True):
            confusion_matrix_torch(lab, prd, C)

    def torchmetrics_run() -> None:
        tm.reset()
        tm.update(pred, label)
        tm.compute()

    results = {
        "memory bound (read both int64 inputs once)": _best(lambda: (label_np.sum(), pred_np.sum())),
        "proveseg confusion_matrix (numpy)": _best(ours_numpy),
        "proveseg confusion_matrix_torch (CPU)": _best(ours_torch),
        "per-image torch.histc (MMSegmentation)": _best(lambda: histc_iou(label, pred), 3),
        "torchmetrics MulticlassJaccardIndex": _best(torchmetrics_run, 3),
    }
    bound = results["memory bound (read both int64 inputs once)"]
    print(f"confusion matrices, {N} x {H} x {W}, {C} classes, 2 threads ({PIXELS / 1e6:.1f} Mpixel):")
    for name, t in results.items():
        print(f"  {name:46s} {PIXELS / t / 1e6:8.0f} Mpixel/s  ({bound / t:5.1%} of the memory bound)")
    ours = min(results["proveseg confusion_matrix (numpy)"], results["proveseg confusion_matrix_torch (CPU)"])
    print(f"  speed-up: {results['per-image torch.histc (MMSegmentation)'] / ours:.1f}x histc (target >= 8x), "
          f"{results['torchmetrics MulticlassJaccardIndex'] / ours:.1f}x torchmetrics (target >= 5x)")


if __name__ == "__main__":
    main()
