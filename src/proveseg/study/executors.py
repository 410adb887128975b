"""Executors: run a study's runs locally (one process each) or on Slurm through submitit.

Both skip runs that are done, resume runs that have a ``last.pt`` and restart the others; with
``force`` a run directory is emptied first. A crash of one run never stops the others. One writer
per run directory: a run is prepared under its :class:`~proveseg.rundir.RunLock`, which the local
executor hands to the trainer process it starts, so a second ``proveseg run`` of the same study
skips (and reports) what the first one holds. A run whose ``run.yaml`` differs from what the study
plans now (the study was edited after the run started) is refused with the fields that changed.
Stopping ``proveseg run`` (SIGTERM, SIGINT, SIGHUP; or SIGKILL, through the kernel's parent-death
signal) stops its trainers at their next step boundary with ``last.pt`` saved.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from proveseg.config import dump_config
from proveseg.rundir import LOCK_FD_ENV, LOCKED_EXIT, RunDir, RunLock, RunLocked
from proveseg.study.matrix import PlannedRun
from proveseg.study.progress import progress_lines, study_progress
from proveseg.study.reference import run_differences
from proveseg.study.slurm import SlurmRun, SlurmWatch, quiet_submitit, read_job, record_submission, squeue_states
from proveseg.study.spec import SlurmSpec

__all__ = ["CHANGED", "DONE", "LOCKED", "STOPPED", "SlurmRun", "StudyChanged", "changed_fields", "prepare",
           "run_local", "run_slurm"]

DONE, LOCKED, CHANGED, STOPPED = -1, -2, -3, -4  # run_local's codes besides a trainer's exit code


class StudyChanged(RuntimeError):
    """The run directory holds a run of other settings than the study plans now."""


def changed_fields(run: PlannedRun) -> list[str]:
    """How the run's existing ``run.yaml`` differs from what the study plans now ([] when it does not exist)."""
    return run_differences(run.run_dir, run.config)


def _empty(run_dir: Path) -> None:
    """Remove everything in a run directory but its lock file (which the caller holds)."""
    for child in run_dir.iterdir():
        if child.name == ".lock":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def prepare(run: PlannedRun, force: bool) -> list[str] | None:
    """Write the run's config; the ``train`` arguments, or None when it is done. The caller holds the run's lock.

    Raises StudyChanged when a done or resumable run was made with other settings than the study's now.
    """
    rd = RunDir(run.run_dir)
    if force and run.run_dir.exists():
        _empty(run.run_dir)
    state = rd.status()[0]
    if state == "done" or rd.last.exists():
        diffs = changed_fields(run)
        if diffs:
            raise StudyChanged(f"{run.run_dir}: the study changed since this run started ({'; '.join(diffs[:3])}); "
                               "resuming would mix two settings: rerun it with --force, or give it a new seed")
    if state == "done":
        return None
    run.run_dir.mkdir(parents=True, exist_ok=True)
    config = run.run_dir / "run.yaml"
    if not rd.last.exists():
        (run.run_dir / "status").unlink(missing_ok=True)  # a failed start without a checkpoint starts over
        config.write_text(dump_config(run.config), encoding="utf-8")
    return ["train", str(config)] + (["--resume"] if rd.last.exists() else [])


