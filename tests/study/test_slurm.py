"""Studies through submitit on a real Slurm cluster (CI starts one with scripts/slurm-local.sh).

Outside CI these tests skip with a reason when no cluster answers; with CI=true they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from proveseg.rundir import RunDir

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}


def _cluster_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mixed", "allocated"))


@pytest.fixture()
def slurm_cluster() -> None:
    if not _cluster_up():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no Slurm cluster answers: .ci/run must start scripts/slurm-local.sh")
        pytest.skip("no Slurm cluster here (sbatch/sinfo missing or no idle node); start one with "
                    "scripts/slurm-local.sh (root)")


def _study(tmp_path: Path, bench: Path, **over: Any) -> Path:
    study: dict[str, Any] = {
        "name": "slurm-test", "results_root": str(tmp_path / "results"),
        "datasets": {"synthetic": {"train": {"root": str(bench / "train")},
                                   "val": {"root": str(bench / "test"), "domains": ["night"]},
                                   "test": {"root": str(bench / "test"), "domains": ["fog"]}}},
        "generators": {"faithful": {"manifest": str(bench / "generated/faithful/manifest.csv")}},
        "strategies": ["baseline", "gen_faithful"], "models": ["unet_micro"], "batch_size": 4,
        "train": {"max_iters": 3, "eval_interval": 100, "log_interval": 1, "num_threads": 1},
        "evaluation": {"n_boot": 20, "batch_size": 2},
        "slurm": {"cpus_per_task": 1, "mem_gb": 1, "timeout_min": 15},
    }
    study.update(over)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proveseg.cli", *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def test_two_run_study_on_slurm(slurm_cluster: None, tiny_benchmark: Path, tmp_path: Path) -> None:
    path = _study(tmp_path, tiny_benchmark)
    done = _cli("run", str(path), "--executor", "slurm")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Bypassing sacct" not in done.stdout + done.stderr  # the driver prints progress, not scheduler noise
    assert "2 runs: 0 already done, 2 done, 0 failed" in done.stdout
    runs = sorted((tmp_path / "results/stage1").glob("*/synthetic/*"))
    assert [r.parts[-3] for r in runs] == ["baseline", "gen_faithful"]
    for run in runs:
        assert RunDir(run).status()[0] == "done"
        assert (run / "metrics.json").exists() and (run / "composition.json").exists()
        assert _json(run / "slurm.json")["preemptions"] == 0
    again = _cli("run", str(path), "--executor", "slurm")  # nothing left to submit
    assert again.returncode == 0 and "2 runs: 2 already done" in again.stdout, again.stdout + again.stderr


def test_two_tasks_on_one_node_equal_torchrun(slurm_cluster: None, tiny_benchmark: Path, tmp_path: Path) -> None:
    path = _study(tmp_path, tiny_benchmark, strategies=["gen_faithful"],
                  train={"max_iters": 4, "eval_interval": 2, "log_interval": 1, "num_threads": 1},
                  slurm={"nodes": 1, "tasks_per_node": 2, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 15})
    done = _cli("run", str(path), "--executor", "slurm")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (run,) = (tmp_path / "results/stage1").glob("gen_faithful/synthetic/*")
    slurm = _json(run / "composition.json")
    assert slurm["requested"]["world_size"] == 2 and slurm["matches_request"]
    consumed = slurm["consumed"]
    assert consumed["samples"] == 4 * 4 * 2  # every rank's batches are counted
    # per-rank compositions equal: rank 0 took 2 real + 2 generated per step, and both ranks together 4 + 4
    assert all((b["real"], b["generated"]) == (2, 2) for b in consumed["first_batches"])
    assert consumed["per_batch_distinct"] == [[4, 4, 0, 0]]
    # disjoint samples within a pass: 16 generated draws (2 ranks x 4 steps x 2) from 24 images, 16 distinct
    assert consumed["per_source"]["faithful"] == consumed["unique_per_source"]["faithful"] == 16
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
           "-m", "proveseg.cli", "train", str(run / "run.yaml"), "--output-dir", str(tmp_path / "torchrun")]
    ref = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    torchrun = _json(tmp_path / "torchrun/composition.json")
    assert slurm["consumed"] == torchrun["consumed"]  # same sequence_sha256, counts and per-batch compositions
    assert slurm["requested"] == torchrun["requested"]
    assert _json(run / "metrics.json")["mIoU"] == _json(tmp_path / "torchrun/metrics.json")["mIoU"]
    val = [r["eval"]["mIoU"] for r in RunDir(run).read_log() if "eval" in r]
    ref_val = [r["eval"]["mIoU"] for r in RunDir(tmp_path / "torchrun").read_log() if "eval" in r]
    assert len(val) == 2 and val == ref_val


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def _log_iteration(run: Path) -> int:
    return max((r.get("iteration", 0) for r in RunDir(run).read_log()), default=0)


def test_usr2_requeues_and_the_driver_reports_one_preemption(slurm_cluster: None, tiny_benchmark: Path,
                                                            tmp_path: Path) -> None:
    """A 2-task run sent USR2 mid-training: requeued, resumed at the same iteration, done; its record equals an
    uninterrupted torchrun run's (each rank resumes its own audit and RNG)."""
    path = _study(tmp_path, tiny_benchmark, strategies=["gen_faithful"],
                  train={"max_iters": 24, "eval_interval": 100, "log_interval": 1, "checkpoint_interval": 1000,
                         "num_threads": 1},
                  slurm={"tasks_per_node": 2, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 15})
    driver = subprocess.Popen([sys.executable, "-m", "proveseg.cli", "run", str(path), "--executor", "slurm"],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "results/stage1/gen_faithful/synthetic/unet_micro_ratio0p50_s0"
    try:
        _wait_for(lambda: _log_iteration(run) >= 2, 300, "the Slurm task to train")
        job = _json(run / "slurm.json")["job_id"]
        subprocess.run(["scancel", "--signal=USR2", "--full", job], check=True, timeout=30)
        _wait_for(lambda: RunDir(run).status()[1].startswith("preempted at iteration"), 120, "the checkpoint")
        stopped = int(RunDir(run).status()[1].split()[3].rstrip(":"))
        out, err = driver.communicate(timeout=600)
    finally:
        driver.kill()
    assert driver.returncode == 0, out[-3000:] + err[-3000:]
    assert 2 <= stopped < 24
    assert "done (preempted 1 time)" in out, out
    assert "Bypassing sacct" not in out + err
    assert _json(run / "slurm.json")["preemptions"] == 1
    assert RunDir(run).status()[0] == "done"
    comp = _json(run / "composition.json")
    assert comp["matches_request"] and comp["consumed"]["iterations"] == 24
    status = _cli("status", str(path), "--json")
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)["runs"]
    assert row["state"] == "done" and row["requeues"] == 1 and row["job_id"] == job
    # the same run uninterrupted under torchrun: the same consumed sequence, counts and test metrics
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "proveseg.cli", "train", str(run / "run.yaml"), "--output-dir", str(tmp_path / "ref")]
    ref = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert comp["consumed"] == _json(tmp_path / "ref/composition.json")["consumed"]
    assert _json(run / "metrics.json")["mIoU"] == _json(tmp_path / "ref/metrics.json")["mIoU"]


