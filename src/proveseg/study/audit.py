"""``proveseg audit``: re-derive a run's record from its ``run.yaml`` and the sources as they are now.

The batch plan is a pure function of (sources, shares, repeats, seed), so what a run consumed can
be recomputed without its own record: the sequence hash, every count of ``composition.json`` and,
from ``confusion.npz``, every number of ``metrics.json``. Verdicts:

- ``verified``: the record re-derives exactly;
- ``stale``: the data changed since training (a source's records, the test images): the record
  may have been true, but it cannot be re-derived now;
- ``inconsistent``: the sources are unchanged and the record still does not re-derive (an edited
  ``composition.json`` or ``metrics.json``, or a run that did not consume its plan);
- ``unverifiable``: not a finished run (status, missing files).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from proveseg.config import ConfigError, RunConfig, load_run_config
from proveseg.data.records import KINDS, RecordTable

__all__ = ["VERDICTS", "AuditResult", "audit_run", "audit_target", "find_run_dirs", "rederive_consumption"]

VERDICTS = ("verified", "stale", "inconsistent", "unverifiable")
_CHUNK = 4096  # batches per plan slice: bounded memory for 100,000-batch runs
_KEEP_FIRST = 8  # ConsumptionAudit's first_batches


@dataclass
class AuditResult:
    run_dir: Path
    verdict: str
    reasons: list[str] = field(default_factory=list)
    batches: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "verdict": self.verdict, "reasons": self.reasons,
                "batches": self.batches, "seconds": self.seconds}


def find_run_dirs(target: Path) -> list[Path]:
    """``target`` itself when it is a run directory, else every run directory under a results root."""
    if (target / "run.yaml").exists() or (target / "status").exists():
        return [target]
    return [p for p in sorted(target.glob("*/*/*/*")) if p.is_dir() and (p / "status").exists()]


def _codes(column: np.ndarray) -> tuple[list[str], np.ndarray]:
    values, inverse = np.unique(column, return_inverse=True)
    return [str(v) for v in values.tolist()], inverse.astype(np.int64)


def _count(names: list[str], codes: np.ndarray, id_counts: np.ndarray) -> dict[str, int]:
    totals = np.bincount(codes, weights=id_counts, minlength=len(names))
    return {names[i]: int(totals[i]) for i in np.flatnonzero(totals)}


def _first_batches(records: RecordTable, ids: np.ndarray) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for row in ids[:_KEEP_FIRST]:
        kinds = records.kind[row].tolist()
        sources: dict[str, int] = {}
        for s in records.source[row].tolist():
            sources[s] = sources.get(s, 0) + 1
        out.append({**{k: kinds.count(k) for k in KINDS}, "sources": sources})
    return out


def rederive_consumption(data: Any, batches: int) -> dict[str, Any]:
    """What a run of ``data`` (a TrainingData) consumed in its first ``batches`` batches, as ``consumed`` records it.

    Counts cover every rank, as the trainer writes them; ``sequence_sha256`` and ``first_batches`` are rank 0's.
    """
    from proveseg.data.audit import chain_sequence
    from proveseg.data.plan import plan_batches

    records, spec = data.records, data.spec
    kind_of_group = np.array([KINDS.index(g.name) for g in spec.groups], np.int64)
    id_counts = np.zeros(len(records), np.float64)
    per_batch: list[np.ndarray] = []
    sequence, first = "", []
    for lo in range(0, batches, _CHUNK):
        planned = plan_batches(spec, lo, min(lo + _CHUNK, batches))
        ids = np.ascontiguousarray(planned.ids[:, 0, :], dtype=np.int64)
        for row in ids:
            sequence = chain_sequence(sequence, row)
        id_counts += np.bincount(planned.ids.ravel(), minlength=len(records))
        kinds = kind_of_group[planned.groups.astype(np.int64)]
        per_batch.append(np.stack([(kinds == k).sum(axis=(1, 2)) for k in range(len(KINDS))], axis=1))
        if lo == 0:
            first = _first_batches(records, ids)
    kind_names, kind_codes = _codes(records.kind)
    domain_names, domain_codes = _codes(records.domain)
    source_names, source_codes = _codes(records.source)
    pair_names = [f"{k}/{d}" for k in kind_names for d in domain_names]
    per_kind = _count(kind_names, kind_codes, id_counts)
    seen = id_counts > 0
    unique_names, unique_counts = np.unique(records.source[seen], return_counts=True)
    rows = np.concatenate(per_batch) if per_batch else np.zeros((0, len(KINDS)), np.int64)
    pairs = {}
    if records.has_pairs:  # as ConsumptionAudit.to_dict: only for a table with pair columns
        paired_counts = id_counts * records.paired()
        paired_kinds = _count(kind_names, kind_codes, paired_counts)
        pairs = {"paired_per_source": _count(source_names, source_codes, paired_counts),
                 "paired_per_kind": {k: paired_kinds.get(k, 0) for k in KINDS}}
    return {
        "batches": batches, "samples": int(id_counts.sum()),
        "per_kind": {k: per_kind.get(k, 0) for k in KINDS},
        "per_source": _count(source_names, source_codes, id_counts),
        "per_domain": _count(domain_names, domain_codes, id_counts),
        "per_kind_domain": _count(pair_names, kind_codes * len(domain_names) + domain_codes, id_counts),
        "unique_per_source": {str(v): int(c) for v, c in zip(unique_names.tolist(), unique_counts.tolist(),
                                                             strict=True)},
        "per_batch_distinct": [list(r) for r in sorted({tuple(int(v) for v in row) for row in rows.tolist()})],
        "first_batches": first, "sequence_sha256": sequence, **pairs,
    }


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _mismatches(recorded: Mapping[str, Any], derived: Mapping[str, Any], prefix: str) -> list[str]:
    out = []
    for key, want in derived.items():
        got = recorded.get(key)
        if not _same(got, _plain(want)):
            out.append(f"{prefix}{key}: recorded {_brief(got)}, re-derived {_brief(want)}")
    return out


def _same(a: Any, b: Any, tol: float = 1e-9) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:  # NaN is written as null (strict JSON)
            other = b if a is None else a
            return other is None or (isinstance(other, float) and np.isnan(other))
        return bool(np.isclose(float(a), float(b), rtol=tol, atol=tol, equal_nan=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _brief(value: Any) -> str:
    text = json.dumps(_plain(value), sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_composition(cfg: RunConfig, data: Any, comp: dict[str, Any]) -> list[str]:
    from proveseg.strategies import parse_strategy

    consumed = comp.get("consumed", {})
    batches = int(consumed.get("batches", 0))
    problems = []
    if batches != int(consumed.get("iterations", -1)) * cfg.train.grad_accum:
        problems.append(f"consumed.batches {batches} is not iterations x grad_accum "
                        f"({consumed.get('iterations')} x {cfg.train.grad_accum})")
    derived = rederive_consumption(data, batches)
    problems += _mismatches(consumed, derived, "consumed.")
    problems += _mismatches(comp, {"requested": data.requested()}, "")
    if comp.get("matches_request") is not True or comp.get("problems"):
        problems.append("composition.json does not record a match with the request")
    why = parse_strategy(cfg.strategy).prove(cfg.data, derived)
    if why:
        problems.append(f"strategy {cfg.strategy}: {why}")
    return problems


def _check_run_length(cfg: RunConfig, run_dir: Path, comp: dict[str, Any]) -> list[str]:
    """A run that stopped before max_iters must have stopped early by its own rule (recorded in its log)."""
    from proveseg.rundir import read_log_lines

    iterations = int(comp.get("consumed", {}).get("iterations", -1))
    if iterations == cfg.train.max_iters:
        return []
    early = any(r.get("early_stop") and r.get("iteration") == iterations for r in read_log_lines(run_dir / "log.jsonl"))
    if cfg.train.early_stopping is not None and early:
        return []
    return [f"consumed.iterations {iterations} is not train.max_iters {cfg.train.max_iters}, and the log records no "
            "early stop there"]


def _check_metrics(cfg: RunConfig, run_dir: Path, names: list[str]) -> tuple[list[str], list[str]]:
    """(stale reasons, inconsistencies) of metrics.json against confusion.npz and the test split now."""
    from proveseg.evaluate.metrics import summarize
    from proveseg.evaluate.runner import load_split, read_confusion

    with np.load(run_dir / "confusion.npz", allow_pickle=False) as z:
        class_names = z["class_names"].tolist() if "class_names" in z else names
    result = read_confusion(run_dir / "confusion.npz")
    stale = []
    test_images = sorted(str(p) for p in load_split(cfg.evaluation.test).image.tolist()) if cfg.evaluation.test else []
    if test_images and sorted(result.images) != test_images:
        stale.append("the test split's images are not the ones the run was tested on")
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    problems = [] if class_names == names else [f"confusion.npz classes {class_names[:3]}... are not the run's"]
    if metrics.get("split", "test") != "test":
        problems.append(f"metrics.json holds the {metrics.get('split')} split, not the test split the run reports")
    selection = "best_on_val" if cfg.evaluation.val else "final"
    if metrics.get("selection", selection) != selection:
        problems.append(f"metrics.json says selection {metrics.get('selection')!r}, but the run config makes it "
                        f"{selection!r}")
    derived = summarize(result.per_image, result.domains, class_names, n_boot=cfg.evaluation.n_boot)
    problems += _mismatches(metrics, derived, "metrics.json ")
    return stale, problems


def audit_run(run_dir: Path) -> AuditResult:
    """Re-derive one run's record; see the module docstring for the verdicts."""
    from proveseg.data.classes import resolve_class_set
    from proveseg.data.pipeline import build_training_data

    start = time.perf_counter()
    out = AuditResult(run_dir, "unverifiable")
    try:
        state = (run_dir / "status").read_text(encoding="utf-8").split("\n")[0].strip() if (
            run_dir / "status").exists() else "todo"
    except (OSError, UnicodeDecodeError) as exc:
        out.reasons = [f"status is unreadable ({type(exc).__name__}: {exc})"]
        return out
    needed = ("run.yaml", "composition.json", "metrics.json", "confusion.npz")
    missing = [n for n in needed if not (run_dir / n).exists()]
    if state != "done" or missing:
        out.reasons = [f"status {state}" if state != "done" else f"no {', '.join(missing)}"]
        return out
    try:
        cfg = load_run_config(run_dir / "run.yaml")
        comp = json.loads((run_dir / "composition.json").read_text(encoding="utf-8"))
        world = int(comp.get("requested", {}).get("world_size", 1))
        out.batches = int(comp.get("consumed", {}).get("batches", 0))
    except (ConfigError, json.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
        out.verdict, out.reasons = "inconsistent", [f"unreadable record: {exc}".replace("\n", " ")]
        return out
    try:
        data = build_training_data(cfg.data, world)
    except Exception as exc:  # any source that cannot be read as configured any more
        out.verdict, out.reasons = "stale", [f"the sources cannot be read as configured now: {exc}"[:300]]
        return out
    recorded = comp.get("source_hashes", {})
    changed = sorted(k for k in set(recorded) | set(data.hashes) if recorded.get(k) != data.hashes.get(k))
    try:
        stale, problems = _check_metrics(cfg, run_dir, list(resolve_class_set(cfg.data.class_set).names))
    except (OSError, ValueError) as exc:  # the test split cannot be read as configured now
        stale, problems = [f"the test split cannot be read now: {exc}"[:300]], []
    except Exception as exc:  # a truncated or foreign confusion.npz / metrics.json: numpy and json raise many types
        stale, problems = [], [f"unreadable metrics.json or confusion.npz ({type(exc).__name__}: {exc})"[:300]]
    stale = [f"the records of source {k} changed since training" for k in changed] + stale
    if not changed:
        problems = _check_composition(cfg, data, comp) + _check_run_length(cfg, run_dir, comp) + problems
    out.verdict = "stale" if stale else ("inconsistent" if problems else "verified")
    out.reasons = stale or problems
    out.seconds = time.perf_counter() - start
    return out


def audit_target(target: Path, studies: list[Path] | None = None) -> dict[str, Any]:
    """``proveseg audit``: every run under ``target``, also checked against its study when one is at hand."""
    from proveseg.study.reference import StudyReference

    start = time.perf_counter()
    runs = find_run_dirs(target)
    root = target.parents[3] if runs == [target] and len(target.parents) > 3 else target
    reference = StudyReference.load(root, studies)
    results = []
    for run_dir in runs:
        try:
            result = audit_run(run_dir)
        except Exception as exc:  # one run's unforeseen fault must not hide the verdicts of the others
            result = AuditResult(run_dir, "unverifiable", [f"the audit could not run ({type(exc).__name__}: {exc})"])
        differs = reference.check(run_dir, None) if reference and not (run_dir / "run.yaml").exists() else None
        if reference and differs is None and (run_dir / "run.yaml").exists():
            try:
                differs = reference.check(run_dir, load_run_config(run_dir / "run.yaml"))
            except ConfigError:
                differs = None  # the audit already says so
        if differs and result.verdict == "verified":
            result.verdict = "inconsistent"
        if differs:
            result.reasons.insert(0, differs)
        results.append(result.as_dict())
    counts = {v: sum(r["verdict"] == v for r in results) for v in VERDICTS}
    return {"runs": results, "counts": counts, "studies": reference.studies,
            "seconds": time.perf_counter() - start}
