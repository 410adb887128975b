"""What every run of a study is doing now (``proveseg status``): run files, run locks and the Slurm queue.

A run is ``done``, ``running`` (its Slurm job runs, or a local trainer holds its lock), ``queued``
(its Slurm job waits, e.g. requeued after a preemption), ``preempted`` (stopped at a step boundary
with ``last.pt`` saved and no job queued: ``proveseg run`` resumes it), ``failed`` (with the
reason: the run's ``status``, the task's error, or a Slurm job that ended without a result) or
``not started``. Progress (iteration, it/s, ETA, last validation metric) comes from
:func:`proveseg.study.progress.run_progress`; the Slurm job and its preemption count from
``slurm.json`` (:mod:`proveseg.study.slurm`). ``squeue`` is asked once per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proveseg.rundir import RunDir, RunLock
from proveseg.study.progress import format_eta, run_progress
from proveseg.study.slurm import job_outcome, read_job, squeue_states

__all__ = ["STATES", "run_status", "status_lines", "study_status"]

STATES = ("queued", "running", "done", "failed", "preempted", "not started")


def _slurm_state(job: dict[str, Any] | None, queue: dict[str, tuple[str, str]] | None, file_state: str,
                 holder: str | None) -> tuple[str, str] | None:
    """(state, reason) from the run's Slurm job, or None when the job does not decide it.

    ``holder`` is whoever holds the run's lock outside this process: a job that left the queue
    while someone else (a local ``proveseg run``, say) trains the run decides nothing.
    """
    if job is None or file_state == "done":
        return None
    job_id = str(job["job_id"])
    if queue is not None and job_id in queue:
        slurm_state, why = queue[job_id]
        if slurm_state in ("RUNNING", "COMPLETING"):
            return "running", "" if slurm_state == "RUNNING" else "Slurm: completing"
        requeues = int(job.get("preemptions", 0))
        parts = ([f"requeued {requeues}x (preemption or time limit)"] if requeues else []) + (
            [f"Slurm: {why}"] if why and why != "None" else [])
        return "queued", "; ".join(parts)
    if queue is None:  # the scheduler does not answer: the run's own files decide
        return ("running", "squeue did not answer: from the run's status file") if file_state == "running" else None
    if holder is not None:
        return "running", f"its Slurm job {job_id} has ended; {holder} holds the run's lock"
    outcome = job_outcome(job)
    if outcome is not None and outcome[0] == "error":
        return "failed", outcome[1]
    if outcome is None and file_state in ("running", "todo"):
        return "failed", f"Slurm job {job_id} ended without a result (cancelled, killed or out of memory)"
    return None


def run_status(run_dir: str | Path, max_iters: int, queue: dict[str, tuple[str, str]] | None) -> dict[str, Any]:
    """One run's row: :func:`run_progress`'s keys plus ``state`` (one of :data:`STATES`), ``reason``,
    ``job_id`` and ``requeues`` (preemptions and time limits the run outlived)."""
    rd = RunDir(run_dir)
    file_state, reason = rd.status()
    job = read_job(run_dir)
    row = run_progress(run_dir, max_iters) if file_state != "done" else {
        **run_progress(run_dir, max_iters), "it_s": None}
    holder = RunLock(run_dir).held_elsewhere()
    decided = _slurm_state(job, queue, file_state, holder)
    if decided is not None:
        state, reason = decided
    elif file_state == "done":
        state = "done"
    elif holder:
        state, reason = "running", ""
    elif file_state == "failed" and reason.startswith("preempted"):
        state = "preempted"
    elif file_state == "failed":
        state = "failed"
    elif file_state == "running":
        state = "preempted" if rd.last.exists() else "failed"
        reason = "interrupted: its trainer stopped without marking the run" + (
            " (last.pt saved: `proveseg run` resumes it)" if rd.last.exists() else "")
    else:
        state = "not started"
    if state not in ("running",):
        row["it_s"] = None
        row["eta_s"] = 0.0 if state == "done" else None
    row.update(state=state, reason=reason, job_id=str(job["job_id"]) if job else None,
               requeues=int(job.get("preemptions", 0)) if job else 0)
    return row


def study_status(runs: Sequence[Any]) -> dict[str, Any]:
    """Every run's :func:`run_status` and the totals: a count per state, remaining iterations and an ETA
    (remaining iterations of unfinished runs at the running runs' combined rate; None without a rate)."""
    queue = squeue_states() if any(read_job(r.run_dir) for r in runs) else {}
    rows = [run_status(r.run_dir, int(r.config.train.max_iters), queue) for r in runs]
    remaining = sum(max(r["max"] - r["iteration"], 0) for r in rows if r["state"] not in ("done", "failed"))
    rates = [r["it_s"] for r in rows if r["state"] == "running" and r["it_s"]]
    eta = 0.0 if remaining == 0 else (remaining / sum(rates) if rates else None)
    counts = {s.replace(" ", "_"): sum(r["state"] == s for r in rows) for s in STATES}
    return {"total": len(rows), **counts, "remaining_iters": remaining, "eta_s": eta,
            "slurm": queue is not None, "runs": rows}


def status_lines(doc: dict[str, Any]) -> list[str]:
    """A header (``study: 1/4 runs done, 1 running, 2 queued, ETA 0:40``) and one line per running run."""
    counts = ", ".join(f"{doc[s.replace(' ', '_')]} {s}" for s in ("running", "queued", "preempted", "failed")
                       if doc[s.replace(' ', '_')])
    lines = [f"study: {doc['done']}/{doc['total']} runs done{', ' + counts if counts else ''}, "
             f"ETA {format_eta(doc['eta_s'])}"]
    for row in doc["runs"]:
        if row["state"] == "running":
            rate = f"{row['it_s']:.1f} it/s" if row["it_s"] else "? it/s"
            val = f" val {row['val']['metric']} {100 * row['val']['value']:.1f}%" if row["val"] else ""
            lines.append(f"{row['label']} it {row['iteration']}/{row['max']} {rate} ETA {format_eta(row['eta_s'])}"
                         f"{val}" + (f" job {row['job_id']}" if row["job_id"] else ""))
    return lines