def _die_with_parent() -> None:
    """In the child: SIGTERM when the parent dies, even by SIGKILL (Linux PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class _Active:
    proc: subprocess.Popen[bytes]
    run: PlannedRun
    gpu: str | None
    log: IO[bytes]


@dataclass
class _LocalRunner:
    max_parallel: int
    force: bool
    gpus: list[str] | None
    echo: bool
    progress_every: float = 5.0
    codes: dict[str, int] = field(default_factory=dict)
    active: list[_Active] = field(default_factory=list)
    stopping: bool = False
    queue: Any = None  # _Queue: the Slurm jobs of runs submitted with --executor slurm
    live: Any = None  # a rich Live showing the progress lines when stdout is a terminal
    next_progress: float = 0.0

    def say(self, text: str) -> None:
        if self.echo:
            print(text, flush=True)

    def open_display(self) -> None:
        """Show progress in place (rich ``Live``) when stdout is a terminal; else print it every ``progress_every``."""
        self.next_progress = time.monotonic() + self.progress_every
        if self.echo and sys.stdout.isatty():
            from rich.live import Live
            from rich.text import Text

            self.live = Live(Text(""), refresh_per_second=2, transient=True)
            self.live.start()
            self.next_progress = time.monotonic() + min(self.progress_every, 1.0)

    def close_display(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def show_progress(self, runs: Sequence[PlannedRun]) -> None:
        """The study header and a line per active run, read from the runs' files (never stops the runs)."""
        if not self.echo or time.monotonic() < self.next_progress:
            return
        self.next_progress = time.monotonic() + (min(self.progress_every, 1.0) if self.live else self.progress_every)
        try:
            lines = progress_lines(study_progress(runs, [a.run.run_dir for a in self.active])) if self.active else []
        except Exception as exc:  # a progress display never fails the study
            lines = [f"progress unavailable: {type(exc).__name__}: {exc}"]
        if self.live is not None:
            from rich.text import Text

            self.live.update(Text("\n".join(lines)))
        elif lines:
            print("\n".join(lines), flush=True)

    def start(self, run: PlannedRun) -> None:
        """Take the run's lock, prepare it and hand the lock to its trainer process (or record why not)."""
        key = str(run.run_dir)
        job = self.queue.active_job(run)
        if job is not None:  # a Slurm job of this run is queued or running: it is that job's to train
            self.codes[key] = LOCKED
            self.say(f"skip {run.run_dir}: queued or running as Slurm job {job}")
            return
        lock = RunLock(run.run_dir)
        try:
            lock.acquire()
        except RunLocked as exc:
            self.codes[key] = LOCKED
            self.say(f"skip {run.run_dir}: {exc}")
            return
        try:
            args = prepare(run, self.force)
        except StudyChanged as exc:
            lock.release()
            self.codes[key] = CHANGED
            self.say(f"refused {exc}")
            return
        if args is None:
            lock.release()
            self.codes[key] = DONE
            return
        gpu = self.gpus.pop(0) if self.gpus is not None else None
        assert lock.fd is not None
        env = {**os.environ, LOCK_FD_ENV: str(lock.fd), **({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})}
        log: IO[bytes] = (run.run_dir / "train.log").open("ab")
        self.say(f"start {run.run_dir}")
        proc = subprocess.Popen([sys.executable, "-m", "proveseg.cli", *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT, pass_fds=(lock.fd,), preexec_fn=_die_with_parent)
        lock.release()  # the trainer holds it now (the same open file, inherited)
        self.active.append(_Active(proc, run, gpu, log))
        if self.stopping:  # a stop that arrived while this run was prepared reaches its trainer too
            proc.send_signal(signal.SIGTERM)

    def reap(self) -> None:
        for item in list(self.active):
            code = item.proc.poll()
            if code is None:
                continue
            item.log.close()
            self.active.remove(item)
            self.codes[str(item.run.run_dir)] = LOCKED if code == LOCKED_EXIT else code
            if item.gpu is not None and self.gpus is not None:
                self.gpus.append(item.gpu)
            self.say(f"{'done' if code == 0 else f'exit {code}'} {item.run.run_dir}")

    def stop(self, signum: int, frame: FrameType | None) -> None:
        """Stop starting runs and ask the running trainers to checkpoint and exit."""
        self.stopping = True
        for item in self.active:
            item.proc.send_signal(signal.SIGTERM)


def run_local(runs: Sequence[PlannedRun], max_parallel: int = 1, force: bool = False,
              gpus: Sequence[str] | None = None, echo: bool = True, progress_every: float = 5.0) -> dict[str, int]:
    """Run each run in its own ``proveseg train`` process, ``max_parallel`` at a time.

    With ``gpus``, each running process gets one of them through ``CUDA_VISIBLE_DEVICES``.
    Returns run directory -> exit code (0 done, 3 preempted, other failed) or DONE (already done),
    LOCKED (another process holds it), CHANGED (the study changed since it started), STOPPED (not
    started because this executor was stopped). With ``echo``, it prints ``start``/``done`` lines
    and, while runs are active, the study's progress (:mod:`proveseg.study.progress`): every
    ``progress_every`` seconds, or in place (at least every second) when stdout is a terminal.
    """
    runner = _LocalRunner(max(1, max_parallel), force, list(gpus) if gpus else None, echo, progress_every,
                          queue=_Queue())
    queue = list(runs)
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, runner.stop) for s in signals}
    runner.open_display()
    try:
        while (queue and not runner.stopping) or runner.active:
            while queue and not runner.stopping and len(runner.active) < runner.max_parallel and (
                    runner.gpus is None or runner.gpus):
                runner.start(queue.pop(0))
            time.sleep(0.2)
            runner.reap()
            runner.show_progress(runs)
    finally:
        runner.close_display()
        for s, handler in previous.items():
            signal.signal(s, handler)
    for run in queue:
        runner.codes[str(run.run_dir)] = STOPPED
    return runner.codes


