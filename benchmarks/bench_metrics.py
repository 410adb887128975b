"""Confusion-matrix accumulation speed on 8 x 512 x 1024 int64 label/prediction maps, 19 classes.

Baselines in the same run, on the same arrays: the per-image ``torch.histc`` intersect-and-union
of MMSegmentation, torchmetrics' ``MulticlassJaccardIndex`` (validate_args=False), and the memory
bound: one read of both int64 inputs. Contestants alternate within each of ``REPEATS`` rounds
(load on the machine hits all alike); min and median are printed, ratios use the minima. Also
shown: uint8 labels with int64 predictions, what evaluation passes (masks stay uint8 from the
loader), against its own bound (one read of a uint8 and an int64 input). Targets: >= 8x histc,
>= 5x torchmetrics, >= 50% of the memory bound.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from proveseg.evaluate.confusion import confusion_matrix, confusion_matrix_torch

N, H, W, C = 8, 512, 1024, 19
PIXELS = N * H * W
REPEATS = 5


def _interleaved(contestants: dict[str, Callable[[], object]], slow: set[str]) -> dict[str, list[float]]:
    """Seconds per run of each contestant; rounds alternate them; ``slow`` ones run every other round."""
    for fn in contestants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contestants}
    for r in range(REPEATS):
        for name, fn in contestants.items():
            if name in slow and r % 2:
                continue
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


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
    torch.set_num_threads(1)  # like the bound (numpy reads on one core); 2 OpenMP threads stall on a busy machine
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

    label_u8 = label.to(torch.uint8)

    def ours_u8() -> None:
        for lab, prd in zip(label_u8, pred, strict=True):
            confusion_matrix_torch(lab, prd, C)

    bound_name = "memory bound (read both int64 inputs once)"
    u8_bound_name = "memory bound, uint8 labels + int64 predictions"
    label_u8_np = label_u8.numpy()
    times = _interleaved({
        bound_name: lambda: (label_np.sum(), pred_np.sum()),
        u8_bound_name: lambda: (label_u8_np.sum(), pred_np.sum()),
        "proveseg confusion_matrix (numpy)": ours_numpy,
        "proveseg confusion_matrix_torch (CPU)": ours_torch,
        "  same, uint8 labels (evaluation's path)": ours_u8,
        "per-image torch.histc (MMSegmentation)": lambda: histc_iou(label, pred),
        "torchmetrics MulticlassJaccardIndex": torchmetrics_run,
    }, slow={"per-image torch.histc (MMSegmentation)", "torchmetrics MulticlassJaccardIndex"})
    results = {name: min(t) for name, t in times.items()}
    bound = results[bound_name]
    print(f"confusion matrices, {N} x {H} x {W}, {C} classes, 1 thread ({PIXELS / 1e6:.1f} Mpixel), "
          f"{REPEATS} interleaved rounds, Mpixel/s min-time / median-time; load {os.getloadavg()[0]:.1f}:")
    u8_names = (u8_bound_name, "  same, uint8 labels (evaluation's path)")
    for name, t in times.items():
        own = results[u8_bound_name] if name in u8_names else bound  # each against a read of its own inputs
        print(f"  {name:46s} {PIXELS / min(t) / 1e6:8.0f} / {PIXELS / float(np.median(t)) / 1e6:6.0f} Mpixel/s  "
              f"({own / min(t):5.1%} of {'its' if name in u8_names else 'the'} memory bound)")
    ours = min(results["proveseg confusion_matrix (numpy)"], results["proveseg confusion_matrix_torch (CPU)"])
    share = bound / ours
    print(f"  speed-up: {results['per-image torch.histc (MMSegmentation)'] / ours:.1f}x histc (target >= 8x), "
          f"{results['torchmetrics MulticlassJaccardIndex'] / ours:.1f}x torchmetrics (target >= 5x); "
          f"{share:.0%} of the memory bound (target >= 50%: {'met' if share >= 0.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
