"""Metrics from confusion matrices (../shared/DESIGN.md section 4) and bootstrap intervals.

IoU_c = TP / (TP + FP + FN); a class with no label and no predicted pixel is excluded (NaN), as
in the Cityscapes and MMSegmentation evaluators. mIoU is the mean over the remaining classes and
aAcc is correct / labeled pixels. Intervals resample test images (their confusion matrices).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SCALAR_METRICS",
    "GainEstimate",
    "PairedRuns",
    "bootstrap_miou",
    "class_accuracy",
    "domain_summary",
    "hierarchical_paired_gain",
    "holm_adjust",
    "iou_per_class",
    "mean_class_accuracy",
    "mean_iou",
    "overall_accuracy",
    "paired_bootstrap_diff",
    "paired_bootstrap_gain",
    "scalar_metrics",
    "summarize",
]


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


@dataclass(frozen=True)
class PairedRuns:
    """Two runs of one cell tested on the same images: ``a`` (a strategy) and ``b`` (its reference).

    ``group`` is what the cell shares with other cells but its seed (dataset, model): seeds are
    resampled within a group. ``test_set`` names the test images (default: the group's dataset):
    every pair on the same test set gets the same image resample in a bootstrap replicate, because
    every seed was tested on those same images.
    """

    group: tuple[object, ...]
    a: np.ndarray  # (N, C, C) per-image confusion matrices
    b: np.ndarray
    test_set: object = None

    @property
    def images_key(self) -> tuple[object, int]:
        return (self.group[0] if self.test_set is None else self.test_set), len(self.a)


@dataclass(frozen=True)
class GainEstimate:
    """A mean paired gain with its interval, p-value and probability of improvement."""

    gain: float
    low: float
    high: float
    p_value: float  # seed-aware: paired t-test over the cells' gains; else from the image bootstrap
    p_improve: float  # share of pairs whose strategy run beats its reference run (ties count half)
    seed_aware: bool  # some group had several seeds, so interval and p-value cover seed-to-seed spread
    n_pairs: int


def _shared_counts(keys: Sequence[tuple[object, int]], n_boot: int, rng: np.random.Generator,
                   ) -> dict[tuple[object, int], np.ndarray]:
    """One image resample per test set and replicate, shared by every run tested on it."""
    return {key: _resample_counts_rng(key[1], n_boot, rng) for key in dict.fromkeys(keys)}


def hierarchical_paired_gain(pairs: Sequence[PairedRuns], n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                             ) -> GainEstimate:
    """Mean over pairs of mIoU(a) - mIoU(b), with a hierarchical paired bootstrap.

    Each replicate draws one resample of each test set's images (the same for every seed and both
    runs of a pair, since all were tested on those images) and, within every group, its seeds with
    replacement. With one seed per group this is the image-only paired bootstrap, and the p-value
    comes from it; with several seeds the p-value is a paired t-test over the cells' gains (degrees
    of freedom: cells - 1), since a bootstrap over three seeds is far too optimistic.
    """
    if not pairs:
        raise ValueError("paired bootstrap needs at least one pair of runs")
    rng = np.random.default_rng(seed)
    for pair in pairs:
        if pair.a.shape != pair.b.shape:
            raise ValueError(f"paired runs need the same test images: {pair.a.shape} vs {pair.b.shape}")
    counts = _shared_counts([p.images_key for p in pairs], n_boot, rng)
    deltas = np.stack([_image_boot(p.a, counts[p.images_key]) - _image_boot(p.b, counts[p.images_key])
                       for p in pairs])
    points = np.array([float(mean_iou(p.a.sum(axis=0))) - float(mean_iou(p.b.sum(axis=0))) for p in pairs])
    boot_gain = _resample_seeds(deltas, [pair.group for pair in pairs], rng)
    lo, hi = np.nanpercentile(boot_gain, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    seed_aware = len({pair.group for pair in pairs}) < len(pairs)
    if seed_aware:
        p_value = _paired_t(points)
    else:
        below, above = (np.sum(boot_gain <= 0) + 1) / (n_boot + 1), (np.sum(boot_gain >= 0) + 1) / (n_boot + 1)
        p_value = float(min(1.0, 2 * min(below, above)))
    p_improve = float(np.mean(points > 0) + 0.5 * np.mean(points == 0))
    return GainEstimate(float(np.mean(points)), float(lo), float(hi), p_value, p_improve, seed_aware, len(pairs))


def _paired_t(gains: np.ndarray) -> float:
    """Two-sided p of a one-sample t-test of the cells' gains against 0 (scipy.stats)."""
    from scipy import stats

    gains = gains[np.isfinite(gains)]
    if len(gains) < 2:
        return 1.0
    if np.ptp(gains) == 0:  # no spread: exact (0 when every cell gains the same nonzero amount)
        return 1.0 if gains[0] == 0 else 0.0
    return float(stats.ttest_1samp(gains, 0.0).pvalue)


def _image_boot(per_image: np.ndarray, counts: np.ndarray) -> np.ndarray:
    n = len(per_image)
    return np.asarray(mean_iou((counts @ per_image.reshape(n, -1).astype(np.float64)).reshape(len(counts),
                                                                                             *per_image.shape[1:])))


def _resample_seeds(values: np.ndarray, groups: Sequence[tuple[object, ...]], rng: np.random.Generator) -> np.ndarray:
    """Per replicate b: the mean of the runs drawn, within each group, with replacement (seeds).

    ``values`` is (runs, n_boot): each run's statistic under replicate b's image resample.
    """
    n_boot = values.shape[1]
    members: dict[tuple[object, ...], list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    columns = np.arange(n_boot)[:, None]
    drawn = []
    for idx_list in members.values():
        idx = np.asarray(idx_list)
        picks = idx[rng.integers(0, len(idx), (n_boot, len(idx)))] if len(idx) > 1 else np.repeat(idx[None], n_boot, 0)
        drawn.append(values[picks, columns])
    with np.errstate(all="ignore"):
        return np.nanmean(np.concatenate(drawn, axis=1), axis=1)


def hierarchical_miou(runs: Sequence[tuple[tuple[object, ...], np.ndarray]], n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """Mean mIoU over runs (group, per-image confusions) with the same seed-then-image bootstrap: (mean, low, high).

    Runs of one group's dataset share each replicate's image resample, as in :func:`hierarchical_paired_gain`.
    """
    rng = np.random.default_rng(seed)
    keys = [(g[0], len(x)) for g, x in runs]
    counts = _shared_counts(keys, n_boot, rng)
    values = np.stack([_image_boot(x, counts[k]) for (_, x), k in zip(runs, keys, strict=True)])
    boot = _resample_seeds(values, [g for g, _ in runs], rng)
    lo, hi = np.nanpercentile(boot, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(np.mean([float(mean_iou(x.sum(axis=0))) for _, x in runs])), float(lo), float(hi)


def _resample_counts_rng(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: family-wise error control over all the comparisons made."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def paired_bootstrap_gain(pairs: Sequence[tuple[np.ndarray, np.ndarray]], n_boot: int = 1000, seed: int = 0,
                          level: float = 0.95) -> tuple[float, float, float]:
    """Mean over pairs of mIoU(a) - mIoU(b), each pair on the same test images, resampling images only."""
    est = hierarchical_paired_gain([PairedRuns((i,), a, b, test_set=i) for i, (a, b) in enumerate(pairs)], n_boot,
                                   seed, level)
    return est.gain, est.low, est.high


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
