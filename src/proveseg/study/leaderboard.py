"""Leaderboard over a results root: only runs whose records prove their data mix are ranked.

A run counts when every check passes, in this order: its ``run.yaml`` validates; its status is
``done`` with ``metrics.json``, ``confusion.npz`` and ``composition.json``; it is the run its study
plans at that path (the studies stored under the results root, or ``--study``) — or, with no
study at hand, its folder name agrees with its ``run.yaml``; a generated-data strategy outside the
ratio ablation consumed generated data at all; its composition matches its request and its
strategy's proof rule; and ``proveseg audit`` re-derives its record (skipped with ``audit=False``,
which the document then says). Runs of one cell must share every setting their strategies do not
vary. Everything else is listed as INVALID with its reason.

Strategies are compared on the (dataset, model, seed) cells that all of them and the baseline
have; the gain over baseline gets a 95% paired-bootstrap interval over test images (the same
resample for both runs of a cell, averaged over cells).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from proveseg.config import ConfigError, DataConfig, RunConfig, load_run_config
from proveseg.configdiff import setting_differences
from proveseg.data.records import SOURCE_DOMAIN
from proveseg.evaluate.metrics import (
    GainEstimate,
    PairedRuns,
    hierarchical_miou,
    hierarchical_paired_gain,
    holm_adjust,
)
from proveseg.evaluate.runner import align_images, read_confusion
from proveseg.strategies import BASELINE, Strategy, parse_strategy
from proveseg.study.audit import audit_run
from proveseg.study.reference import StudyReference
from proveseg.study.runkey import RunKey, run_dir_name

__all__ = ["Checks", "RunRecord", "build_leaderboard", "collect_runs", "rank_runs"]

Cell = tuple[str, str, int]


@dataclass(frozen=True)
class RunRecord(RunKey):
    """A run found under a results root: its metrics when it proves its mix, else why it is invalid."""

    run_dir: Path = Path()
    metrics: dict[str, Any] = field(default_factory=dict)
    invalid: str | None = None
    type: str = "?"
    config: RunConfig | None = None

    @property
    def label(self) -> str:
        return self.strategy


@dataclass(frozen=True)
class Checks:
    """What a run is checked against beyond its own record."""

    reference: StudyReference = field(default_factory=StudyReference)
    audit: bool = True


def _status_problem(run_dir: Path) -> str | None:
    status_file = run_dir / "status"
    if not status_file.exists():
        return "not started"
    state, _, reason = status_file.read_text(encoding="utf-8").partition("\n")
    if state.strip() != "done":
        return f"status {state.strip()}: {reason.strip()}" if reason.strip() else f"status {state.strip()}"
    for name in ("metrics.json", "composition.json", "confusion.npz"):
        if not (run_dir / name).exists():
            return f"no {name}"
    return _unreadable(run_dir)


def _unreadable(run_dir: Path) -> str | None:
    """A record file that does not parse into what it must hold: one INVALID row, never an aborted leaderboard."""
    needs = {"metrics.json": ("mIoU", "per_domain", "per_class"), "composition.json": ("consumed", "requested")}
    for name, keys in needs.items():
        try:
            doc = json.loads((run_dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return f"{name} is unreadable ({type(exc).__name__}: {exc})"
        if not isinstance(doc, dict) or any(k not in doc for k in keys):
            return f"{name} is not a proveseg record (needs an object with {', '.join(keys)})"
        wrong = _wrong_types(name, doc)
        if wrong:
            return f"{name}: {wrong}"
    try:
        read_confusion(run_dir / "confusion.npz")
    except Exception as exc:  # numpy raises many types for a truncated or foreign file
        return f"confusion.npz is unreadable ({type(exc).__name__}: {exc})"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _wrong_types(name: str, doc: dict[str, Any]) -> str | None:
    """The first field of a record that ranking reads and that does not hold what it must."""
    if name == "metrics.json":
        if not _is_number(doc["mIoU"]):
            return f"field mIoU is {doc['mIoU']!r}, not a number"
        if not isinstance(doc["per_domain"], dict):
            return f"field per_domain is a {type(doc['per_domain']).__name__}, not an object"
        for domain, entry in doc["per_domain"].items():
            if not isinstance(entry, dict) or not _is_number(entry.get("mIoU")):
                return f"field per_domain.{domain}.mIoU is missing or not a number"
        per_class = doc["per_class"]
        if not isinstance(per_class, dict) or any(v is not None and not _is_number(v) for v in per_class.values()):
            return "field per_class is not an object of numbers (null for a class absent from the test set)"
        return None
    for key in ("consumed", "requested"):
        if not isinstance(doc[key], dict):
            return f"field {key} is a {type(doc[key]).__name__}, not an object"
    return None


def _requested_data(cfg: RunConfig | None, comp: dict[str, Any]) -> DataConfig:
    """The data request a run is proven against: its ``run.yaml``, else (older runs) its composition record."""
    if cfg is not None:
        return cfg.data
    groups = comp.get("requested", {}).get("groups", {})
    return DataConfig(real_gen_ratio=float(comp["requested"]["real_gen_ratio"]),
                      unlabeled_share=float(groups.get("unlabeled", {}).get("share", 0.0)))


def _identity_problem(run_dir: Path, key: RunKey, cfg: RunConfig | None, checks: Checks) -> str | None:
    """The run against its study, or (no study at hand) its folder name against its run.yaml."""
    if checks.reference:
        return checks.reference.check(run_dir, cfg)
    named = RunKey.from_path(run_dir)
    if named is None:
        return f"folder name {run_dir.name!r} is not <model>_ratio<r>_s<seed> (a copy or a hand-made folder)"
    legacy = replace(key, ratio=float(f"{key.ratio:.2f}"))  # 0.1.0 wrote ratios with two decimals
    if cfg is not None and named not in (key, legacy):
        fields = ("stage", "strategy", "dataset", "model", "ratio", "seed")
        diffs = [f"{f} {getattr(named, f)!r} in the folder name, {getattr(key, f)!r} in run.yaml"
                 for f in fields if getattr(named, f) != getattr(key, f)]
        return "folder name and run.yaml disagree: " + "; ".join(diffs)
    return None


def _proof_problem(run_dir: Path, key: RunKey, cfg: RunConfig | None) -> str | None:
    comp = json.loads((run_dir / "composition.json").read_text(encoding="utf-8"))
    if not comp.get("matches_request"):
        return "consumed mix differs from the request: " + "; ".join(comp.get("problems", [])[:2])
    strategy = parse_strategy(key.strategy)
    data = _requested_data(cfg, comp)
    if (strategy.generated or strategy.noise_control) and key.stage != "ratio-ablation" and data.real_gen_ratio >= 1:
        return f"{key.strategy} at ratio {data.real_gen_ratio:g} trains on no generated data (only the ratio " \
               "ablation may hold such a run)"
    return strategy.prove(data, comp["consumed"])


def _check(run_dir: Path, key: RunKey, cfg: RunConfig | None, checks: Checks) -> str | None:
    """Why a run does not prove its strategy's mix, else None (see the module docstring for the order)."""
    try:
        why = (_status_problem(run_dir) or _identity_problem(run_dir, key, cfg, checks)
               or _proof_problem(run_dir, key, cfg))
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        return f"cannot be checked: {type(exc).__name__}: {exc}"
    if why or not checks.audit:
        return why
    try:
        result = audit_run(run_dir)
    except Exception as exc:  # the audit must never take the whole results root down with one run
        return f"audit: could not run ({type(exc).__name__}: {exc})"
    return None if result.verdict == "verified" else f"audit: {result.verdict}: " + "; ".join(result.reasons[:2])


