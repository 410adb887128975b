"""``proveseg audit``: re-derive a run's record from its ``run.yaml`` and the sources as they are now.

The batch plan is a pure function of (sources, shares, repeats, seed), so what a run consumed can
be recomputed without its own record: the sequence hash, every count of ``composition.json`` and,
from ``confusion.npz``, every number of ``metrics.json``. Verdicts:

- ``verified``: the record re-derives exactly;
- ``stale``: the data changed since training (a source's records, the test images): the record
  may have been true, but it cannot be re-derived now;
- ``inconsistent``: the sources are unchanged and the record still does not re-derive (an edited
  ``composition.json`` or ``metrics.json``, or a run that did not consume its plan), or the scores
  are not of this run's weights: ``metrics.json`` names ``checkpoints/best.pt`` by its SHA-256, and
  best.pt must hold this run's config and the batch sequence its plan gives up to best.pt's
  iteration (a checkpoint or evaluation pasted from another run, or weights trained otherwise);
- ``unverifiable``: not a finished run (status, missing files), or scores that cannot be tied to
  weights (no best.pt, or records written before weights were named).

The test scores themselves are re-derived from ``confusion.npz``, not from the weights: a forged
confusion matrix with a consistent ``metrics.json`` is caught only by ``--reevaluate``, which scores
best.pt on the test split again and compares every image's matrix (exactly: run it on the device
type the run was tested on, as GPU kernels may round differently).
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


def rederive_consumption(data: Any, batches: int, sequence_at: int | None = None) -> dict[str, Any]:
    """What a run of ``data`` (a TrainingData) consumed in its first ``batches`` batches, as ``consumed`` records it.

    Counts cover every rank, as the trainer writes them; ``sequence_sha256`` and ``first_batches`` are rank 0's.
    With ``sequence_at``, the key ``sequence_at`` also holds rank 0's sequence hash after that many batches
    (what ``best.pt`` records of the data its weights were trained on).
    """
    from proveseg.data.audit import chain_sequence
    from proveseg.data.plan import plan_batches

    records, spec = data.records, data.spec
    kind_of_group = np.array([KINDS.index(g.name) for g in spec.groups], np.int64)
    id_counts = np.zeros(len(records), np.float64)
    per_batch: list[np.ndarray] = []
    sequence, first, sequence_at_value = "", [], "" if sequence_at == 0 else None
    for lo in range(0, batches, _CHUNK):
        planned = plan_batches(spec, lo, min(lo + _CHUNK, batches))
        ids = np.ascontiguousarray(planned.ids[:, 0, :], dtype=np.int64)
        for k, row in enumerate(ids, start=lo + 1):
            sequence = chain_sequence(sequence, row)
            if k == sequence_at:
                sequence_at_value = sequence
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
        **({"sequence_at": sequence_at_value} if sequence_at is not None else {}),
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


def _check_composition(cfg: RunConfig, data: Any, comp: dict[str, Any], weights: _Weights | None = None) -> list[str]:
    from proveseg.strategies import parse_strategy

    consumed = comp.get("consumed", {})
    batches = int(consumed.get("batches", 0))
    problems = []
    if batches != int(consumed.get("iterations", -1)) * cfg.train.grad_accum:
        problems.append(f"consumed.batches {batches} is not iterations x grad_accum "
                        f"({consumed.get('iterations')} x {cfg.train.grad_accum})")
    at = weights.iteration * cfg.train.grad_accum if weights and weights.sequence is not None else None
    at = at if at is not None and 0 <= at <= batches else None  # outside the run: no sequence to compare
    if weights is not None and weights.bound and weights.iteration != weights.expected_iteration:
        problems.append(f"checkpoints/best.pt is of iteration {weights.iteration}, but the run's weights are those of "
                        f"iteration {weights.expected_iteration} ({weights.expected_why})")
    derived = rederive_consumption(data, batches, at)
    sequence_at = derived.pop("sequence_at", None)
    if weights is not None and at is not None and weights.sequence != sequence_at:
        problems.append(f"checkpoints/best.pt was trained on another batch sequence than this run's plan up to its "
                        f"iteration {weights.iteration} (recorded {str(weights.sequence)[:12]}, re-derived "
                        f"{str(sequence_at)[:12]})")
    problems += _mismatches(consumed, derived, "consumed.")
    problems += _mismatches(comp, {"requested": data.requested()}, "")
    if comp.get("matches_request") is not True or comp.get("problems"):
        problems.append("composition.json does not record a match with the request")
    why = parse_strategy(cfg.strategy).prove(cfg.data, derived)
    if why:
        problems.append(f"strategy {cfg.strategy}: {why}")
    return problems


def _check_run_length(cfg: RunConfig, run_dir: Path, comp: dict[str, Any], log_bound: bool = False) -> list[str]:
    """A run that stopped before max_iters must have stopped early by its own rule (recorded in its log), and the
    log must be the one the trainer finished with (``log_bound``: the run's trainer records its log's hash)."""
    from proveseg.rundir import file_sha256, read_log_lines

    log = run_dir / "log.jsonl"
    if log_bound and "log_sha256" not in comp:
        return ["composition.json does not record log_sha256, which the trainer of this run writes"]
    if "log_sha256" in comp and (not log.is_file() or file_sha256(log) != comp["log_sha256"]):
        return ["log.jsonl is not the log the trainer finished with (log_sha256 in composition.json differs)"]
    iterations = int(comp.get("consumed", {}).get("iterations", -1))
    if iterations == cfg.train.max_iters:
        return []
    early = any(r.get("early_stop") and r.get("iteration") == iterations for r in read_log_lines(run_dir / "log.jsonl"))
    if cfg.train.early_stopping is not None and early:
        return []
    return [f"consumed.iterations {iterations} is not train.max_iters {cfg.train.max_iters}, and the log records no "
            "early stop there"]


@dataclass
class _Weights:
    """What ``checkpoints/best.pt`` says of itself, and why it does not bind the run's scores (if it does not)."""

    iteration: int = -1
    sequence: str | None = None
    bound: bool = False  # the run has a best.pt (a proveseg-trained run): scores and log must be tied to it
    expected_iteration: int = -1  # the iteration best.pt must hold: the last one, or the log's best on validation
    expected_why: str = ""
    unbound: list[str] = field(default_factory=list)  # cannot tie the scores to weights: unverifiable
    problems: list[str] = field(default_factory=list)  # tied to other weights or another run: inconsistent


