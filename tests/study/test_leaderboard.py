"""The leaderboard ranks only proven runs, with paired-bootstrap gains, warnings and ablation readings.

These runs are records written by hand (no run.yaml, nothing to re-derive), so the audit is off here;
tests/reliability/test_proof.py covers the audit and the study checks on trained runs.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from proveseg.cli import main
from proveseg.data.classes import CITYSCAPES19
from proveseg.evaluate.confusion import per_image_confusion
from proveseg.evaluate.runner import EvalResult, write_results
from proveseg.rundir import RunDir
from proveseg.study.leaderboard import build_leaderboard
from proveseg.study.report import write_report

DOMAINS = ["clear_day", "fog", "night"]


def _labels(n: int = 30) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 5, (n, 16, 16)).astype(np.uint8)


def fake_run(root: Path, stage: str, strategy: str, seed: int, error: float, ratio: float = 0.5,
             consumed_generated: int | None = None, kind: str = "generated") -> Path:
    """A finished run directory whose predictions are wrong on a fraction ``error`` of pixels."""
    ratio = 1.0 if strategy == "baseline" else ratio
    run_dir = root / stage / strategy / "synthetic" / f"unet_micro_ratio{ratio:.2f}".replace(".", "p") / ""
    run_dir = run_dir.parent / f"{run_dir.name}_s{seed}"
    rd = RunDir(run_dir)
    rd.create()
    labels = _labels()
    rng = np.random.default_rng([seed, int(error * 1000)])
    preds = np.where(rng.random(labels.shape) < error, (labels + 1) % 5, labels).astype(np.uint8)
    per_image = per_image_confusion(labels, preds, 19)
    domains = [DOMAINS[i % 3] for i in range(len(labels))]
    write_results(run_dir, EvalResult(per_image, domains, [f"img{i}" for i in range(len(labels))]), CITYSCAPES19,
                  n_boot=50)
    total = 800
    gen = int(total * (1 - ratio)) if consumed_generated is None else consumed_generated
    source = strategy.removeprefix("gen_") if kind == "generated" else "random_noise"
    per_kind = {"real": total - gen, "generated": 0, "noise": 0, "unlabeled": 0}
    if strategy != "baseline":
        per_kind[kind] = gen
    rd.write_json("composition.json", {
        "requested": {"real_gen_ratio": ratio, "batch_size": 8},
        "consumed": {"per_kind": per_kind, "per_source": {"synthetic": total - gen, source: gen}, "batches": 100},
        "matches_request": True, "problems": []})
    rd.set_status("done", "100 iterations")
    return run_dir


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    for seed in (0, 1):
        fake_run(tmp_path, "stage1", "baseline", seed, 0.30)
        fake_run(tmp_path, "stage1", "gen_good", seed, 0.10)
        fake_run(tmp_path, "stage1", "gen_bad", seed, 0.45)
        fake_run(tmp_path, "stage1", "gen_random_noise", seed, 0.30, kind="noise")
    fake_run(tmp_path, "stage1", "gen_unused", 0, 0.20, consumed_generated=0)  # the silent failure
    return tmp_path


def test_ranking_gains_and_invalid_runs(results: Path) -> None:
    doc = build_leaderboard(results, "stage1", n_boot=200, audit=False)
    names = [r["strategy"] for r in doc["rows"]]
    assert names[0] == "gen_good" and names[-1] == "gen_bad"
    assert "gen_unused" not in names
    assert doc["invalid"] == [{"run_dir": str(results / "stage1/gen_unused/synthetic/unet_micro_ratio0p50_s0"),
                               "reason": "requested 50.0% generated, consumed 0.0% (0 of 800)"}]
    good = next(r for r in doc["rows"] if r["strategy"] == "gen_good")
    assert good["type"] == "Gen" and good["n_runs"] == 2 and good["gain_ci95"][0] > 0
    bad = next(r for r in doc["rows"] if r["strategy"] == "gen_bad")
    assert bad["gain_ci95"][1] < 0
    base = next(r for r in doc["rows"] if r["strategy"] == "baseline")
    assert base["gain"] == 0.0 and set(base["per_domain"]) == set(DOMAINS)
    assert base["adverse_mIoU"] == pytest.approx(np.mean([base["per_domain"]["fog"], base["per_domain"]["night"]]))
    assert doc["generated_spread"] == pytest.approx(good["mIoU"] - bad["mIoU"])
    for row in doc["rows"]:
        assert set(row) >= {"rank", "strategy", "type", "mIoU", "gain", "gain_ci95", "per_domain", "n_runs"}


def test_failed_and_mismatched_runs_are_invalid(results: Path) -> None:
    run = fake_run(results, "stage1", "gen_extra", 0, 0.2)
    RunDir(run).set_status("failed", "preempted at iteration 5")
    run2 = fake_run(results, "stage1", "gen_other", 0, 0.2)
    comp = json.loads((run2 / "composition.json").read_text())
    RunDir(run2).write_json("composition.json", {**comp, "matches_request": False,
                                                 "problems": ["batch 3: requested 4 real, 4 generated"]})
    invalid = build_leaderboard(results, "stage1", audit=False)["invalid"]
    reasons = {Path(i["run_dir"]).parts[-3]: i["reason"] for i in invalid}
    assert reasons["gen_extra"] == "status failed: preempted at iteration 5"
    assert reasons["gen_other"].startswith("consumed mix differs from the request: batch 3")


def test_warning_when_generated_strategies_cluster_at_the_baseline(tmp_path: Path) -> None:
    for seed in (0, 1):
        fake_run(tmp_path, "stage1", "baseline", seed, 0.30)
        fake_run(tmp_path, "stage1", "gen_a", seed, 0.301)
        fake_run(tmp_path, "stage1", "gen_b", seed, 0.299)
    warnings = build_leaderboard(tmp_path, "stage1", n_boot=200, audit=False)["warnings"]
    assert any("gen_a, gen_b cluster within the noise of the baseline" in w for w in warnings)


def test_noise_ablation_outcome(tmp_path: Path) -> None:
    for seed in (0, 1):
        fake_run(tmp_path, "noise-ablation", "baseline", seed, 0.30)
        fake_run(tmp_path, "noise-ablation", "gen_good", seed, 0.10)
        fake_run(tmp_path, "noise-ablation", "gen_random_noise", seed, 0.30, kind="noise")
    doc = build_leaderboard(tmp_path, "noise-ablation", n_boot=200, audit=False)
    assert doc["noise_ablation"]["outcome"] == "noise ≈ baseline < generator"


def test_formats_and_repeatability(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["leaderboard", str(results), "--stage", "stage1", "--format", "json", "--no-audit"]) == 0
    first = capsys.readouterr().out
    assert main(["leaderboard", str(results), "--stage", "stage1", "--format", "json", "--no-audit"]) == 0
    assert capsys.readouterr().out == first  # rebuilt twice: identical
    assert main(["leaderboard", str(results), "--stage", "stage1", "--format", "csv", "--no-audit"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["strategy"] == "gen_good" and float(rows[0]["gain_lo"]) > 0
    assert main(["leaderboard", str(results), "--stage", "stage1", "--format", "md", "--no-audit"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("| rank | strategy |") and "INVALID `" in md
    assert main(["leaderboard", str(results), "--stage", "stage1", "--no-audit"]) == 0
    assert "INVALID" in capsys.readouterr().out


def test_report_is_self_contained(results: Path) -> None:
    out = write_report(results, results / "report.html", "stage1", audit=False)
    page = out.read_text()
    assert '<table id="leaderboard">' in page and "gen_good" in page and "data:image/png;base64," in page
    assert "requested 50.0% generated, consumed 0.0%" in page
    assert "http://" not in page and "https://" not in page
