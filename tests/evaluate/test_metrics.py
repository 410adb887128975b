"""Metric parity with independent implementations, exclusion and ignore rules, bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from proveseg.evaluate.confusion import confusion_matrix, confusion_matrix_torch, per_image_confusion
from proveseg.evaluate.metrics import (
    bootstrap_miou,
    class_accuracy,
    iou_per_class,
    mean_iou,
    overall_accuracy,
    paired_bootstrap_diff,
)

C = 19


def _straightforward(label: np.ndarray, pred: np.ndarray, c: int) -> tuple[list[float], float]:
    """Per-class IoU by explicit set counting, and pixel accuracy, written independently."""
    valid = label != 255
    ious = []
    for k in range(c):
        inter = np.sum((label == k) & (pred == k) & valid)
        union = np.sum(((label == k) | (pred == k)) & valid)
        ious.append(inter / union if union else float("nan"))
    return ious, float(np.sum((label == pred) & valid) / valid.sum())


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, C, (3, 40, 60)).astype(np.uint8)
    label[:, :5] = 255
    pred = rng.integers(0, C, (3, 40, 60)).astype(np.uint8)
    return label, pred


def _structured_case() -> tuple[np.ndarray, np.ndarray]:
    """Blocks of a few classes, a prediction shifted by some pixels, classes 10..18 absent."""
    label = np.zeros((2, 64, 64), np.uint8)
    label[:, :32] = 1
    label[:, 32:, 20:] = 2
    label[:, 50:, 50:] = 255
    pred = np.roll(label, 3, axis=2).copy()
    pred[pred == 255] = 3
    return label, pred


@pytest.mark.parametrize("case", ["random", "structured"])
def test_parity_with_a_straightforward_implementation_and_torchmetrics(case: str) -> None:
    label, pred = _random_case(0) if case == "random" else _structured_case()
    conf = confusion_matrix(label, pred, C)
    ours = iou_per_class(conf)
    expected, acc = _straightforward(label, pred, C)
    np.testing.assert_allclose(ours, expected, equal_nan=True)
    assert overall_accuracy(conf) == pytest.approx(acc)
    assert mean_iou(conf) == pytest.approx(np.nanmean(expected))
    tm = MulticlassJaccardIndex(num_classes=C, average=None, ignore_index=255, validate_args=False)
    theirs = tm(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(label.astype(np.int64))).numpy()
    defined = ~np.isnan(ours)
    np.testing.assert_allclose(ours[defined], theirs[defined], rtol=1e-6)


def test_a_class_without_label_or_prediction_is_excluded_not_zero() -> None:
    label, pred = _structured_case()
    conf = confusion_matrix(label, pred, C)
    iou = iou_per_class(conf)
    assert np.isnan(iou[10:]).all()
    assert iou[3] == 0.0  # predicted but never labeled: counts, as zero
    assert mean_iou(conf) == pytest.approx(np.mean(iou[:4]))
    assert np.isnan(class_accuracy(conf)[3])


def test_ignore_pixels_never_count() -> None:
    label, pred = _random_case(1)
    other = pred.copy()
    other[label == 255] = (other[label == 255] + 7) % C
    assert np.array_equal(confusion_matrix(label, pred, C), confusion_matrix(label, other, C))
    assert confusion_matrix(label, pred, C).sum() == (label != 255).sum()


def test_labels_outside_the_class_set_raise() -> None:
    label, pred = _random_case(2)
    label[0, 0, 0] = 40
    with pytest.raises(ValueError, match=r"labels outside 0\.\.18"):
        confusion_matrix(label, pred, C)
    with pytest.raises(ValueError, match="labels outside"):
        confusion_matrix_torch(torch.from_numpy(label), torch.from_numpy(pred), C)


def test_torch_and_numpy_agree_and_per_image_sums() -> None:
    label, pred = _random_case(3)
    conf = confusion_matrix(label, pred, C)
    assert np.array_equal(confusion_matrix_torch(torch.from_numpy(label), torch.from_numpy(pred), C).numpy(), conf)
    assert np.array_equal(per_image_confusion(label, pred, C).sum(axis=0), conf)


def _noisy_images(n: int, seed: int, error: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 5, (n, 16, 16)).astype(np.uint8)
    pred = np.where(rng.random(label.shape) < error, rng.integers(0, 5, label.shape), label).astype(np.uint8)
    return per_image_confusion(label, pred, 5)


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_images() -> None:
    small, large = _noisy_images(20, 0, 0.4), _noisy_images(400, 0, 0.4)
    lo_s, hi_s = bootstrap_miou(small, n_boot=500)
    lo_l, hi_l = bootstrap_miou(large, n_boot=500)
    assert lo_s <= mean_iou(small.sum(0)) <= hi_s
    assert lo_l <= mean_iou(large.sum(0)) <= hi_l
    assert (hi_l - lo_l) < 0.5 * (hi_s - lo_s)


def test_paired_bootstrap_difference() -> None:
    a = _noisy_images(100, 1, 0.2)
    assert paired_bootstrap_diff(a, a, n_boot=200) == (0.0, 0.0, 0.0)
    rng = np.random.default_rng(1)
    label = rng.integers(0, 5, (100, 16, 16)).astype(np.uint8)
    better = per_image_confusion(label, np.where(rng.random(label.shape) < 0.1, 0, label).astype(np.uint8), 5)
    worse = per_image_confusion(label, np.where(rng.random(label.shape) < 0.3, 0, label).astype(np.uint8), 5)
    point, lo, hi = paired_bootstrap_diff(better, worse, n_boot=300)
    assert 0 < lo <= point <= hi
    with pytest.raises(ValueError, match="same test images"):
        paired_bootstrap_diff(better, worse[:10])
