"""Does generator quality predict utility? Each generator's image statistics and consistency beside its gain.

For every generated-data strategy on the leaderboard: its gain over the baseline (with interval),
the model-free layout score and colour shift of ``proveseg stats``, and the semantic and layout
consistency of ``proveseg consistency`` under the baseline's own best checkpoint (the model that
saw no generated image). Then, per quality measure, the Spearman rank correlation with the gain
across generators, with a bootstrap interval over generators (resampled with replacement): with
a handful of generators that interval is wide, and the table says so by showing it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from proveseg.strategies import BASELINE, parse_strategy
from proveseg.study.leaderboard import RunRecord, rank_runs

__all__ = ["MEASURES", "generator_quality", "spearman"]

# measure -> (source, key, what it means); values averaged over target domains
MEASURES = {
    "layout_score": ("stats", "layout_score", "strong edges on the original's label boundaries (1 = as the original)"),
    "colour_shift": ("stats", "mean_abs_diff_pct", "mean |generated - original| pixel difference (%)"),
    "semantic_mIoU": ("consistency", "semantic_mIoU", "baseline model on generated image vs the reused label"),
    "layout_8x8_mIoU": ("consistency", "layout_semantic_8_mIoU", "the same on 8x8-block majority labels"),
}


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for v in np.unique(values):  # ties share their average rank
        tie = values == v
        ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _correlation(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    boots = [spearman(x[i], y[i]) for i in rng.integers(0, len(x), (n_boot, len(x)))]
    lo, hi = np.nanpercentile(boots, [2.5, 97.5]) if np.isfinite(boots).any() else (np.nan, np.nan)
    rho = spearman(x, y)
    return {"rho": None if np.isnan(rho) else rho, "ci95": None if np.isnan(lo) else [float(lo), float(hi)]}


def _measures(run: RunRecord, model: Any, class_set: Any, limit: int, device: str) -> dict[str, float]:
    """The quality measures of the generator a run trained with, on at most ``limit`` evenly spread rows."""
    from proveseg.data.manifest import validate_manifest
    from proveseg.evaluate.consistency import consistency_report
    from proveseg.evaluate.imagestats import generator_stats

    assert run.config is not None
    gen = run.config.data.generated[0]
    report = validate_manifest(gen.manifest, gen.name, datasets=gen.datasets, class_set=class_set, root=gen.root,
                               allow_absolute=gen.allow_absolute)
    records = report.records.with_label_map(gen.name, gen.effective_label_map())
    if limit < len(records):
        records = records.take(np.linspace(0, len(records) - 1, limit).round().astype(np.int64))
    found = {"stats": generator_stats(records).get(gen.name, {}),
             "consistency": consistency_report(model, records, class_set, device=device).get(gen.name, {})}
    return {name: float(np.nanmean([v[key] for v in found[source].values()])) if found[source] else float("nan")
            for name, (source, key, _) in MEASURES.items()}


def generator_quality(results_root: str | Path, stage: str = "stage1", studies: list[Path] | None = None,
                      limit: int = 60, device: str = "cpu", n_boot: int = 1000, seed: int = 0,
                      audit: bool = True) -> dict[str, Any]:
    """The quality-vs-gain table and the rank correlations (see the module docstring)."""
    from proveseg.checkpoint import checkpoint_class_set, load_model

    doc, runs = rank_runs(results_root, stage, n_boot, seed, studies, audit)
    valid = [r for r in runs if r.invalid is None]
    base = next((r for r in valid if r.strategy == BASELINE), None)
    rows = [r for r in doc["rows"] if parse_strategy(r["strategy"]).generated and r["gain"] is not None]
    if base is None or not rows:
        return {"stage": stage, "generators": [], "correlations": {}, "model": None,
                "note": "needs a proven baseline and generated-data strategies with gains"}
    model, state = load_model(base.run_dir / "checkpoints/best.pt", device)
    class_set = checkpoint_class_set(state, base.run_dir / "checkpoints/best.pt")
    table = []
    for row in rows:
        run = next(r for r in valid if r.strategy == row["strategy"] and r.config is not None)
        table.append({"strategy": row["strategy"], "generator": run.config.data.generated[0].name,  # type: ignore[union-attr]
                      "gain": row["gain"], "gain_ci95": row["gain_ci95"],
                      **_measures(run, model, class_set, limit, device)})
    gains = np.array([t["gain"] for t in table])
    correlations = {name: _correlation(np.array([t[name] for t in table]), gains, n_boot, seed) for name in MEASURES}
    return {"stage": stage, "generators": table, "correlations": correlations,
            "model": str(base.run_dir / "checkpoints/best.pt"), "rows_per_generator": limit,
            "measures": {k: v[2] for k, v in MEASURES.items()}}