def _record(run_dir: Path, stage: str | None, checks: Checks) -> RunRecord | None:
    cfg, bad_config = None, None
    try:
        if (run_dir / "run.yaml").exists():
            cfg = load_run_config(run_dir / "run.yaml")
        key = RunKey.from_config(cfg, run_dir) if cfg is not None else RunKey.from_path(run_dir)
    except ConfigError as exc:
        key, bad_config = RunKey.from_path(run_dir), f"run.yaml does not validate: {exc}".replace("\n", " ")
    if key is None or (stage is not None and key.stage != stage):
        return None
    try:
        kind = parse_strategy(key.strategy).type
    except ValueError:
        kind = "?"
    invalid = bad_config or _check(run_dir, key, cfg, checks)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")) if invalid is None else {}
    return RunRecord(**asdict(key), run_dir=run_dir, metrics=metrics, invalid=invalid, type=kind, config=cfg)


def _without_duplicates(runs: list[RunRecord]) -> list[RunRecord]:
    """One valid run per key: a second folder holding the same run (a copy, an old two-decimal name) is INVALID."""
    keep: dict[RunKey, RunRecord] = {}
    for r in sorted((r for r in runs if r.invalid is None),
                    key=lambda r: (r.run_dir.name != run_dir_name(r.model, r.ratio, r.seed), str(r.run_dir))):
        keep.setdefault(_key(r), r)
    kept = {id(r) for r in keep.values()}
    return [r if r.invalid is not None or id(r) in kept else
            replace(r, invalid=f"duplicate of {keep[_key(r)].run_dir} (the same run twice)", metrics={})
            for r in runs]


