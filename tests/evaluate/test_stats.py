"""Seed-aware intervals and corrected significance, on synthetic per-image confusion matrices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from proveseg.evaluate.metrics import (
    PairedRuns,
    hierarchical_miou,
    hierarchical_paired_gain,
    holm_adjust,
    mean_iou,
    paired_bootstrap_gain,
)
from proveseg.study.formatting import leaderboard_caption, leaderboard_markdown
from proveseg.study.leaderboard import build_leaderboard
from tests.study.test_leaderboard import fake_run

C = 5


def _run(err: float, rng: np.random.Generator, n_images: int = 60, px: int = 400, jitter: float = 0.02) -> np.ndarray:
    """Per-image confusion matrices of a run that mislabels a fraction ``err`` of each class (± per-image jitter)."""
    out = np.zeros((n_images, C, C), np.int64)
    for i in range(n_images):
        labels = rng.multinomial(px, np.full(C, 1 / C))
        wrong = rng.binomial(labels, np.clip(err + rng.normal(0, jitter), 0, 1))
        for c in range(C):
            out[i, c, c], out[i, c, (c + 1) % C] = labels[c] - wrong[c], wrong[c]
    return out


def test_with_large_seed_variance_the_interval_covers_the_seed_spread_and_the_image_only_one_does_not() -> None:
    offsets = [-0.06, -0.02, 0.0, 0.03, 0.07]  # the strategy's error moves a lot from one training seed to the next
    pairs = [PairedRuns(("d", "m"), _run(0.25 + o, np.random.default_rng([1, s]), n_images=200, jitter=0.005),
                        _run(0.30, np.random.default_rng([2, s]), n_images=200, jitter=0.005))
             for s, o in enumerate(offsets)]
    per_seed = np.array([float(mean_iou(p.a.sum(0))) - float(mean_iou(p.b.sum(0))) for p in pairs])
    mean, se = per_seed.mean(), per_seed.std(ddof=1) / np.sqrt(len(per_seed))
    seed_aware = hierarchical_paired_gain(pairs, n_boot=2000, seed=0)
    _, old_lo, old_hi = paired_bootstrap_gain([(p.a, p.b) for p in pairs], n_boot=2000, seed=0)
    assert seed_aware.seed_aware and seed_aware.gain == pytest.approx(mean)
    assert seed_aware.low <= mean - se and mean + se <= seed_aware.high  # covers the seed-to-seed spread
    assert not (old_lo <= mean - se and mean + se <= old_hi)  # the image-only interval does not
    assert (seed_aware.high - seed_aware.low) > 3 * (old_hi - old_lo)


def test_twenty_null_strategies_one_looks_significant_unadjusted_none_after_holm() -> None:
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 0.02, 3)
    base = [_run(0.3 + seed_effect[s] + rng.normal(0, 0.015), np.random.default_rng([0, s])) for s in range(3)]
    p_values = []
    for k in range(20):  # every strategy is the baseline's recipe again: no real effect
        pairs = [PairedRuns(("d", "m"), _run(0.3 + seed_effect[s] + rng.normal(0, 0.015),
                                             np.random.default_rng([0, s, k + 1])), base[s]) for s in range(3)]
        p_values.append(hierarchical_paired_gain(pairs, n_boot=500, seed=0).p_value)
    assert sum(p < 0.05 for p in p_values) >= 1  # by chance alone
    assert all(p >= 0.05 for p in holm_adjust(p_values))


def test_holm_and_the_p_value_agree_with_the_interval() -> None:
    assert holm_adjust([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    pairs = [PairedRuns(("d", "m"), _run(0.2, np.random.default_rng([3, s])), _run(0.3, np.random.default_rng([4, s])))
             for s in range(3)]
    est = hierarchical_paired_gain(pairs, n_boot=500)
    assert est.low > 0 and est.p_value < 0.05 and est.p_improve == 1.0
    mean, lo, hi = hierarchical_miou([(("d", "m"), p.a) for p in pairs], n_boot=500)
    assert lo < mean < hi


def test_the_leaderboard_states_what_its_intervals_cover(tmp_path: Path) -> None:
    for seed in (0, 1, 2):
        fake_run(tmp_path / "three", "stage1", "baseline", seed, 0.30)
        fake_run(tmp_path / "three", "stage1", "gen_good", seed, 0.10)
    fake_run(tmp_path / "one", "stage1", "baseline", 0, 0.30)
    fake_run(tmp_path / "one", "stage1", "gen_good", 0, 0.10)
    three = build_leaderboard(tmp_path / "three", "stage1", n_boot=200, audit=False)
    one = build_leaderboard(tmp_path / "one", "stage1", n_boot=200, audit=False)
    good = next(r for r in three["rows"] if r["strategy"] == "gen_good")
    assert three["interval"] == "seeds and test images" and one["interval"] == "test images only"
    assert good["significant"] and good["p_holm"] == good["p_value"] < 0.05 and good["p_improve"] == 1.0
    assert set(good["per_domain_gain"]) == {"clear_day", "fog", "night"}
    assert all(v["ci95"][0] > 0 for v in good["per_domain_gain"].values())
    assert "over training seeds and test images" in leaderboard_caption(three)
    assert "seed-to-seed spread NOT covered" in leaderboard_caption(one)
    assert leaderboard_caption({"rows": [], "interval": None}).startswith("no run ranked")  # no "mixed" interval
    assert "* = significant at 5% after Holm over 1 strategies" in leaderboard_markdown(three)


def test_copies_of_one_seed_do_not_narrow_the_interval() -> None:
    """Every seed is tested on the same images: repeating a pair adds no test-image information."""
    pair = PairedRuns(("d", "m"), _run(0.2, np.random.default_rng(5)), _run(0.3, np.random.default_rng(6)))
    one = hierarchical_paired_gain([pair], n_boot=400)
    five = hierarchical_paired_gain([pair] * 5, n_boot=400)
    assert five.high - five.low == pytest.approx(one.high - one.low, rel=0.15)


def test_the_seed_level_test_holds_its_level_and_finds_a_real_effect() -> None:
    """Null strategies (seed noise only) are 'significant' about 5% of the time; a real effect survives Holm."""
    rng = np.random.default_rng(1)
    base = [_run(0.3, np.random.default_rng([9, s]), n_images=20) for s in range(3)]
    p_null = []
    for k in range(60):
        pairs = [PairedRuns(("d", "m"), _run(0.3 + rng.normal(0, 0.02), np.random.default_rng([9, s, k + 1]),
                                              n_images=20), base[s]) for s in range(3)]
        p_null.append(hierarchical_paired_gain(pairs, n_boot=100, seed=k).p_value)
    assert np.mean(np.array(p_null) < 0.05) <= 0.12  # a nominal 5% level, with room for 60 draws
    real = [PairedRuns(("d", "m"), _run(0.15, np.random.default_rng([8, s]), n_images=20), base[s]) for s in range(3)]
    p_real = hierarchical_paired_gain(real, n_boot=100).p_value
    assert holm_adjust([p_real, *p_null[:19]])[0] < 0.05
