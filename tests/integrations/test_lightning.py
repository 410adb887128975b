"""Lightning: the DataModule and Callback give exact 1+1 batches, resume mid-epoch by position, and a ranked run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from proveseg.study.audit import audit_target
from proveseg.study.leaderboard import build_leaderboard
from tests.integrations.conftest import run_dir
from tests.integrations.pl_run import Stopped, fit

ROOT = Path(__file__).resolve().parents[2]


def _composition(results: Path) -> dict:
    return json.loads((run_dir(results) / "composition.json").read_text())


def test_lightning_run_is_exact_resumes_mid_epoch_and_is_ranked(tiny_benchmark: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    fit(tiny_benchmark, whole, tmp_path / "ckpt_whole")
    doc = _composition(whole)
    assert doc["matches_request"], doc["problems"]
    assert doc["consumed"]["per_batch_distinct"] == [[1, 1, 0, 0]] and doc["consumed"]["batches"] == 6
    assert "# trainer: lightning" in (run_dir(whole) / "run.yaml").read_text()

    stopped, ckpt = tmp_path / "stopped", tmp_path / "ckpt_stopped"
    with pytest.raises(Stopped):
        fit(tiny_benchmark, stopped, ckpt, stop_at=4)
    assert _composition(stopped)["consumed"]["batches"] == 4  # written with the checkpoint at step 4
    assert (run_dir(stopped) / "status").read_text().startswith("failed")
    fit(tiny_benchmark, stopped, ckpt, resume_from=ckpt / "step=4.ckpt")  # mid-epoch: an epoch is 14 batches
    again = _composition(stopped)
    assert again["consumed"]["sequence_sha256"] == doc["consumed"]["sequence_sha256"] and again["matches_request"]
    assert again["consumed"]["per_source"] == doc["consumed"]["per_source"]

    assert audit_target(run_dir(whole))["counts"]["verified"] == 1
    board = build_leaderboard(whole, "stage1", n_boot=50)
    assert [r["strategy"] for r in board["rows"]] == ["gen_faithful"] and board["invalid"] == [], board


def test_lightning_ddp_two_processes_get_equal_compositions(tiny_benchmark: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests/integrations/pl_run.py"), str(tiny_benchmark),
                           str(results), str(tmp_path / "ckpt"), "2"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = _composition(results)
    assert doc["requested"]["world_size"] == 2 and doc["matches_request"], doc["problems"]
    assert doc["consumed"]["per_batch_distinct"] == [[2, 2, 0, 0]]  # each rank 1+1, summed over the 2 ranks
    assert doc["consumed"]["samples"] == 6 * 2 * 2
    assert audit_target(run_dir(results))["counts"]["verified"] == 1