def _key(r: RunKey) -> RunKey:
    return RunKey(r.stage, r.strategy, r.dataset, r.model, r.ratio, r.seed)


def _world_size(run: RunRecord) -> int:
    try:
        return int(json.loads((run.run_dir / "composition.json").read_text(encoding="utf-8"))["requested"]
                   .get("world_size", 1))
    except (OSError, ValueError, KeyError, TypeError):
        return 1


def _tested_images(run: RunRecord) -> list[str]:
    """The test images of a run's confusion.npz, in its order."""
    return read_confusion(run.run_dir / "confusion.npz").images


def _cell_consistency(runs: list[RunRecord]) -> list[RunRecord]:
    """Runs whose settings differ from their cell's baseline (other than what their strategy varies): INVALID."""
    base = {(r.stage, r.cell): r for r in runs if r.invalid is None and r.strategy == BASELINE and r.config}
    base_images = {key: _tested_images(ref) for key, ref in base.items()}  # read once per cell, not once per run
    out = []
    for r in runs:
        ref = base.get((r.stage, r.cell))
        if r.invalid is None and ref is not None and r is not ref:
            diffs = setting_differences(r.config, ref.config) if r.config and ref.config else []
            if _world_size(r) != _world_size(ref):  # the global batch is batch_size x world size
                diffs.append(f"world size: {_world_size(ref)} in the baseline, {_world_size(r)} found")
            if not diffs and align_images(_tested_images(r), base_images[(r.stage, r.cell)]) is None:
                diffs.append("test images: not the ones its baseline was tested on (or one is listed twice)")
            if diffs:
                r = replace(r, invalid=f"settings differ from the baseline of its cell {list(r.cell)}: "
                                      + "; ".join(d.replace("expected", "in the baseline") for d in diffs[:3]),
                            metrics={})
        out.append(r)
    return out


def collect_runs(results_root: str | Path, stage: str | None = None, checks: Checks | None = None) -> list[RunRecord]:
    """Every run directory under ``<root>/<stage>/<strategy>/<dataset>/<run>``, checked (see the module docstring)."""
    if not Path(results_root).is_dir():  # a typo'd root would rank nothing and say nothing
        raise FileNotFoundError(f"{results_root}: not a results root (no such directory)")
    checks = checks or Checks(audit=False)
    runs = []
    for run_dir in sorted(Path(results_root).glob("*/*/*/*")):
        record = _record(run_dir, stage, checks) if run_dir.is_dir() and not run_dir.name.startswith(".") else None
        if record is not None:
            runs.append(record)
    return _cell_consistency(_without_duplicates(runs))


