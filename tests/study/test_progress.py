"""Study progress read from the runs' own files, and the local executor printing it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from proveseg.study.executors import run_local
from proveseg.study.matrix import expand
from proveseg.study.progress import format_eta, progress_lines, run_progress, study_progress
from proveseg.study.spec import load_study
from tests.reliability.test_proof import _study


def _run(root: Path, name: str, state: str | None, records: list[dict], torn: str = "") -> Path:
    run_dir = root / "stage1" / "baseline" / "synthetic" / name
    run_dir.mkdir(parents=True)
    if state is not None:
        (run_dir / "status").write_text(f"{state}\n")
    text = "".join(json.dumps(r) + "\n" for r in records) + torn
    (run_dir / "log.jsonl").write_text(text)
    return run_dir


def _steps(upto: int, it_s: float = 10.0) -> list[dict]:
    return [{"iteration": i, "loss": 2.0 / i, "lr": 0.01, "it_s": it_s} for i in range(10, upto + 1, 10)]


def _planned(run_dir: Path, max_iters: int) -> SimpleNamespace:
    return SimpleNamespace(run_dir=run_dir, config=SimpleNamespace(train=SimpleNamespace(max_iters=max_iters)))


def test_run_progress_reads_iteration_rate_eta_and_last_validation(tmp_path: Path) -> None:
    records = [*_steps(100, 5.0), {"iteration": 100, "eval": {"mIoU": 0.123, "aAcc": 0.5}}]
    records += [{"iteration": 110, "loss": 1.234, "it_s": 8.0}, {"iteration": 120, "loss": 1.23, "it_s": 10.0}]
    run_dir = _run(tmp_path, "unet_ratio0p00_s0", "running", records, torn='{"iteration": 130, "lo')
    doc = run_progress(run_dir, 300)
    assert doc["state"] == "running" and doc["iteration"] == 120 and doc["max"] == 300
    assert doc["it_s"] == 10.0 and doc["eta_s"] == pytest.approx(18.0) and doc["loss"] == 1.23
    assert doc["val"] == {"metric": "mIoU", "value": 0.123, "iteration": 100}
    assert doc["label"] == "stage1/baseline/synthetic/unet_ratio0p00_s0"


def test_run_progress_of_a_run_not_started_or_without_validation(tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    assert run_progress(empty, 30) | {"run_dir": "", "label": ""} == {
        "run_dir": "", "label": "", "state": "todo", "iteration": 0, "max": 30, "it_s": None, "eta_s": None,
        "loss": None, "val": None}
    doc = run_progress(_run(tmp_path, "a", "running", _steps(20, 4.0)), 100)
    assert doc["val"] is None and doc["eta_s"] == pytest.approx(20.0)


def test_study_progress_counts_and_formats(tmp_path: Path) -> None:
    runs = [_planned(_run(tmp_path, "done", "done", _steps(300)), 300),
            _planned(_run(tmp_path, "failed", "failed", _steps(50)), 300),
            _planned(_run(tmp_path, "one", "running", _steps(100, 10.0)), 300),
            _planned(_run(tmp_path, "two", "running", _steps(200, 30.0)), 300),
            _planned(tmp_path / "stage1" / "baseline" / "synthetic" / "todo", 300)]
    doc = study_progress(runs)
    assert (doc["total"], doc["done"], doc["running"], doc["failed"], doc["todo"]) == (5, 1, 2, 1, 1)
    # remaining 200 + 100 + 300 = 600 iterations at a mean of 20 it/s on 2 runs side by side
    assert doc["remaining_iters"] == 600 and doc["eta_s"] == pytest.approx(15.0)
    lines = progress_lines(doc)
    assert lines[0] == "study: 1/5 runs done, 2 running, 1 failed, ETA 0:15"
    assert lines[1] == "stage1/baseline/synthetic/one it 100/300 10.0 it/s ETA 0:20 loss 0.02"
    assert len(lines) == 3 and lines[2].startswith("stage1/baseline/synthetic/two it 200/300 30.0 it/s ETA 0:03")
    # an executor names its active runs: a stale `running` status elsewhere counts as todo
    doc = study_progress(runs, active=[runs[2].run_dir])
    assert (doc["running"], doc["todo"]) == (1, 2) and doc["eta_s"] == pytest.approx(60.0)
    assert format_eta(400) == "6:40" and format_eta(3723) == "1:02:03" and format_eta(None) == "?"


def test_run_local_prints_progress_lines(tiny_benchmark: Path, tmp_path: Path,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    study = load_study(_study(tmp_path, tiny_benchmark, strategies=["baseline"],
                              train={"max_iters": 30, "checkpoint_interval": 10}))
    runs = expand(study)
    assert len(runs) == 1
    codes = run_local(runs, progress_every=0.5)
    out = capfd.readouterr().out
    assert codes == {str(runs[0].run_dir): 0}, out
    assert f"start {runs[0].run_dir}" in out and f"done {runs[0].run_dir}" in out
    assert re.search(r"^stage1/baseline/synthetic/\S+ it \d+/30 ", out, re.M), out
    assert re.search(r"^study: 0/1 runs done, 1 running, ETA ", out, re.M), out
    # no progress without echo
    codes = run_local(runs, echo=False, progress_every=0.5)
    assert codes == {str(runs[0].run_dir): -1} and capfd.readouterr().out == ""
