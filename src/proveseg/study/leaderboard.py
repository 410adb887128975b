"""Leaderboard over a results root: only runs whose records prove their data mix are ranked.

A run counts when its status is ``done``, it has ``metrics.json``, ``confusion.npz`` and a
``composition.json`` that matches its request, and the consumed share of generated (or noise)
samples equals the requested share (zero for baseline and ``std_*``). Everything else is listed as
INVALID with its reason. Strategies are compared on the (dataset, model, seed) cells that all of
them and the baseline have; the gain over baseline gets a 95% paired-bootstrap interval over test
images (the same resample for both runs of a cell, averaged over cells).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from proveseg.data.records import SOURCE_DOMAIN
from proveseg.evaluate.metrics import mean_iou
from proveseg.evaluate.runner import read_confusion
from proveseg.study.matrix import RunKey, strategy_type

__all__ = ["RunRecord", "build_leaderboard", "collect_runs"]


@dataclass(frozen=True)
class RunRecord(RunKey):
    """A run found under a results root: its metrics when it proves its mix, else why it is invalid."""

    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    invalid: str | None = None

    @property
    def label(self) -> str:
        return self.strategy

    @property
    def cell(self) -> tuple[str, str, int]:
        return self.dataset, self.model, self.seed


def _check(run_dir: Path, strategy: str) -> str | None:
    status_file = run_dir / "status"
    if not status_file.exists():
        return "not started"
    state, _, reason = status_file.read_text(encoding="utf-8").partition("\n")
    if state.strip() != "done":
        return f"status {state.strip()}: {reason.strip()}" if reason.strip() else f"status {state.strip()}"
    for name in ("metrics.json", "composition.json", "confusion.npz"):
        if not (run_dir / name).exists():
            return f"no {name}"
    comp = json.loads((run_dir / "composition.json").read_text(encoding="utf-8"))
    if not comp.get("matches_request"):
        return "consumed mix differs from the request: " + "; ".join(comp.get("problems", [])[:2])
    kinds = comp["consumed"]["per_kind"]
    total = sum(kinds.values())
    if total == 0:
        return "consumed no samples"
    kind = strategy_type(strategy)
    extra = kinds.get("generated", 0) + kinds.get("noise", 0)
    if kind in ("Base", "Std"):
        return None if extra == 0 else f"{strategy} consumed {extra} generated/noise samples"
    wanted_kind = "noise" if kind == "Noise" else "generated"
    requested = 1.0 - float(comp["requested"]["real_gen_ratio"])
    got = kinds.get(wanted_kind, 0) / total
    if abs(got - requested) > 1.0 / total or (requested > 0 and kinds.get(wanted_kind, 0) == 0):
        return f"requested {requested:.1%} {wanted_kind}, consumed {got:.1%} ({kinds.get(wanted_kind, 0)} of {total})"
    if kind == "Gen":
        source = strategy.removeprefix("gen_")
        if requested > 0 and comp["consumed"]["per_source"].get(source, 0) == 0:
            return f"no sample of generator {source!r} consumed"
    return None


def collect_runs(results_root: str | Path, stage: str | None = None) -> list[RunRecord]:
    """Every run directory under ``<root>/<stage>/<strategy>/<dataset>/<model>_ratioXpXX_sN``."""
    root = Path(results_root)
    runs = []
    for run_dir in sorted(root.glob("*/*/*/*")):
        key = RunKey.from_run_dir(run_dir)
        if key is None or not run_dir.is_dir() or (stage is not None and key.stage != stage):
            continue
        invalid = _check(run_dir, key.strategy)
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")) if invalid is None else {}
        runs.append(RunRecord(**asdict(key), run_dir=run_dir, metrics=metrics, invalid=invalid))
    return runs


def _paired_gain(runs: list[RunRecord], base: dict[tuple[str, str, int], RunRecord], cells: list,
                 n_boot: int, seed: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    diffs, points = [], []
    for run in runs:
        if run.cell not in cells:
            continue
        a = read_confusion(run.run_dir / "confusion.npz")
        b = read_confusion(base[run.cell].run_dir / "confusion.npz")
        if a.images != b.images:
            raise ValueError(f"{run.run_dir} and {base[run.cell].run_dir} were tested on different images")
        n = len(a.per_image)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
        boot = [np.asarray(mean_iou((counts @ x.per_image.reshape(n, -1)).reshape(n_boot, *x.per_image.shape[1:])))
                for x in (a, b)]
        diffs.append(boot[0] - boot[1])
        points.append(float(mean_iou(a.per_image.sum(0))) - float(mean_iou(b.per_image.sum(0))))
    mean_diff = np.mean(diffs, axis=0)
    lo, hi = np.percentile(mean_diff, [2.5, 97.5])
    return float(np.mean(points)), float(lo), float(hi)


def build_leaderboard(results_root: str | Path, stage: str | None = None, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """The ``leaderboard --format json`` document (../shared/DESIGN.md section 7)."""
    runs = collect_runs(results_root, stage)
    invalid = [{"run_dir": str(r.run_dir), "reason": r.invalid} for r in runs if r.invalid]
    valid = [r for r in runs if r.invalid is None]
    by_label: dict[str, list[RunRecord]] = defaultdict(list)
    for r in valid:
        by_label[r.label].append(r)
    warnings: list[str] = []
    ratios_per_strategy = {s: sorted({r.ratio for r in rs}) for s, rs in by_label.items()}
    for s, ratios in ratios_per_strategy.items():
        if len(ratios) > 1 and stage != "ratio-ablation":
            warnings.append(f"{s} has runs at several ratios {ratios}: their cells are averaged; "
                            "use --stage ratio-ablation for the ratio curve")
    cells = sorted(set.intersection(*(set(r.cell for r in rs) for rs in by_label.values()))) if by_label else []
    base = {r.cell: r for r in by_label.get("baseline", [])}
    if by_label and "baseline" not in by_label:
        warnings.append("no valid baseline run: gains cannot be computed")
    rows = []
    for label, rs in by_label.items():
        matched = [r for r in rs if r.cell in cells]
        if not matched:
            continue
        domains = sorted({d for r in matched for d in r.metrics["per_domain"]})
        per_domain = {d: float(np.mean([r.metrics["per_domain"][d]["mIoU"] for r in matched
                                        if d in r.metrics["per_domain"]])) for d in domains}
        adverse = [v for d, v in per_domain.items() if d != SOURCE_DOMAIN]
        row: dict[str, Any] = {
            "strategy": label, "type": strategy_type(label),
            "mIoU": float(np.mean([r.metrics["mIoU"] for r in matched])),
            "gain": None, "gain_ci95": None, "per_domain": per_domain,
            "adverse_mIoU": float(np.mean(adverse)) if adverse else None, "n_runs": len(matched),
            "ratios": sorted({r.ratio for r in matched}),
        }
        if base:
            if label == "baseline":
                row["gain"], row["gain_ci95"] = 0.0, [0.0, 0.0]
            else:
                point, lo, hi = _paired_gain(matched, base, cells, n_boot, seed)
                row["gain"], row["gain_ci95"] = point, [lo, hi]
        rows.append(row)
    rows.sort(key=lambda r: -r["mIoU"])
    for i, row in enumerate(rows, start=1):
        row["rank"] = i
    gen_rows = [r for r in rows if r["type"] == "Gen"]
    spread = (max(r["mIoU"] for r in gen_rows) - min(r["mIoU"] for r in gen_rows)) if len(gen_rows) > 1 else None
    base_row = next((r for r in rows if r["strategy"] == "baseline"), None)
    if base_row is not None and len(gen_rows) >= 2:
        inside = [r for r in gen_rows if r["gain_ci95"] and r["gain_ci95"][0] <= 0 <= r["gain_ci95"][1]]
        widths = [r["gain_ci95"][1] - r["gain_ci95"][0] for r in gen_rows if r["gain_ci95"]]
        if len(inside) == len(gen_rows) and spread is not None and widths and spread < float(np.median(widths)):
            names = ", ".join(sorted(r["strategy"] for r in gen_rows))
            warnings.append(f"generated strategies {names} cluster within "
                            "the noise of the baseline (every gain interval contains 0 and they differ by less than "
                            "an interval width): check that their generated data was really used")
    doc: dict[str, Any] = {"stage": stage, "rows": rows, "invalid": invalid, "warnings": warnings,
                           "generated_spread": spread, "cells": [list(c) for c in cells]}
    if stage == "noise-ablation":
        doc["noise_ablation"] = _noise_outcome(rows, by_label, cells, n_boot, seed)
    if stage == "ratio-ablation":
        doc["ratio_ablation"] = _ratio_table(valid)
    return doc


def _noise_outcome(rows: list[dict[str, Any]], by_label: dict[str, list[RunRecord]], cells: list, n_boot: int,
                   seed: int) -> dict[str, Any]:
    """Which of the four noise-ablation outcomes the intervals support."""
    noise = next((r for r in rows if r["type"] == "Noise"), None)
    gen = next((r for r in rows if r["type"] == "Gen"), None)
    if noise is None or gen is None or noise["gain_ci95"] is None or gen["gain_ci95"] is None:
        return {"outcome": "incomplete", "detail": "needs baseline, the reference generator and gen_random_noise"}
    gen_vs_noise = _paired_gain(by_label[gen["strategy"]], {r.cell: r for r in by_label[noise["strategy"]]}, cells,
                                n_boot, seed)

    def sign(ci: list[float] | tuple[float, ...]) -> int:
        return 1 if ci[0] > 0 else (-1 if ci[1] < 0 else 0)

    n, g, gn = sign(noise["gain_ci95"]), sign(gen["gain_ci95"]), sign(gen_vs_noise[1:])
    if n < 0:
        outcome = "noise < baseline"
    elif n == 0 and g > 0 and gn > 0:
        outcome = "noise ≈ baseline < generator"
    elif n > 0 and g > 0 and gn == 0:
        outcome = "noise ≈ generator > baseline"
    elif n > 0 and gn > 0:
        outcome = "baseline < noise < generator"
    else:
        outcome = "inconclusive"
    return {"outcome": outcome, "noise_gain_ci95": noise["gain_ci95"], "generator_gain_ci95": gen["gain_ci95"],
            "generator_minus_noise": {"gain": gen_vs_noise[0], "ci95": list(gen_vs_noise[1:])},
            "generator": gen["strategy"]}


def _ratio_table(valid: list[RunRecord]) -> dict[str, list[dict[str, Any]]]:
    table: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for strategy in sorted({r.strategy for r in valid}):
        for ratio in sorted({r.ratio for r in valid if r.strategy == strategy}, reverse=True):
            rs = [r for r in valid if r.strategy == strategy and r.ratio == ratio]
            table[strategy].append({"ratio": ratio, "mIoU": float(np.mean([r.metrics["mIoU"] for r in rs])),
                                    "n_runs": len(rs)})
    return dict(table)