def _pairs(runs: list[RunRecord], base: dict[Cell, RunRecord], cells: list[Cell],
           ) -> list[tuple[PairedRuns, np.ndarray]]:
    """The (strategy run, reference run) pairs of the compared cells, each with its images' domains.

    Seeds resample within (dataset, model). Each confusion.npz is read once here; domains are filtered after.
    """
    pairs = []
    for run in runs:
        if run.cell not in cells:
            continue
        a = read_confusion(run.run_dir / "confusion.npz")
        b = read_confusion(base[run.cell].run_dir / "confusion.npz")
        order = align_images(a.images, b.images)
        if order is None:  # _cell_consistency makes such a run INVALID first; a direct caller gets the reason
            raise ValueError(f"{run.run_dir} and {base[run.cell].run_dir} were tested on different images")
        pairs.append((PairedRuns((run.dataset, run.model), a.per_image, b.per_image[order]), np.asarray(a.domains)))
    return pairs


def _in_domain(pairs: list[tuple[PairedRuns, np.ndarray]], domain: str) -> list[PairedRuns]:
    """The same pairs restricted to one test domain's images (pairs without such images dropped)."""
    return [PairedRuns(p.group, p.a[d == domain], p.b[d == domain]) for p, d in pairs if (d == domain).any()]


def _paired_gain(runs: list[RunRecord], base: dict[Cell, RunRecord], cells: list[Cell],
                 n_boot: int, seed: int) -> GainEstimate:
    """Gain of ``runs`` over the ``base`` runs of the same cells: the hierarchical paired bootstrap of metrics."""
    return hierarchical_paired_gain([p for p, _ in _pairs(runs, base, cells)], n_boot, seed)


def _gain_fields(label: str, matched: list[RunRecord], base: dict[Cell, RunRecord], cells: list[Cell],
                 n_boot: int, seed: int, domains: list[str]) -> dict[str, Any]:
    """A row's gain over the baseline: overall and per domain, interval, p-value, probability of improvement."""
    if label == BASELINE:
        return {"gain": 0.0, "gain_ci95": [0.0, 0.0], "p_value": None, "p_improve": None,
                "interval": None, "per_domain_gain": {d: {"gain": 0.0, "ci95": [0.0, 0.0]} for d in domains}}
    pairs = _pairs(matched, base, cells)
    est = hierarchical_paired_gain([p for p, _ in pairs], n_boot, seed)
    per_domain = {}
    for d in domains:
        dom = hierarchical_paired_gain(_in_domain(pairs, d), n_boot, seed)
        per_domain[d] = {"gain": dom.gain, "ci95": [dom.low, dom.high]}
    return {"gain": est.gain, "gain_ci95": [est.low, est.high], "p_value": est.p_value, "p_improve": est.p_improve,
            "interval": "seeds and test images" if est.seed_aware else "test images only",
            "per_domain_gain": per_domain}


def _row(label: str, matched: list[RunRecord]) -> dict[str, Any]:
    domains = sorted({d for r in matched for d in r.metrics["per_domain"]})
    per_domain = {d: float(np.mean([r.metrics["per_domain"][d]["mIoU"] for r in matched
                                    if d in r.metrics["per_domain"]])) for d in domains}
    adverse = [v for d, v in per_domain.items() if d != SOURCE_DOMAIN]
    return {"strategy": label, "type": matched[0].type, "mIoU": float(np.mean([r.metrics["mIoU"] for r in matched])),
            "gain": None, "gain_ci95": None, "per_domain": per_domain,
            "adverse_mIoU": float(np.mean(adverse)) if adverse else None, "n_runs": len(matched),
            "ratios": sorted({r.ratio for r in matched})}


def _holm(rows: list[dict[str, Any]], alpha: float = 0.05) -> None:
    """Adjust every strategy-vs-baseline p-value with Holm's method over all the strategies compared."""
    compared = [r for r in rows if r.get("p_value") is not None]
    for row, p in zip(compared, holm_adjust([r["p_value"] for r in compared]), strict=True):
        # one seed per cell says nothing about seed-to-seed spread: no claim of significance then
        row["p_holm"], row["significant"] = p, bool(p < alpha and row.get("interval") == "seeds and test images")
    for row in rows:
        row.setdefault("p_holm", None)
        row.setdefault("significant", None)


