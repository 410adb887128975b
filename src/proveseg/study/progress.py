"""Study progress, read from the runs' own files (``log.jsonl``, ``status``): local and Slurm runs alike.

:func:`run_progress` is one run's iteration, rate, ETA, last loss and last validation metric;
:func:`study_progress` adds the study's counts and ETA; :func:`progress_lines` formats both for a
terminal or a log (a header, then one line per active run).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Protocol

from proveseg.rundir import RunDir, read_log_lines

__all__ = ["format_eta", "progress_lines", "run_progress", "study_progress"]


class _Train(Protocol):
    @property
    def max_iters(self) -> int: ...


class _Config(Protocol):
    @property
    def train(self) -> _Train: ...


class _Run(Protocol):
    """What :func:`study_progress` needs of a run (a :class:`~proveseg.study.matrix.PlannedRun`)."""

    @property
    def run_dir(self) -> Path: ...

    @property
    def config(self) -> _Config: ...


def _number(value: Any) -> float | None:
    """A finite float, or None (missing, not a number, NaN or infinite)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _val_metric(record: dict[str, Any]) -> tuple[str, float] | None:
    """("mIoU", value) of an eval record, or None."""
    ev = record.get("eval")
    if not isinstance(ev, dict):
        return None
    value = _number(ev.get("mIoU"))
    return None if value is None else ("mIoU", value)


def run_progress(run_dir: str | Path, max_iters: int) -> dict[str, Any]:
    """One run's progress from its ``log.jsonl`` (a torn last line is skipped) and ``status``.

    Keys: ``run_dir``, ``label`` (``<stage>/<strategy>/<dataset>/<run>``), ``state`` (todo, running,
    done, failed), ``iteration`` (of the last step record; ``max`` when done), ``max``, ``it_s`` (the
    ``it_s`` of the last step record), ``eta_s`` ((max - iteration) / it_s; 0 when done, None without
    a rate), ``loss`` (last step record's), ``val`` ({"metric", "value", "iteration"} of the last
    record with ``"eval": {"mIoU": ...}``, or None).
    """
    root = Path(run_dir)
    state = RunDir(root).status()[0]
    iteration, it_s, loss, val = 0, None, None, None
    try:
        records = read_log_lines(root / "log.jsonl")
    except (OSError, ValueError):
        records = []
    for record in records:
        it = record.get("iteration")
        metric = _val_metric(record)
        if metric is not None:
            val = {"metric": metric[0], "value": metric[1], "iteration": it}
        elif "it_s" in record and isinstance(it, int):
            iteration, it_s, loss = it, _number(record.get("it_s")), _number(record.get("loss"))
    if state == "done":
        iteration = max(iteration, max_iters)
    remaining = max(max_iters - iteration, 0)
    eta = 0.0 if remaining == 0 else (remaining / it_s if it_s else None)
    return {"run_dir": str(root), "label": "/".join(root.parts[-4:]), "state": state, "iteration": iteration,
            "max": max_iters, "it_s": it_s, "eta_s": eta, "loss": loss, "val": val}


def _finished(root: Path, state: str, max_iters: int) -> dict[str, Any]:
    return {"run_dir": str(root), "label": "/".join(root.parts[-4:]), "state": state,
            "iteration": max_iters if state == "done" else 0, "max": max_iters, "it_s": None, "eta_s": 0.0,
            "loss": None, "val": None}


def study_progress(runs: Sequence[_Run], active: Collection[str | Path] | None = None) -> dict[str, Any]:
    """The study's progress: every run's :func:`run_progress` and the counts and ETA over them.

    Done and failed runs are counted from their ``status`` alone (their logs are not read). A run
    is active when its status is ``running`` or, with ``active`` (the run directories an executor
    is running now), when it is one of those; a ``running`` status outside ``active`` (a trainer
    that died) then counts as todo. The study ETA is a simple model: the remaining iterations of
    every unfinished run, at the combined rate of the active runs (their mean it/s times their
    number, as if as many runs keep running side by side); None when no active run has a rate yet.
    """
    chosen = None if active is None else {str(Path(p)) for p in active}
    items = []
    for run in runs:
        max_iters = int(run.config.train.max_iters)
        state = RunDir(run.run_dir).status()[0]
        if state in ("done", "failed"):  # its log is not read: a study of many finished runs stays cheap
            items.append(_finished(Path(run.run_dir), state, max_iters))
            continue
        item = run_progress(run.run_dir, max_iters)
        if chosen is not None and item["state"] not in ("done", "failed"):
            item["state"] = "running" if item["run_dir"] in chosen else "todo"
        items.append(item)
    running = [i for i in items if i["state"] == "running"]
    rates = [i["it_s"] for i in running if i["it_s"]]
    remaining = sum(max(i["max"] - i["iteration"], 0) for i in items if i["state"] not in ("done", "failed"))
    eta = None
    if remaining == 0:
        eta = 0.0
    elif rates:
        eta = remaining / (sum(rates) / len(rates)) / len(running)
    count = {s: sum(i["state"] == s for i in items) for s in ("done", "running", "failed", "todo")}
    return {"total": len(items), **count, "remaining_iters": remaining, "eta_s": eta, "runs": items}


def format_eta(seconds: float | None) -> str:
    """``0:18``, ``6:40``, ``1:02:03``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    total = round(max(seconds, 0.0))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _run_line(item: dict[str, Any]) -> str:
    parts = [f"{item['label']} it {item['iteration']}/{item['max']}"]
    parts.append(f"{item['it_s']:.1f} it/s" if item["it_s"] else "? it/s")
    parts.append(f"ETA {format_eta(item['eta_s'])}")
    if item["loss"] is not None:
        parts.append(f"loss {item['loss']:.2f}")
    if item["val"] is not None:
        parts.append(f"val {item['val']['metric']} {100 * item['val']['value']:.1f}%")
    return " ".join(parts)


def progress_lines(doc: dict[str, Any]) -> list[str]:
    """A header (``study: 4/18 runs done, 2 running, ETA 6:40``) and one line per active run."""
    header = f"study: {doc['done']}/{doc['total']} runs done, {doc['running']} running"
    if doc["failed"]:
        header += f", {doc['failed']} failed"
    header += f", ETA {format_eta(doc['eta_s'])}"
    return [header] + [_run_line(i) for i in doc["runs"] if i["state"] == "running"]
