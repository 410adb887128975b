"""``proveseg demo --quick`` end to end: benchmark, six runs, leaderboard, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proveseg.cli import main
from proveseg.study.demo import DEMO_STRATEGIES
from proveseg.study.leaderboard import build_leaderboard


def test_quick_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, results = tmp_path / "data", tmp_path / "results"
    assert main(["demo", "--quick", "--data", str(data), "--results", str(results), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "3/4 leaderboard" in out and "gen_random_noise" in out and "too short to rank" in out
    doc = build_leaderboard(results, "stage1", n_boot=50)
    assert sorted(r["strategy"] for r in doc["rows"]) == sorted(DEMO_STRATEGIES)
    assert doc["invalid"] == []
    for run in results.glob("stage1/*/synthetic/*"):
        comp = json.loads((run / "composition.json").read_text())
        kinds = comp["consumed"]["per_kind"]
        if run.parts[-3] == "baseline":
            assert kinds["generated"] == kinds["noise"] == 0
        else:
            assert kinds["generated"] + kinds["noise"] == kinds["real"] > 0
    assert '<table id="leaderboard">' in (results / "report.html").read_text()
    run = next(results.glob("stage1/baseline/synthetic/*"))  # the demo validates: diagnose has a curve to read
    assert main(["diagnose", str(run), "--json"]) == 0
    assert "no_evaluations" not in {f["name"] for f in json.loads(capsys.readouterr().out)}
    # a second demo reuses the benchmark and skips every finished run
    assert main(["demo", "--quick", "--data", str(data), "--results", str(results)]) == 0
    assert "start " not in capsys.readouterr().out