def _policies(valid: list[RunRecord], warnings: list[str]) -> tuple[str | None, str | None]:
    """How the ranked runs chose their weights and what their study held equal; a mix of either is a warning."""
    selections = sorted({str(r.metrics.get("selection", "unrecorded")) for r in valid})
    budgets = sorted({r.config.study.budget if r.config is not None and r.config.study is not None else "iterations"
                      for r in valid})
    if len(selections) > 1:
        warnings.append(f"ranked runs chose their weights differently ({', '.join(selections)}): not comparable")
    if len(budgets) > 1:
        warnings.append(f"ranked runs come from studies with different budgets ({', '.join(budgets)})")
    return (selections[0] if len(selections) == 1 else "mixed") if selections else None, (
        budgets[0] if len(budgets) == 1 else "mixed") if budgets else None


def _interval_kind(rows: list[dict[str, Any]]) -> str | None:
    kinds = {r.get("interval") for r in rows} - {None}
    return None if not kinds else (kinds.pop() if len(kinds) == 1 else "mixed")


def _kind(row: dict[str, Any]) -> Strategy:
    return parse_strategy(row["strategy"])


def _cluster_warning(rows: list[dict[str, Any]], spread: float | None) -> str | None:
    """Generated strategies all within the baseline's noise: their data may not have been used."""
    gen_rows = [r for r in rows if _kind(r).generated]
    if not any(r["strategy"] == BASELINE for r in rows) or len(gen_rows) < 2 or spread is None:
        return None
    inside = [r for r in gen_rows if r["gain_ci95"] and r["gain_ci95"][0] <= 0 <= r["gain_ci95"][1]]
    widths = [r["gain_ci95"][1] - r["gain_ci95"][0] for r in gen_rows if r["gain_ci95"]]
    if len(inside) == len(gen_rows) and widths and spread <= float(np.median(widths)):  # ties (0 <= 0) too
        names = ", ".join(sorted(r["strategy"] for r in gen_rows))
        return (f"generated strategies {names} cluster within the noise of the baseline (every gain interval "
                "contains 0 and they differ by less than an interval width): check that their generated data was "
                "really used")
    return None


def _baseline_seed_spread(baseline: list[RunRecord]) -> float:
    """The baseline's seed-to-seed standard deviation of mIoU (largest over dataset/model groups; 0 with one seed)."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in baseline:
        groups[(r.dataset, r.model)].append(float(r.metrics["mIoU"]))
    return max((float(np.std(v, ddof=1)) for v in groups.values() if len(v) > 1), default=0.0)


def _noise_floor_warnings(rows: list[dict[str, Any]], by_label: dict[str, list[RunRecord]]) -> list[str]:
    """A generated strategy whose whole gain interval lies within the baseline's seed-to-seed noise."""
    spread = _baseline_seed_spread(by_label.get(BASELINE, []))
    out = []
    for row in rows:
        if not (_kind(row).generated or _kind(row).noise_control) or not row["gain_ci95"]:
            continue
        lo, hi = row["gain_ci95"]
        if -spread <= lo and hi <= spread:
            what = (f"within the baseline's seed-to-seed spread (±{100 * spread:.2f} points)" if spread > 0
                    else "exactly zero: indistinguishable from the baseline")
            out.append(f"{row['strategy']}: its gain interval [{100 * lo:+.2f}, {100 * hi:+.2f}] is {what}; "
                       "check that its generated data was really used")
    return out


def _ratio_warnings(by_label: dict[str, list[RunRecord]], stage: str | None) -> list[str]:
    out = []
    for s, rs in by_label.items():
        ratios = sorted({r.ratio for r in rs})
        if len(ratios) > 1 and stage != "ratio-ablation":
            out.append(f"{s} has runs at several ratios {ratios}: their cells are averaged; "
                       "use --stage ratio-ablation for the ratio curve")
    return out


