"""Metrics from confusion matrices (../shared/DESIGN.md section 4) and bootstrap intervals.

IoU_c = TP / (TP + FP + FN); a class with no label and no predicted pixel is excluded (NaN), as
in the Cityscapes and MMSegmentation evaluators. mIoU is the mean over the remaining classes and
aAcc is correct / labeled pixels. Intervals resample test images (their confusion matrices).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = ["SCALAR_METRICS", "bootstrap_miou", "class_accuracy", "domain_summary", "iou_per_class",
           "mean_class_accuracy", "mean_iou", "overall_accuracy", "paired_bootstrap_diff", "paired_bootstrap_gain",
           "scalar_metrics", "summarize"]


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU per class, NaN where the class has neither label nor prediction; works on (..., C, C)."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    union = conf.sum(axis=-1) + conf.sum(axis=-2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(conf: np.ndarray) -> np.ndarray | float:
    """Mean IoU over the classes that are present; works on (..., C, C)."""
    iou = iou_per_class(conf)
    present = ~np.isnan(iou)
    with np.errstate(invalid="ignore"):
        out = np.where(present, iou, 0.0).sum(axis=-1) / present.sum(axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def overall_accuracy(conf: np.ndarray) -> float:
    """Correct / labeled pixels."""
    total = conf.sum()
    return float(np.trace(conf) / total) if total else float("nan")


def class_accuracy(conf: np.ndarray) -> np.ndarray:
    """Recall per class (NaN for classes without labeled pixels)."""
    conf = np.asarray(conf, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(conf.sum(axis=1) > 0, np.diag(conf) / conf.sum(axis=1), np.nan)


def mean_class_accuracy(conf: np.ndarray) -> float:
    """Mean recall over the classes that have labeled pixels."""
    acc = class_accuracy(conf)
    return float(np.nanmean(acc)) if not np.isnan(acc).all() else float("nan")


# Every scalar metric of a confusion matrix, by name: metrics.json (overall and per domain), validation logs,
# ``train.best_metric`` and the evaluate table all read this dict. A new metric is one function and one line here.
SCALAR_METRICS: dict[str, Callable[[np.ndarray], float]] = {
    "mIoU": lambda conf: float(mean_iou(conf)),
    "aAcc": overall_accuracy,
    "mAcc": mean_class_accuracy,
}


def scalar_metrics(conf: np.ndarray) -> dict[str, float]:
    """Every metric of :data:`SCALAR_METRICS` on one (C, C) confusion matrix."""
    return {name: fn(conf) for name, fn in SCALAR_METRICS.items()}


def _resample_counts(n_images: int, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=n_boot).astype(np.float64)


def bootstrap_miou(per_image: np.ndarray, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mIoU over test images resampled with replacement."""
    n = len(per_image)
    flat = per_image.reshape(n, -1).astype(np.float64)
    boot = (_resample_counts(n, n_boot, seed) @ flat).reshape(n_boot, *per_image.shape[1:])
    values = np.asarray(mean_iou(boot))
    lo, hi = np.nanpercentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def paired_bootstrap_gain(pairs: Sequence[tuple[np.ndarray, np.ndarray]], n_boot: int = 1000, seed: int = 0,
                          level: float = 0.95) -> tuple[float, float, float]:
    """Mean over pairs of mIoU(a) - mIoU(b), each pair on the same test images: (point, low, high).

    Every pair gets its own image resample, the same for both of its runs; the interval is the
    percentile interval of the mean difference. This is the one bootstrap the metrics, the
    leaderboard and the report use.
    """
    if not pairs:
        raise ValueError("paired bootstrap needs at least one pair of runs")
    rng = np.random.default_rng(seed)
    deltas, points = [], []
    for a, b in pairs:
        if a.shape != b.shape:
            raise ValueError(f"paired runs need the same test images: {a.shape} vs {b.shape}")
        n = len(a)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
        boot = [np.asarray(mean_iou((counts @ x.reshape(n, -1).astype(np.float64)).reshape(n_boot, *x.shape[1:])))
                for x in (a, b)]
        deltas.append(boot[0] - boot[1])
        points.append(float(mean_iou(a.sum(axis=0))) - float(mean_iou(b.sum(axis=0))))
    lo, hi = np.nanpercentile(np.mean(deltas, axis=0), [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(np.mean(points)), float(lo), float(hi)


def paired_bootstrap_diff(per_image_a: np.ndarray, per_image_b: np.ndarray, n_boot: int = 1000, seed: int = 0,
                          level: float = 0.95) -> tuple[float, float, float]:
    """mIoU(a) - mIoU(b) on the same test images: (point, low, high), the same resample for both."""
    return paired_bootstrap_gain([(per_image_a, per_image_b)], n_boot, seed, level)


def domain_summary(per_domain: Mapping[str, np.ndarray]) -> dict[str, object]:
    """Overall and per-domain numbers from one summed confusion matrix per domain (validation's metrics)."""
    total = np.sum(list(per_domain.values()), axis=0)
    by_domain = {d: float(mean_iou(conf)) for d, conf in sorted(per_domain.items())}
    return {**scalar_metrics(total), "per_domain": by_domain,
            "domain_mean_mIoU": float(np.mean(list(by_domain.values())))}


def summarize(per_image: np.ndarray, domains: Sequence[str], class_names: Sequence[str],
              n_boot: int = 1000, seed: int = 0) -> dict[str, object]:
    """The ``metrics.json`` numbers (fractions in [0, 1]; tables show percent)."""
    domains_arr = np.asarray(domains)
    total = per_image.sum(axis=0)
    iou = iou_per_class(total)
    per_domain = {}
    for d in sorted(set(domains_arr.tolist())):
        conf = per_image[domains_arr == d].sum(axis=0)
        n_images = int((domains_arr == d).sum())
        per_domain[d] = {**scalar_metrics(conf), "n_images": n_images}
    lo, hi = bootstrap_miou(per_image, n_boot, seed)
    return {
        **scalar_metrics(total),
        "per_class": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou, strict=True)},
        "per_class_acc": {name: (None if np.isnan(v) else float(v))
                          for name, v in zip(class_names, class_accuracy(total), strict=True)},
        "per_domain": per_domain,
        "domain_mean_mIoU": float(np.mean([v["mIoU"] for v in per_domain.values()])),
        "n_images": len(per_image),
        "ci95": [lo, hi],
    }