def _status(path: Path) -> dict[str, dict[str, Any]]:
    out = _cli("status", str(path), "--json", timeout=120)
    assert out.returncode == 0, out.stderr
    return {Path(r["run_dir"]).name + "/" + Path(r["run_dir"]).parts[-3]: r for r in json.loads(out.stdout)["runs"]}


def _squeue_state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=30).stdout
    return dict(line.split() for line in out.splitlines() if line.strip()).get(job, "GONE")


def test_status_shows_queued_running_done_and_failed_runs(slurm_cluster: None, tiny_benchmark: Path,
                                                          tmp_path: Path) -> None:
    path = _study(tmp_path, tiny_benchmark, seeds=[0, 1],
                  train={"max_iters": 60, "eval_interval": 100, "log_interval": 1, "num_threads": 1},
                  slurm={"cpus_per_task": 1, "mem_gb": 1, "timeout_min": 15, "array_parallelism": 1})
    submitted = _cli("run", str(path), "--executor", "slurm", "--detach", timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "4 queued" in submitted.stdout
    runs = sorted((tmp_path / "results/stage1").glob("*/synthetic/*"))
    jobs = sorted((_json(r / "slurm.json")["job_id"], r) for r in runs)
    array = jobs[0][0].split("_")[0]
    try:
        again = _cli("run", str(path), "--executor", "slurm", timeout=120)  # never a second job for a queued run
        # the first run may have finished meanwhile (a busy machine): then it is done, never submitted again
        summary = re.search(r"4 runs: (\d) already done, 0 done, 0 failed, (\d) skipped", again.stdout)
        assert again.returncode == 0 and summary is not None, again.stdout
        assert int(summary[1]) + int(summary[2]) == 4 and int(summary[1]) <= 1, again.stdout
        assert again.stdout.count("already queued or running as Slurm job") == int(summary[2]), again.stdout
        first, second, third, fourth = (job for job, _ in jobs)
        _wait_for(lambda: RunDir(jobs[0][1]).status()[0] == "done" and _squeue_state(first) == "GONE", 300,
                  "the first run to finish")
        _wait_for(lambda: _squeue_state(second) == "RUNNING", 120, "the second run to start")
        subprocess.run(["scancel", "--signal=KILL", second], check=True, timeout=30)  # its trainer dies at once
        _wait_for(lambda: _squeue_state(third) == "RUNNING", 120, "the third run to start")
        table = _cli("status", str(path), timeout=120)  # the rich table, then the same as JSON, while the 3rd runs
        rows = {row["job_id"]: row for row in _status(path).values()}
        states = {job: rows[job]["state"] for job, _ in jobs}
        assert states == {first: "done", second: "failed", third: "running", fourth: "queued"}, rows
        assert "ended without a result" in rows[second]["reason"]
        assert rows[first]["iteration"] == 60 and rows[fourth]["iteration"] == 0
        assert "JobArrayTaskLimit" in rows[fourth]["reason"]
        assert table.returncode == 0, table.stderr
        lines = {job: next(line for line in table.stdout.splitlines() if f" {job} " in line) for job, _ in jobs}
        for job, state in states.items():
            assert f" {state} " in lines[job], table.stdout
        assert "1 done, 1 running, 1 queued, 1 failed" in " ".join(table.stdout.split()), table.stdout
    finally:
        subprocess.run(["scancel", array], timeout=30)