def build_leaderboard(results_root: str | Path, stage: str | None = None, n_boot: int = 1000,
                      seed: int = 0, studies: list[Path] | None = None, audit: bool = True) -> dict[str, Any]:
    """The ``leaderboard --format json`` document (../shared/DESIGN.md section 7).

    ``studies``: the study files runs are checked against (default: those stored under the root);
    ``audit=False`` ranks runs on their own records without re-deriving them, and says so.
    """
    return rank_runs(results_root, stage, n_boot, seed, studies, audit)[0]


def rank_runs(results_root: str | Path, stage: str | None = None, n_boot: int = 1000, seed: int = 0,
              studies: list[Path] | None = None, audit: bool = True) -> tuple[dict[str, Any], list[RunRecord]]:
    """The leaderboard document and every run record it was built from (checked, valid or INVALID)."""
    reference = StudyReference.load(Path(results_root), studies)
    runs = collect_runs(results_root, stage, Checks(reference, audit))
    stages = sorted({r.stage for r in runs})
    if stage is None and len(stages) > 1:  # a stage-1 run is no pair for a stage-2 baseline
        raise ValueError(f"{results_root} holds stages {', '.join(stages)}: rank one at a time with --stage")
    invalid = [{"run_dir": str(r.run_dir), "reason": r.invalid} for r in runs if r.invalid]
    valid = [r for r in runs if r.invalid is None]
    by_label: dict[str, list[RunRecord]] = defaultdict(list)
    for r in valid:
        by_label[r.label].append(r)
    warnings = [f"study file not used: {e}" for e in reference.errors] + _ratio_warnings(by_label, stage)
    if not reference:
        warnings.append("no study to check runs against (none stored under the results root, no --study): runs are "
                        "checked against their own run.yaml only")
    if not audit:
        warnings.append("audit skipped (--no-audit): runs are ranked on their own records, not re-derived")
    cells = sorted(set.intersection(*(set(r.cell for r in rs) for rs in by_label.values()))) if by_label else []
    missing = _missing_runs(Path(results_root), reference, runs, stage)
    warnings += _coverage_warnings(missing, [r for r in valid if r.cell not in cells])
    base = {r.cell: r for r in by_label.get(BASELINE, [])}
    if by_label and BASELINE not in by_label:
        warnings.append("no valid baseline run: gains cannot be computed")
    rows = []
    for label, rs in by_label.items():
        matched = [r for r in rs if r.cell in cells]
        if not matched:
            continue
        row = _row(label, matched)
        if base:
            row.update(_gain_fields(label, matched, base, cells, n_boot, seed, sorted(row["per_domain"])))
        rows.append(row)
    _holm(rows)
    rows.sort(key=lambda r: -r["mIoU"])
    for i, row in enumerate(rows, start=1):
        row["rank"] = i
    gen_rows = [r for r in rows if _kind(r).generated]
    spread = (max(r["mIoU"] for r in gen_rows) - min(r["mIoU"] for r in gen_rows)) if len(gen_rows) > 1 else None
    warnings += [w for w in [_cluster_warning(rows, spread)] if w] + _noise_floor_warnings(rows, by_label)
    selection, budget = _policies(valid, warnings)
    doc: dict[str, Any] = {"stage": stage, "rows": rows, "invalid": invalid, "missing": missing, "warnings": warnings,
                           "generated_spread": spread, "cells": [list(c) for c in cells],
                           "studies": reference.studies, "audited": audit, "selection": selection, "budget": budget,
                           "comparisons": sum(r["p_value"] is not None for r in rows if "p_value" in r),
                           "interval": _interval_kind(rows)}
    doc["controls"] = _controls(by_label, cells, n_boot, seed)
    if stage == "noise-ablation":
        doc["noise_ablation"] = _noise_outcome(rows, by_label, cells, n_boot, seed)
    if stage == "ratio-ablation":
        doc["ratio_ablation"] = _ratio_table(valid, n_boot, seed)
    return doc, runs


def _missing_runs(root: Path, reference: StudyReference, runs: list[RunRecord], stage: str | None) -> list[str]:
    """Run directories the studies plan (in ``stage``) that do not exist: a dropped seed must not go unremarked."""
    found = {r.run_dir.resolve() for r in runs}
    resolved = root.resolve()
    out = []
    for path in sorted(reference.planned):
        try:
            planned_stage = path.relative_to(resolved).parts[0]
        except (ValueError, IndexError):
            continue
        if (stage is None or planned_stage == stage) and path not in found and not path.exists():
            out.append(str(path))
    return out


