"""One run as a Slurm job through submitit: the task, its job record, and what the scheduler says of it.

The task (:class:`SlurmRun`) is a ``submitit.helpers.Checkpointable``. With several tasks per job
it exports the torch.distributed environment from Slurm's (``submitit.helpers.TorchDistributedEnvironment``:
MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK), so the trainer starts exactly as under ``torchrun``.
On SIGUSR2 (Slurm's warning before a time limit, or a preemption) the trainer stops at the next step
boundary with ``last.pt`` saved, and rank 0 then hands over to submitit's own handler, which calls
:meth:`SlurmRun.checkpoint` (a fresh task that resumes from ``last.pt``), requeues the job and exits
without a result, so the driver's ``job.result()`` follows the requeued job to its end.

Each submitted run records its job in ``<run_dir>/slurm.json`` (job id, submitit folder, tasks,
preemptions), so ``proveseg status`` and a later ``proveseg run`` can find it. Accounting (sacct)
is often disabled on small clusters: the job's state is read from ``squeue`` (while it is known to
the scheduler) and from submitit's result files (after it ended) instead.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from proveseg.atomic import atomic_write_json
from proveseg.config import load_run_config
from proveseg.rundir import RunDir, RunLocked

__all__ = ["JOB_FILE", "SlurmRun", "SlurmWatch", "job_outcome", "quiet_submitit", "read_job", "record_preemption",
           "record_submission", "squeue_states"]

JOB_FILE = "slurm.json"
QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESV_DEL_HOLD"}


def read_job(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``slurm.json`` (``job_id``, ``folder``, ``tasks``, ``preemptions``, ``submitted``), or None."""
    path = Path(run_dir) / JOB_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("job_id") else None


def record_submission(run_dir: str | Path, job_id: str, folder: Path, tasks: int) -> None:
    """Write ``slurm.json`` for a run just submitted (its preemption count starts at 0)."""
    atomic_write_json(Path(run_dir) / JOB_FILE, {"job_id": job_id, "folder": str(Path(folder).resolve()),
                                                 "tasks": tasks, "preemptions": 0, "submitted": time.time()})


def record_preemption(run_dir: str | Path) -> int:
    """Count one more preemption (or time limit) in ``slurm.json``; returns the new count."""
    doc = read_job(run_dir) or {"job_id": os.environ.get("SLURM_JOB_ID", "?"), "folder": "", "tasks": 1}
    doc["preemptions"] = int(doc.get("preemptions", 0)) + 1
    atomic_write_json(Path(run_dir) / JOB_FILE, doc)
    return int(doc["preemptions"])


class SlurmRun(submitit.helpers.Checkpointable):
    """One run as a Slurm job (one task per rank): train, resuming when ``last.pt`` exists."""

    def __init__(self, run_dir: str, preemptions: int = 0) -> None:
        self.run_dir = run_dir
        self.preemptions = preemptions

    def __call__(self) -> dict[str, Any]:
        from proveseg.train.loop import Preempted, train

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # the env:// variables torchrun would set; every GPU of the node stays visible
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's checkpoint-and-requeue handler
        rd = RunDir(self.run_dir)
        cfg = load_run_config(Path(self.run_dir) / "run.yaml")
        try:
            train(cfg, resume=rd.last.exists())
        except RunLocked as exc:
            return {"state": "skipped", "reason": str(exc), "preemptions": self.preemptions}
        except Preempted as exc:
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # one checkpoint per allocation, however many signals
            self._hand_over(exc, env.global_rank, requeue)
        state, reason = rd.status()
        return {"state": state, "reason": reason, "preemptions": self.preemptions}

    def _hand_over(self, exc: Exception, rank: int, requeue: Any) -> None:
        """After a stop at a step boundary: rank 0 lets submitit checkpoint and requeue; other ranks wait for it."""
        if getattr(exc, "signum", None) == signal.SIGTERM:  # a cancel, or Slurm requeueing the job itself
            sys.exit(1)  # no result: the job is over or comes back
        if rank == 0 and callable(requeue):
            requeue(signal.SIGUSR2, None)  # calls self.checkpoint(), `scontrol requeue`, then exits
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # submitit ignores SIGTERM: the requeue's kill must end us
        time.sleep(120)  # the requeue ends this task; a result written here would end the job for the driver
        sys.exit(1)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """The task to requeue: the same run, resuming from ``last.pt``; the preemption is counted first."""
        count = record_preemption(self.run_dir)
        return submitit.helpers.DelayedSubmission(SlurmRun(self.run_dir, count))


class _NoSacctNoise(logging.Filter):
    """Drops submitit's warnings about a missing accounting database (sacct); keeps every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and "Bypassing sacct error" in record.getMessage())


def quiet_submitit() -> None:
    """Silence submitit's per-poll sacct warnings in the driver (accounting disabled); real errors still show."""
    log = logging.getLogger("submitit")
    if not any(isinstance(f, _NoSacctNoise) for f in log.filters):
        log.addFilter(_NoSacctNoise())


