"""Executors: run a study's runs locally (one process each) or on Slurm through submitit.

Both skip runs that are done, resume runs that have a ``last.pt`` and restart the others; with
``force`` a run directory is removed first. A crash of one run never stops the others.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from proveseg.config import dump_config
from proveseg.rundir import RunDir
from proveseg.study.matrix import PlannedRun
from proveseg.study.spec import SlurmSpec

__all__ = ["prepare", "run_local", "run_slurm"]


def prepare(run: PlannedRun, force: bool) -> list[str] | None:
    """Write the run's config; return the ``train`` arguments, or None when it is already done."""
    rd = RunDir(run.run_dir)
    if force and run.run_dir.exists():
        shutil.rmtree(run.run_dir)
    state = rd.status()[0]
    if state == "done":
        return None
    run.run_dir.mkdir(parents=True, exist_ok=True)
    config = run.run_dir / "run.yaml"
    if not rd.last.exists():
        (run.run_dir / "status").unlink(missing_ok=True)  # a failed start without a checkpoint starts over
        config.write_text(dump_config(run.config), encoding="utf-8")
    return ["train", str(config)] + (["--resume"] if rd.last.exists() else [])


def run_local(runs: Sequence[PlannedRun], max_parallel: int = 1, force: bool = False,
              gpus: Sequence[str] | None = None, echo: bool = True) -> dict[str, int]:
    """Run each run in its own ``proveseg train`` process, ``max_parallel`` at a time.

    With ``gpus``, each running process gets one of them through ``CUDA_VISIBLE_DEVICES``.
    Returns run directory -> exit code (0 done, 3 preempted, other failed; -1 skipped as done).
    """
    queue = list(runs)
    codes: dict[str, int] = {}
    active: list[tuple[subprocess.Popen[bytes], PlannedRun, str | None, IO[bytes]]] = []
    free = list(gpus or [])
    while queue or active:
        while queue and len(active) < max(1, max_parallel) and (not gpus or free):
            run = queue.pop(0)
            args = prepare(run, force)
            if args is None:
                codes[str(run.run_dir)] = -1
                continue
            gpu = free.pop(0) if gpus else None
            env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})}
            log: IO[bytes] = (run.run_dir / "train.log").open("ab")
            if echo:
                print(f"start {run.run_dir}", flush=True)
            proc = subprocess.Popen([sys.executable, "-m", "proveseg.cli", *args], env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
            active.append((proc, run, gpu, log))
        time.sleep(0.2)
        for item in list(active):
            proc, run, gpu, log = item
            if proc.poll() is not None:
                log.close()
                active.remove(item)
                codes[str(run.run_dir)] = proc.returncode
                if gpu is not None:
                    free.append(gpu)
                if echo:
                    print(f"{'done' if proc.returncode == 0 else f'exit {proc.returncode}'} {run.run_dir}", flush=True)
    return codes


class SlurmRun:
    """One Slurm array task: train (resuming when ``last.pt`` exists); requeue itself when preempted."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir

    def __call__(self) -> str:
        from proveseg.config import load_run_config
        from proveseg.train.loop import Preempted, train

        rd = RunDir(self.run_dir)
        cfg = load_run_config(Path(self.run_dir) / "run.yaml")
        try:
            train(cfg, resume=rd.last.exists())
        except Preempted:
            job = os.environ.get("SLURM_ARRAY_JOB_ID")
            task = os.environ.get("SLURM_ARRAY_TASK_ID")
            job_id = f"{job}_{task}" if job and task else os.environ.get("SLURM_JOB_ID", "")
            subprocess.run(["scontrol", "requeue", job_id], check=False)
            raise
        return rd.status()[0]


def run_slurm(runs: Sequence[PlannedRun], spec: SlurmSpec, folder: Path, force: bool = False,
              wait: bool = True) -> dict[str, str]:
    """Submit the runs as one submitit job array; with ``wait``, block until every task ends."""
    import submitit

    todo = []
    for run in runs:
        if prepare(run, force) is not None:
            todo.append(run)
    if not todo:
        return {}
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params: dict[str, object] = {"slurm_array_parallelism": spec.array_parallelism, "cpus_per_task": spec.cpus_per_task,
                                 "mem_gb": spec.mem_gb, "timeout_min": spec.timeout_min, "name": "proveseg"}
    if spec.partition:
        params["slurm_partition"] = spec.partition
    if spec.gpus_per_node:
        params["gpus_per_node"] = spec.gpus_per_node
    executor.update_parameters(**params)
    with executor.batch():
        jobs = [executor.submit(SlurmRun(str(run.run_dir))) for run in todo]
    out = {str(run.run_dir): job.job_id for run, job in zip(todo, jobs, strict=True)}
    if wait:
        for run, job in zip(todo, jobs, strict=True):
            try:
                out[str(run.run_dir)] = str(job.result())
            except Exception as exc:  # one failed task does not stop the others
                out[str(run.run_dir)] = f"failed: {type(exc).__name__}: {exc}"[:500]
    return out