def _result_iteration(cfg: RunConfig, run_dir: Path, comp: dict[str, Any]) -> tuple[int, str]:
    """The iteration whose weights are the run's result: the best on validation as the (hash-bound) log records
    it, else the last one. Any other checkpoint would be chosen some other way, e.g. on the test set."""
    from proveseg.rundir import read_log_lines

    last = int(comp.get("consumed", {}).get("iterations", -1))
    if cfg.evaluation.val:
        best = [r["best"]["iteration"] for r in read_log_lines(run_dir / "log.jsonl")
                if isinstance(r.get("best"), dict) and "iteration" in r["best"]]
        if best:
            return int(best[-1]), "the best on evaluation.val, as log.jsonl records it"
        return last, "no validation ran: the final weights"
    return last, "no evaluation.val: the final weights"


def _protocol(cfg: RunConfig) -> dict[str, Any]:
    """How the test split is scored (``metrics.json``'s ``protocol``): another protocol gives other scores."""
    from proveseg.evaluate.runner import evaluation_protocol

    return _plain(evaluation_protocol(cfg.evaluation))


def _check_weights(cfg: RunConfig, run_dir: Path, comp: dict[str, Any]) -> _Weights:
    """``metrics.json`` must name ``checkpoints/best.pt`` by its SHA-256, and best.pt must be this run's weights:
    its stored config is the run's (a checkpoint from another run, or one trained with other settings, is not)."""
    from proveseg.checkpoint import CheckpointError, load_checkpoint
    from proveseg.config import parse_run_config
    from proveseg.configdiff import AFTER_TRAINING, config_differences
    from proveseg.rundir import file_sha256

    out = _Weights()
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    for key, want in (("strategy", cfg.strategy), ("model", cfg.model.name)):
        if key in metrics and metrics[key] != want:
            out.problems.append(f"metrics.json scores strategy/model {key} {metrics[key]!r}, the run is {want!r}")
    best = run_dir / "checkpoints" / "best.pt"
    if not best.is_file():
        if metrics.get("trainer") in (None, "proveseg"):
            out.unbound.append("no checkpoints/best.pt: the scores cannot be tied to the weights that were trained")
        return out  # a foreign trainer's run: its weights are its own (scores come from its scorer's record)
    out.bound = True
    out.expected_iteration, out.expected_why = _result_iteration(cfg, run_dir, comp)
    protocol = metrics.get("protocol")
    if protocol is not None and protocol != _protocol(cfg):
        out.problems.append(f"metrics.json was scored with evaluation {protocol}, run.yaml says {_protocol(cfg)}")
    recorded = metrics.get("weights_sha256")
    if not isinstance(recorded, str):
        out.unbound.append("metrics.json does not name the weights it scored (no weights_sha256: written by an older "
                           "proveseg): run `proveseg evaluate RUN` to score checkpoints/best.pt again")
    elif recorded != file_sha256(best):
        out.problems.append("checkpoints/best.pt is not the file metrics.json scored (weights_sha256 differs)")
    try:
        ckpt = load_checkpoint(best)
        stored = parse_run_config(str(ckpt.get("config", "")), f"{best} (stored config)")
    except (CheckpointError, ConfigError) as exc:
        out.problems.append(f"checkpoints/best.pt cannot be read: {exc}".replace("\n", " ")[:300])
        return out
    diffs = config_differences(stored, cfg, skip=AFTER_TRAINING)  # a resume may correct how the test is scored
    if diffs:
        out.problems.append("checkpoints/best.pt was trained with other settings than run.yaml: " + "; ".join(
            d.replace("expected", "in run.yaml") for d in diffs[:3]))
    out.iteration = int(ckpt.get("iteration", -1))
    if metrics.get("iteration") is not None and metrics["iteration"] != out.iteration:
        out.problems.append(f"metrics.json scores iteration {metrics['iteration']}, checkpoints/best.pt holds "
                            f"iteration {out.iteration}")
    sequence = ckpt.get("sequence_sha256")
    if isinstance(sequence, str):
        out.sequence = sequence
    else:
        out.unbound.append("checkpoints/best.pt does not record the batch sequence it was trained on (written "
                           "by an older proveseg)")
    return out