class _Queue:
    """``squeue``, asked at most once per executor call and only when a run has a Slurm job recorded."""

    def __init__(self) -> None:
        self.asked = False
        self.states: dict[str, tuple[str, str]] | None = None

    def active_job(self, run: PlannedRun) -> str | None:
        """The Slurm job id of this run when it is queued or running (``slurm.json`` + ``squeue``), else None."""
        job = read_job(run.run_dir)
        if job is None:
            return None
        if not self.asked:
            self.asked, self.states = True, squeue_states()
        if self.states is None:  # the scheduler does not answer: never start a run whose job may be queued
            return str(job["job_id"])
        return str(job["job_id"]) if str(job["job_id"]) in self.states else None


def _prepare_locked(run: PlannedRun, force: bool, queue: _Queue) -> tuple[bool, str]:
    """(submit?, why not) for one run, prepared under its lock (released before submission)."""
    job = queue.active_job(run)
    if job is not None:
        return False, f"skipped: already queued or running as Slurm job {job}"
    try:
        with RunLock(run.run_dir):
            return prepare(run, force) is not None, "done"
    except RunLocked as exc:
        return False, f"skipped: {exc}"
    except StudyChanged as exc:
        return False, f"refused: {exc}"


def _executor(spec: SlurmSpec, folder: Path) -> Any:
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm", slurm_max_num_timeout=spec.max_timeouts)
    params: dict[str, object] = {
        "slurm_array_parallelism": spec.array_parallelism, "nodes": spec.nodes, "tasks_per_node": spec.ranks_per_node,
        "cpus_per_task": spec.cpus_per_task, "mem_gb": spec.mem_gb, "timeout_min": spec.timeout_min,
        "slurm_signal_delay_s": spec.signal_delay_s, "name": "proveseg",
        # the batch shell survives a USR2 sent to the whole job (scancel --full); the tasks checkpoint on it
        "slurm_setup": ["trap 'true' USR2"]}
    if spec.partition:
        params["slurm_partition"] = spec.partition
    if spec.gpus_per_node:
        params["gpus_per_node"] = spec.gpus_per_node
    executor.update_parameters(**params)
    return executor


def run_slurm(runs: Sequence[PlannedRun], spec: SlurmSpec, folder: Path, force: bool = False,
              wait: bool = True, echo: bool = False, poll_s: float = 5.0) -> dict[str, str]:
    """Submit the runs that are not done, queued or running as one submitit job array (``spec.world_size``
    ranks each) and record each job in its run directory; with ``wait``, follow every job (requeues
    included) to its end.

    Returns run directory -> ``done`` (with ``(preempted N times)`` when it was), ``failed: REASON``,
    ``skipped: ...``, ``refused: ...`` or, without ``wait``, ``queued JOB``. With ``echo`` it prints
    the study's progress and each job's state changes (submitit's sacct warnings are filtered out).
    """
    quiet_submitit()
    todo, out, queue = [], {}, _Queue()
    for run in runs:
        submit, why = _prepare_locked(run, force, queue)
        if submit:
            todo.append(run)
        elif why != "done":
            out[str(run.run_dir)] = why
    if not todo:
        return out
    executor = _executor(spec, folder)
    with executor.batch():
        jobs = [executor.submit(SlurmRun(str(run.run_dir))) for run in todo]
    for run, job in zip(todo, jobs, strict=True):
        record_submission(run.run_dir, job.job_id, folder, spec.world_size)
        out[str(run.run_dir)] = f"queued {job.job_id}"
        if echo:
            print(f"queued {job.job_id}  {run.run_dir}", flush=True)
    if wait:
        out.update(SlurmWatch(list(zip(todo, jobs, strict=True)), runs, echo, poll_s).follow())
    return out