def _coverage_warnings(missing: list[str], left_out: list[RunRecord]) -> list[str]:
    out = []
    if missing:
        out.append(f"{len(missing)} run(s) the study plans have no run directory (not started or removed), e.g. "
                   f"{missing[0]}: only cells every strategy has are compared")
    if left_out:
        out.append(f"{len(left_out)} valid run(s) left out of the comparison: their (dataset, model, seed) cell "
                   f"lacks a valid run of another strategy, e.g. {left_out[0].run_dir}")
    return out


def _strong_view_of(runs: list[RunRecord]) -> tuple[float, bool, float] | None:
    """(jitter, cutmix, share of the batch) of the strong view a strategy's runs applied: self-training's teacher on
    its unlabeled share, or a control's on as many labeled images."""
    cfg = runs[0].config
    if cfg is None:
        return None
    if cfg.train.selftrain is not None:
        return cfg.train.selftrain.strong_jitter, cfg.train.selftrain.cutmix, cfg.data.unlabeled_share
    if cfg.train.strong_view is not None:
        return cfg.train.strong_view.jitter, cfg.train.strong_view.cutmix, cfg.train.strong_view.share
    return None


def _controls(by_label: dict[str, list[RunRecord]], cells: list[Cell], n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Each self-training strategy against its std_* control (same strong view on labeled data, no pseudo-labels):
    the gain pseudo-labels add beyond the strong augmentation."""
    out = []
    for label, runs in sorted(by_label.items()):
        if parse_strategy(label).type != "ST" or _strong_view_of(runs) is None:
            continue
        for other, control in sorted(by_label.items()):
            if parse_strategy(other).type == "Std" and _strong_view_of(control) == _strong_view_of(runs):
                est = _paired_gain(runs, {r.cell: r for r in control}, cells, n_boot, seed)
                iters = [sorted({r.config.train.max_iters for r in rs if r.config is not None})
                         for rs in (runs, control)]
                out.append({"strategy": label, "control": other, "gain": est.gain, "ci95": [est.low, est.high],
                            "p_value": est.p_value, "interval": "seeds and test images" if est.seed_aware
                            else "test images only", "iterations": {label: iters[0], other: iters[1]}})
    return out


def _noise_outcome(rows: list[dict[str, Any]], by_label: dict[str, list[RunRecord]], cells: list, n_boot: int,
                   seed: int) -> dict[str, Any]:
    """Which of the four noise-ablation outcomes the intervals support."""
    noise = next((r for r in rows if _kind(r).noise_control), None)
    gen = next((r for r in rows if _kind(r).generated), None)
    if noise is None or gen is None or noise["gain_ci95"] is None or gen["gain_ci95"] is None:
        return {"outcome": "incomplete", "detail": "needs baseline, the reference generator and gen_random_noise"}
    est = _paired_gain(by_label[gen["strategy"]], {r.cell: r for r in by_label[noise["strategy"]]}, cells,
                       n_boot, seed)
    gen_vs_noise = (est.gain, est.low, est.high)

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


def _ratio_table(valid: list[RunRecord], n_boot: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    """mIoU per ratio with its seed-aware 95% interval (hierarchical bootstrap over seeds and test images)."""
    table: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for strategy in sorted({r.strategy for r in valid}):
        for ratio in sorted({r.ratio for r in valid if r.strategy == strategy}, reverse=True):
            rs = [r for r in valid if r.strategy == strategy and r.ratio == ratio]
            _, lo, hi = hierarchical_miou([((r.dataset, r.model), read_confusion(r.run_dir / "confusion.npz").per_image)
                                           for r in rs], n_boot=n_boot, seed=seed)
            table[strategy].append({"ratio": ratio, "mIoU": float(np.mean([r.metrics["mIoU"] for r in rs])),
                                    "ci95": [lo, hi], "n_runs": len(rs)})
    return dict(table)