def _rescore(cfg: RunConfig, run_dir: Path, device: str) -> list[str]:
    """Score ``checkpoints/best.pt`` on the test split again; the per-image matrices must be confusion.npz's."""
    from proveseg.checkpoint import checkpoint_class_set, load_model
    from proveseg.evaluate.runner import align_images, evaluate_model, load_split, read_confusion

    best = run_dir / "checkpoints" / "best.pt"
    model, state = load_model(best, device)
    fresh = evaluate_model(model, load_split(cfg.evaluation.test), checkpoint_class_set(state, best), cfg.evaluation,
                           device)
    recorded = read_confusion(run_dir / "confusion.npz")
    order = align_images(fresh.images, recorded.images)
    if order is None or fresh.per_image.shape[1:] != recorded.per_image.shape[1:]:
        return ["re-scoring checkpoints/best.pt covers other test images or classes than confusion.npz"]
    same = (fresh.per_image == recorded.per_image[order]).all(axis=(1, 2))
    differ = [name for name, ok in zip(fresh.images, same.tolist(), strict=True) if not ok]
    if differ:
        return [f"re-scoring checkpoints/best.pt on the test split gives other confusion matrices for {len(differ)} "
                f"of {len(fresh.images)} images (e.g. {differ[0]})"]
    return []


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


def audit_run(run_dir: Path, rescore_on: str | None = None) -> AuditResult:
    """Re-derive one run's record; see the module docstring for the verdicts.

    ``rescore_on``: a device to score ``checkpoints/best.pt`` on the test split again (``--reevaluate``); a run
    otherwise verified whose matrices differ is inconsistent.
    """
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
    prints = comp.get("file_fingerprints") or {}  # absent in records written before files were fingerprinted
    rewritten = sorted(k for k in prints if k not in changed and prints[k] != data.file_prints.get(k, prints[k]))
    try:
        stale, problems = _check_metrics(cfg, run_dir, list(resolve_class_set(cfg.data.class_set).names))
    except (OSError, ValueError) as exc:  # the test split cannot be read as configured now
        stale, problems = [f"the test split cannot be read now: {exc}"[:300]], []
    except Exception as exc:  # a truncated or foreign confusion.npz / metrics.json: numpy and json raise many types
        stale, problems = [], [f"unreadable metrics.json or confusion.npz ({type(exc).__name__}: {exc})"[:300]]
    try:
        weights = _check_weights(cfg, run_dir, comp)
    except Exception as exc:  # a foreign or truncated metrics.json / best.pt
        weights = _Weights(problems=[f"the weights cannot be checked ({type(exc).__name__}: {exc})"[:300]])
    stale = [f"the records of source {k} changed since training" for k in changed] + [
        f"the files of source {k} changed since training (same paths, other sizes: rewritten in place)"
        for k in rewritten] + stale
    changed += rewritten
    if not changed:
        log_bound = weights.bound and weights.sequence is not None  # the same trainer version writes both
        problems = (_check_composition(cfg, data, comp, weights) + _check_run_length(cfg, run_dir, comp, log_bound)
                    + weights.problems + problems)
    if rescore_on is not None and weights.bound and not (stale or problems or weights.unbound) and cfg.evaluation.test:
        try:
            problems = _rescore(cfg, run_dir, rescore_on)
        except Exception as exc:  # the weights or the test split cannot be read as configured now
            stale = [f"checkpoints/best.pt cannot be scored again ({type(exc).__name__}: {exc})"[:300]]
    out.verdict = "stale" if stale else ("inconsistent" if problems else (
        "unverifiable" if weights.unbound else "verified"))
    out.reasons = stale or problems or weights.unbound
    out.seconds = time.perf_counter() - start
    return out


def audit_target(target: Path, studies: list[Path] | None = None, rescore_on: str | None = None) -> dict[str, Any]:
    """``proveseg audit``: every run under ``target``, also checked against its study when one is at hand
    (``rescore_on``: see :func:`audit_run`)."""
    from proveseg.study.reference import StudyReference

    start = time.perf_counter()
    runs = find_run_dirs(target)
    root = target.parents[3] if runs == [target] and len(target.parents) > 3 else target
    reference = StudyReference.load(root, studies)
    results = []
    for run_dir in runs:
        try:
            result = audit_run(run_dir, rescore_on)
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
    return {"runs": results, "counts": counts, "studies": reference.studies, "rescored": rescore_on is not None,
            "seconds": time.perf_counter() - start}
