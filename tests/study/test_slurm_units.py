"""The Slurm executor's pieces that need no cluster: spec, job records, status states, quiet driver logging."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from proveseg.render import slurm_summary, status_table
from proveseg.rundir import RunDir
from proveseg.study import status as status_module
from proveseg.study.slurm import quiet_submitit, read_job, record_preemption, record_submission
from proveseg.study.spec import SlurmSpec
from proveseg.study.status import run_status


def test_slurm_spec_ranks() -> None:
    assert SlurmSpec().world_size == 1
    assert SlurmSpec(nodes=2, gpus_per_node=8).world_size == 16  # one rank per GPU
    assert SlurmSpec(tasks_per_node=2).world_size == 2  # CPU ranks (gloo)
    with pytest.raises(ValidationError, match="tasks_per_node 4 != gpus_per_node 2"):
        SlurmSpec(gpus_per_node=2, tasks_per_node=4)


def test_job_record_counts_preemptions(tmp_path: Path) -> None:
    assert read_job(tmp_path) is None
    record_submission(tmp_path, "12_3", tmp_path / ".submitit", 2)
    assert record_preemption(tmp_path) == 1 and record_preemption(tmp_path) == 2
    job = read_job(tmp_path)
    assert job is not None and job["job_id"] == "12_3" and job["tasks"] == 2 and job["preemptions"] == 2


def test_sacct_warnings_are_silenced_but_errors_kept(caplog: pytest.LogCaptureFixture) -> None:
    quiet_submitit()
    log = logging.getLogger("submitit")
    with caplog.at_level(logging.INFO, logger="submitit"):
        log.warning("Call #3 - Bypassing sacct error Command '['sacct']' returned non-zero exit status 1., "
                    "status may be inaccurate.")
        log.error("Submitted job triggered an exception")
        log.warning("Bypassing state error: something else")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["Submitted job triggered an exception", "Bypassing state error: something else"]


def _run(root: Path, state: str | None, reason: str = "", last: bool = False) -> Path:
    rd = RunDir(root)
    rd.create()
    if state:
        rd.set_status(state, reason)
    if last:
        rd.last.write_bytes(b"x")
    return root


def test_status_of_runs_without_a_scheduler(tmp_path: Path) -> None:
    assert run_status(_run(tmp_path / "a", None), 10, {})["state"] == "not started"
    assert run_status(_run(tmp_path / "b", "done", "10 iterations"), 10, {})["iteration"] == 10
    row = run_status(_run(tmp_path / "c", "failed", "preempted at iteration 4: last.pt saved", True), 10, {})
    assert row["state"] == "preempted" and row["reason"].startswith("preempted at iteration 4")
    assert run_status(_run(tmp_path / "d", "failed", "Diverged: loss nan"), 10, {})["state"] == "failed"
    row = run_status(_run(tmp_path / "e", "running", "", True), 10, {})  # a trainer that died, last.pt kept
    assert row["state"] == "preempted" and "interrupted" in row["reason"]


def test_status_of_slurm_jobs(tmp_path: Path) -> None:
    run = _run(tmp_path / "r", "running")
    record_submission(run, "7_1", tmp_path / ".submitit", 1)
    assert run_status(run, 10, {"7_1": ("RUNNING", "None")})["state"] == "running"
    record_preemption(run)
    row = run_status(run, 10, {"7_1": ("PENDING", "BeginTime")})
    assert row["state"] == "queued" and row["requeues"] == 1 and "BeginTime" in row["reason"]
    assert run_status(run, 10, None)["state"] == "running"  # squeue does not answer: the run's files decide
    row = run_status(run, 10, {})  # left the queue without a result file
    assert row["state"] == "failed" and "ended without a result" in row["reason"] and row["job_id"] == "7_1"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from proveseg.rundir import RunLock; "
                               f"RunLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:  # the job ended, and a local `proveseg run` trains the run now: running, not failed
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        row = run_status(run, 10, {})
        assert row["state"] == "running" and "7_1 has ended" in row["reason"]
        assert "holds the run's lock" in row["reason"]
    finally:
        holder.kill()
        holder.wait()


def test_status_table_and_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Cfg:
        class train:
            max_iters = 10

    class Run:
        def __init__(self, root: Path) -> None:
            self.run_dir, self.config = root, Cfg()

    monkeypatch.setattr(status_module, "squeue_states", lambda: {})
    runs = [Run(_run(tmp_path / "s1/x/y/a", "done", "10 iterations")), Run(_run(tmp_path / "s1/x/y/b", None))]
    doc = status_module.study_status(runs)
    assert (doc["done"], doc["not_started"], doc["remaining_iters"]) == (1, 1, 10)
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(status_table(doc, "t"))
    text = console.export_text()
    assert "not started" in text and "1 done, 1 not started" in text
    summary = slurm_summary({"a": "done (preempted 1 time)", "b": "failed: boom"}, 3)
    assert summary.splitlines()[-1] == "3 runs: 1 already done, 1 done, 1 failed (1 after preemption)"


def test_no_executor_starts_a_run_whose_slurm_job_is_queued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from proveseg.study import executors

    run = SimpleNamespace(run_dir=tmp_path / "run")
    run.run_dir.mkdir()
    record_submission(run.run_dir, "9_0", tmp_path / ".submitit", 1)
    monkeypatch.setattr(executors, "squeue_states", lambda: {"9_0": ("PENDING", "Priority")})
    assert executors.run_local([run], echo=False) == {str(run.run_dir): executors.LOCKED}  # type: ignore[list-item]
    assert executors.run_slurm([run], SlurmSpec(), tmp_path / ".submitit") == {  # type: ignore[list-item]
        str(run.run_dir): "skipped: already queued or running as Slurm job 9_0"}
    assert not (run.run_dir / "run.yaml").exists()  # nothing was prepared