def squeue_states() -> dict[str, tuple[str, str]] | None:
    """Job id (array tasks one by one) -> (state, reason) of every job Slurm knows now; None when squeue fails."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    states = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


def job_outcome(job: dict[str, Any]) -> tuple[str, str] | None:
    """(``success``|``error``, detail) from the result file submitit wrote for rank 0; None when there is none."""
    paths = submitit.core.utils.JobPaths(job.get("folder", ""), job_id=str(job["job_id"]), task_id=0)
    if not paths.result_pickle.exists():
        return None
    try:
        outcome, value = submitit.core.utils.pickle_load(paths.result_pickle)
    except Exception as exc:  # a torn or foreign file: say so instead of failing the caller
        return "error", f"unreadable result {paths.result_pickle}: {type(exc).__name__}"
    if outcome == "success":
        return "success", json.dumps(value, sort_keys=True, default=str)
    lines = [x for x in str(value).strip().splitlines() if x.strip()]
    return "error", lines[-1].strip() if lines else "error"


def _final(outcome: tuple[str, str], job: Any) -> str:
    """``done`` / ``done (preempted N times)`` / ``failed: REASON`` from rank 0's result (submitit's ``result()``)."""
    try:
        value = job.task(0).result() if len(getattr(job, "_sub_jobs", [])) > 1 else job.result()
    except Exception:  # the task raised: its last traceback line is the reason
        return f"failed: {outcome[1]}"[:500]
    if isinstance(value, list):
        value = value[0]
    n = int(value.get("preemptions", 0)) if isinstance(value, dict) else 0
    state = value.get("state") if isinstance(value, dict) else str(value)
    if state == "done":
        return "done" + (f" (preempted {n} time{'s' if n != 1 else ''})" if n else "")
    if state == "skipped":
        return f"skipped: {value.get('reason', '')}"
    return f"failed: {value.get('reason') or state}"[:500] if isinstance(value, dict) else f"failed: {state}"


class SlurmWatch:
    """Follows submitted runs to their end: the scheduler's state from ``squeue``, the result from submitit's files.

    A job that is requeued (preempted, or past its time limit) stays in the queue under the same id, so
    it is followed to the end of its last allocation; a job that left the queue without a result
    (cancelled, killed, out of memory) is reported failed with its log's path.
    """

    def __init__(self, submitted: list[tuple[Any, Any]], runs: Any, echo: bool, poll_s: float,
                 progress_every: float = 15.0) -> None:
        self.pending = {str(run.run_dir): (run, job) for run, job in submitted}
        self.runs, self.echo, self.poll_s, self.progress_every = runs, echo, poll_s, progress_every
        self.seen: dict[str, str] = dict.fromkeys(self.pending, "queued")  # run_slurm said so at submission
        self.preempted: dict[str, int] = {}
        self.gone: dict[str, int] = {}
        self.next_progress = time.monotonic() + progress_every
        self.shown = ""

    def say(self, text: str) -> None:
        if self.echo:
            print(text, flush=True)

    def follow(self) -> dict[str, str]:
        out: dict[str, str] = {}
        while self.pending:
            states = squeue_states()
            for key, (run, job) in list(self.pending.items()):
                result = self._poll(key, job, states)
                if result is not None:
                    out[key] = result
                    del self.pending[key]
                    self.say(f"{result.split(':')[0]} {job.job_id}  {run.run_dir}"
                             + (f": {result.split(':', 1)[1].strip()}" if result.startswith("failed") else ""))
            if self.pending:
                self._progress()
                time.sleep(self.poll_s)
        return out

    def _poll(self, key: str, job: Any, states: dict[str, tuple[str, str]] | None) -> str | None:
        record = read_job(key) or {"job_id": job.job_id, "folder": str(job.paths.folder)}
        count = int(record.get("preemptions", 0))
        if count > self.preempted.get(key, 0):
            self.preempted[key] = count
            self.say(f"requeued {job.job_id}  {key}: preempted or at its time limit, checkpointed "
                     f"({count} time{'s' if count != 1 else ''} so far)")
        if states is None:
            return None  # the scheduler does not answer now: ask again
        if job.job_id in states:
            if states[job.job_id][0] == "COMPLETING":  # ending (or being requeued): the next poll tells which
                return None
            state = "running" if states[job.job_id][0] == "RUNNING" else "queued"
            if self.seen.get(key) != state:
                self.seen[key] = state
                self.say(f"{state} {job.job_id}  {key}")
            return None
        outcome = job_outcome({**record, "job_id": job.job_id})
        if outcome is not None:
            return _final(outcome, job)
        self.gone[key] = self.gone.get(key, 0) + 1
        if self.gone[key] < 3:  # a result file may reach a shared filesystem after the job left the queue
            return None
        return (f"failed: Slurm job {job.job_id} ended without a result (cancelled, killed or out of memory); "
                f"see {job.paths.stderr}")

    def _progress(self) -> None:
        if not self.echo or time.monotonic() < self.next_progress:
            return
        self.next_progress = time.monotonic() + self.progress_every
        from proveseg.study.status import status_lines, study_status

        try:
            text = "\n".join(status_lines(study_status(self.runs)))
        except Exception as exc:  # a progress display never stops the driver
            text = f"progress unavailable: {type(exc).__name__}: {exc}"
        if text != self.shown:
            self.shown = text
            print(text, flush=True)
