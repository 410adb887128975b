"""The proof cannot be fooled with ordinary commands (issue: a proof that cannot be fooled).

Each test is one way a careless or hostile user broke it before: a run trained into another run's
folder, a diverged run, a study edited under a half-trained run, ratios that shared a folder, two
executors on one study, a killed executor, hand-edited records; plus the audit's verdicts.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from proveseg.cli import main
from proveseg.data.pipeline import build_training_data
from proveseg.data.records import KINDS
from proveseg.rundir import RunDir, RunLock
from proveseg.study.audit import audit_run, rederive_consumption
from proveseg.study.leaderboard import build_leaderboard
from proveseg.study.matrix import expand
from proveseg.study.reference import store_study
from proveseg.study.spec import load_study
from proveseg.train.loop import Preempted, train
from tests.study.test_leaderboard import fake_run

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}


def _study(tmp_path: Path, root: Path, name: str = "study.yaml", **over: object) -> Path:
    train_cfg = {"max_iters": 3, "eval_interval": 100, "checkpoint_interval": 1, "log_interval": 1, "num_threads": 1}
    doc = {"name": "proof", "results_root": str(tmp_path / "results"),
           "datasets": {"synthetic": {"train": {"root": str(root / "train")},
                                      "test": {"root": str(root / "test"), "domains": ["fog"]}}},
           "generators": {"faithful": {"manifest": str(root / "generated/faithful/manifest.csv")}},
           "strategies": ["baseline", "gen_faithful"], "models": ["unet_micro"], "seeds": [0], "batch_size": 4,
           "train": train_cfg, "evaluation": {"n_boot": 20, "batch_size": 2}}
    for key, value in over.items():
        doc[key] = {**doc[key], **value} if isinstance(value, dict) and isinstance(doc.get(key), dict) else value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def trained(tiny_benchmark: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stored two-run study (baseline, gen_faithful), trained: the reference results every test copies."""
    tmp = tmp_path_factory.mktemp("trained")
    study = load_study(_study(tmp, tiny_benchmark))
    store_study(study)
    for run in expand(study):
        train(run.config)
    return tmp / "results"


def _copy(trained: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(trained, tmp_path / "results")
    return tmp_path / "results"


def _reason(doc: dict, strategy: str) -> str:
    return next(i["reason"] for i in doc["invalid"] if f"/{strategy}/" in i["run_dir"])


def test_the_trained_study_is_verified_and_ranked(trained: Path) -> None:
    doc = build_leaderboard(trained, "stage1", n_boot=20)
    assert doc["invalid"] == [] and doc["studies"] == ["proof"] and doc["audited"] is True
    assert {r["strategy"] for r in doc["rows"]} == {"baseline", "gen_faithful"}
    assert all(audit_run(p).verdict == "verified" for p in trained.glob("stage1/*/*/*"))


def test_a_real_only_run_trained_into_a_generated_strategys_folder_is_not_ranked(
        trained: Path, tiny_benchmark: Path, tmp_path: Path) -> None:
    results = _copy(trained, tmp_path)
    study = load_study(_study(tmp_path, tiny_benchmark))
    planned = next(r for r in expand(study) if r.strategy == "gen_faithful")
    import shutil

    shutil.rmtree(planned.run_dir)
    impostor = planned.config.model_copy(update={"data": planned.config.data.model_copy(update={"real_gen_ratio": 1.0}),
                                                 "study": None})
    train(impostor)  # `proveseg train` of a real-only config into the study's gen_faithful/..._ratio0p50_s0 folder
    reason = _reason(build_leaderboard(results, "stage1", n_boot=20), "gen_faithful")
    assert reason.startswith("run.yaml differs from study proof: data.real_gen_ratio: 0.5 expected, 1.0 found")
    for copy in (results / ".studies").glob("*.yaml"):  # no study at hand: the folder name and the strategy catch it
        copy.unlink()
    reason = _reason(build_leaderboard(results, "stage1", n_boot=20), "gen_faithful")
    assert "folder name and run.yaml disagree: ratio 0.5 in the folder name, 1.0 in run.yaml" in reason


def test_a_diverged_run_fails_and_never_reports(tiny_benchmark: Path, tmp_path: Path) -> None:
    study = load_study(_study(tmp_path, tiny_benchmark, train={"max_iters": 8, "optimizer": {"lr": 1e6}}))
    run = next(r for r in expand(study) if r.strategy == "baseline")
    with pytest.raises(RuntimeError, match="not finite"):
        train(run.config)
    state, reason = RunDir(run.run_dir).status()
    assert state == "failed" and reason.startswith("Diverged: iteration ")
    assert "(not finite); last finite loss" in reason
    assert not (run.run_dir / "metrics.json").exists()
    assert _reason(build_leaderboard(study.results_root, "stage1", n_boot=20), "baseline").startswith("status failed")


def test_clipping_catches_a_non_finite_gradient(tiny_benchmark: Path, tmp_path: Path) -> None:
    study = load_study(_study(tmp_path, tiny_benchmark, train={"max_iters": 8, "grad_clip": 1.0,
                                                               "optimizer": {"lr": 1e6}}))
    run = next(r for r in expand(study) if r.strategy == "baseline")
    with pytest.raises(RuntimeError, match="not finite"):
        train(run.config)
    assert RunDir(run.run_dir).status()[0] == "failed"


def test_a_study_edited_under_an_interrupted_run_is_refused(tiny_benchmark: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = _study(tmp_path, tiny_benchmark, strategies=["baseline"])
    run = expand(load_study(path))[0]
    with pytest.raises(Preempted):
        train(run.config, stop_after=1)  # interrupted with last.pt saved
    _study(tmp_path, tiny_benchmark, strategies=["baseline"], train={"max_iters": 5, "optimizer": {"lr": 0.01}})
    assert main(["plan", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["status"] == "changed"
    assert main(["run", str(path)]) == 1
    out = capsys.readouterr().out
    assert "the study changed since this run started (train.max_iters: 5 expected, 3 found" in out
    assert "train.optimizer.lr: 0.01 expected, 0.001 found" in out and "1 refused (study changed)" in out
    assert RunDir(run.run_dir).status()[0] == "failed"  # untouched: still the interrupted run


def test_runs_of_one_cell_trained_with_other_settings_are_not_compared(trained: Path, tmp_path: Path) -> None:
    results = _copy(trained, tmp_path)
    for copy in (results / ".studies").glob("*.yaml"):
        copy.unlink()  # no study at hand: the cell itself is the reference
    run_yaml = next(results.glob("stage1/gen_faithful/*/*/run.yaml"))
    doc = yaml.safe_load(run_yaml.read_text())
    doc["train"]["max_iters"] = 400
    run_yaml.write_text(yaml.safe_dump(doc))
    reason = _reason(build_leaderboard(results, "stage1", n_boot=20, audit=False), "gen_faithful")
    assert reason.startswith("settings differ from the baseline of its cell ['synthetic', 'unet_micro', 0]: "
                             "train.max_iters: 3 in the baseline, 400 found")


def test_ratios_keep_every_digit_and_duplicates_are_refused(tiny_benchmark: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = _study(tmp_path, tiny_benchmark, ratios=[0.12, 0.125, 0.1249], strategies=["gen_faithful"])
    assert main(["plan", str(path), "--json"]) == 0
    names = sorted(Path(r["run_dir"]).name for r in json.loads(capsys.readouterr().out)["runs"])
    assert names == sorted(["unet_micro_ratio0p12_s0", "unet_micro_ratio0p125_s0", "unet_micro_ratio0p1249_s0"])
    _study(tmp_path, tiny_benchmark, seeds=[0, 0])
    assert main(["plan", str(path)]) == 2
    assert "seeds lists 0 more than once" in capsys.readouterr().err


def test_hand_edited_records_are_inconsistent_and_a_changed_manifest_is_stale(
        trained: Path, tiny_benchmark: Path, tmp_path: Path) -> None:
    results = _copy(trained, tmp_path)
    gen = next(results.glob("stage1/gen_faithful/*/*"))
    base = next(results.glob("stage1/baseline/*/*"))
    comp = json.loads((gen / "composition.json").read_text())
    comp["consumed"]["per_batch_distinct"] = [[2, 2, 0, 0], [4, 0, 0, 0]]  # still "matches_request": true
    (gen / "composition.json").write_text(json.dumps(comp))
    metrics = json.loads((base / "metrics.json").read_text())
    metrics["mIoU"] += 0.05
    (base / "metrics.json").write_text(json.dumps(metrics))
    gen_audit, base_audit = audit_run(gen), audit_run(base)
    assert gen_audit.verdict == "inconsistent" and gen_audit.reasons[0].startswith("consumed.per_batch_distinct: "
                                                                                   "recorded [[2, 2, 0, 0], [4, 0")
    assert base_audit.verdict == "inconsistent" and base_audit.reasons[0].startswith("metrics.json mIoU: recorded")
    doc = build_leaderboard(results, "stage1", n_boot=20)
    assert doc["rows"] == [] and _reason(doc, "gen_faithful").startswith("audit: inconsistent: consumed.")
    assert main(["audit", str(results), "--json"]) == 1


def test_a_manifest_changed_after_training_makes_the_run_stale(tiny_benchmark: Path, tmp_path: Path) -> None:
    """The record may have been true, but with a changed manifest row it no longer re-derives."""
    import shutil

    bench = tmp_path / "bench"
    shutil.copytree(tiny_benchmark, bench)
    run = next(r for r in expand(load_study(_study(tmp_path, bench))) if r.strategy == "gen_faithful")
    train(run.config)
    assert audit_run(run.run_dir).verdict == "verified"
    manifest = bench / "generated/faithful/manifest.csv"
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[0]["generated_path"], rows[-1]["generated_path"] = rows[-1]["generated_path"], rows[0]["generated_path"]
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    stale = audit_run(run.run_dir)
    assert stale.verdict == "stale"
    assert stale.reasons == ["the records of source generated/faithful changed since training"]
    doc = build_leaderboard(tmp_path / "results", "stage1", n_boot=20)
    assert _reason(doc, "gen_faithful").startswith("audit: stale: the records of source generated/faithful changed")


def _merge(audits: list, records: object) -> None:
    others: list = []
    audits[1].merge_ranks(records, lambda a: others.append(a.copy()) or a)
    audits[0].merge_ranks(records, lambda a: a + others.pop(0))


def test_the_rederived_record_is_what_the_trainer_counts_on_every_rank(tiny_benchmark: Path) -> None:
    """The audit's vectorised re-derivation equals ConsumptionAudit fed the loader's batches (world 1 and 2)."""
    from proveseg.config import DataConfig
    from proveseg.data.audit import ConsumptionAudit

    data_cfg = DataConfig.model_validate({
        "real": [{"name": "s", "root": str(tiny_benchmark / "train")}],
        "generated": [{"name": "faithful", "manifest": str(tiny_benchmark / "generated/faithful/manifest.csv")}],
        "real_gen_ratio": 0.4, "batch_size": 5, "seed": 1})
    from proveseg.data.plan import plan_batches

    for world in (1, 2):
        data = build_training_data(data_cfg, world)
        planned = plan_batches(data.spec, 0, 30)
        audits = [ConsumptionAudit(len(data.records)) for _ in range(world)]
        for b in range(30):
            for rank, audit in enumerate(audits):
                ids = planned.ids[b, rank]
                audit.update({"kind": data.records.kind[ids].tolist(), "source": data.records.source[ids].tolist(),
                              "domain": data.records.domain[ids].tolist(), "index": ids})
        if world == 2:  # what the trainer's all_reduce does: rank 1's arrays added to rank 0's
            _merge(audits, data.records)
        recorded = audits[0].to_dict(data.records, data.requested(), data.hashes)["consumed"]
        derived = rederive_consumption(data, 30)
        for key in ("per_kind", "per_source", "per_domain", "per_kind_domain", "unique_per_source", "first_batches",
                    "samples", "per_batch_distinct", "batches"):
            assert json.loads(json.dumps(derived[key])) == json.loads(json.dumps(recorded[key])), (world, key)
        assert sum(derived["per_kind"][k] for k in KINDS) == 30 * 5 * world


def test_two_executors_on_one_study_train_each_run_once(trained: Path, tiny_benchmark: Path, tmp_path: Path) -> None:
    path = _study(tmp_path, tiny_benchmark)
    cmd = [sys.executable, "-m", "proveseg.cli", "run", str(path)]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    summaries = [next(line for line in out.splitlines() if line.startswith("2 runs:")) for out in outs]
    trained_counts = [int(s.split(": ")[1].split(" trained")[0]) for s in summaries]
    assert sum(trained_counts) == 2 and "0 failed" in summaries[0] and "0 failed" in summaries[1], outs
    results = tmp_path / "results"
    for log in results.glob("stage1/*/*/*/log.jsonl"):
        iterations = [json.loads(line)["iteration"] for line in log.read_text().splitlines() if "loss" in line]
        assert iterations == [1, 2, 3]  # one writer: no interleaved or repeated lines
    mine, reference = (build_leaderboard(r, "stage1", n_boot=20) for r in (results, trained))
    assert mine["invalid"] == [] and [(r["strategy"], r["mIoU"], r["gain"]) for r in mine["rows"]] == \
        [(r["strategy"], r["mIoU"], r["gain"]) for r in reference["rows"]]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_stopping_the_executor_stops_its_trainer(tiny_benchmark: Path, tmp_path: Path, how: signal.Signals) -> None:
    path = _study(tmp_path, tiny_benchmark, strategies=["baseline"],
                  train={"max_iters": 2000, "checkpoint_interval": 1000})
    run_dir = expand(load_study(path))[0].run_dir
    proc = subprocess.Popen([sys.executable, "-m", "proveseg.cli", "run", str(path)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run_dir / "log.jsonl").exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(how)
    proc.wait(timeout=60)
    deadline = time.time() + 60
    while RunLock(run_dir).held_elsewhere() and time.time() < deadline:
        time.sleep(0.1)
    assert RunLock(run_dir).held_elsewhere() is None  # no trainer left behind
    state, reason = RunDir(run_dir).status()
    assert state == "failed" and reason.startswith("preempted at iteration"), reason
    assert (run_dir / "checkpoints/last.pt").exists()
    if how == signal.SIGTERM:
        assert proc.returncode == 3


def test_the_unused_data_warning_fires_on_ties_and_inside_seed_noise(tmp_path: Path) -> None:
    for seed in (0, 1):
        fake_run(tmp_path, "stage1", "baseline", seed, 0.30)
        fake_run(tmp_path, "stage1", "gen_a", seed, 0.30)
        fake_run(tmp_path, "stage1", "gen_b", seed, 0.30)  # exactly the baseline: gains [0, 0]
    warnings = build_leaderboard(tmp_path, "stage1", n_boot=50, audit=False)["warnings"]
    assert any("gen_a, gen_b cluster within the noise of the baseline" in w for w in warnings)
    assert any(w.startswith("gen_a: its gain interval [+0.00, +0.00] is within the baseline's seed-to-seed spread")
               for w in warnings)
    single = tmp_path / "single"
    fake_run(single, "stage1", "baseline", 0, 0.30)
    fake_run(single, "stage1", "gen_a", 0, 0.30)  # one seed, one generated strategy: the tie alone must warn
    warnings = build_leaderboard(single, "stage1", n_boot=50, audit=False)["warnings"]
    assert any(w.startswith("gen_a: its gain interval [+0.00, +0.00] is exactly zero") for w in warnings)
    other = tmp_path / "noisy"
    for seed, base_error in ((0, 0.25), (1, 0.35)):  # the baseline moves 10 points between seeds
        fake_run(other, "stage1", "baseline", seed, base_error)
        fake_run(other, "stage1", "gen_a", seed, base_error - 0.005)
        fake_run(other, "stage1", "gen_good", seed, 0.05)
    warnings = build_leaderboard(other, "stage1", n_boot=50, audit=False)["warnings"]
    assert any(w.startswith("gen_a: its gain interval") and "within the baseline's seed-to-seed spread" in w
               for w in warnings)
    assert not any(w.startswith("gen_good:") for w in warnings)


def test_a_record_that_no_study_planned_is_not_ranked(trained: Path, tmp_path: Path) -> None:
    results = _copy(trained, tmp_path)
    stray = results / "stage1/gen_faithful/synthetic/unet_micro_ratio0p50_s7"
    import shutil

    shutil.copytree(next(results.glob("stage1/gen_faithful/*/*")), stray)
    cfg = yaml.safe_load((stray / "run.yaml").read_text())
    cfg["train"]["seed"] = cfg["data"]["seed"] = 7
    (stray / "run.yaml").write_text(yaml.safe_dump(cfg))
    doc = build_leaderboard(results, "stage1", n_boot=20)
    reason = next(i["reason"] for i in doc["invalid"] if i["run_dir"] == str(stray))
    assert reason.startswith("not a run of study proof: nothing is planned at this path")


def test_a_copy_of_a_run_directory_is_not_counted_twice(trained: Path, tmp_path: Path) -> None:
    import shutil

    results = _copy(trained, tmp_path)
    for copy in (results / ".studies").glob("*.yaml"):
        copy.unlink()  # no study at hand: names and keys alone must catch the copies
    run = next(results.glob("stage1/gen_faithful/*/*"))
    shutil.copytree(run, run.with_name(run.name + ".bak"))
    legacy = run.parent / "unet_micro_ratio0p5_s0"  # another spelling of the same run
    shutil.copytree(run, legacy)
    doc = build_leaderboard(results, "stage1", n_boot=20, audit=False)
    row = next(r for r in doc["rows"] if r["strategy"] == "gen_faithful")
    assert row["n_runs"] == 1
    reasons = {Path(i["run_dir"]).name: i["reason"] for i in doc["invalid"]}
    assert reasons[run.name + ".bak"].startswith("folder name 'unet_micro_ratio0p50_s0.bak' is not")
    assert reasons["unet_micro_ratio0p5_s0"] == f"duplicate of {run} (the same run twice)"


def test_the_audit_survives_broken_files_and_a_moved_test_split(trained: Path, tiny_benchmark: Path,
                                                                tmp_path: Path) -> None:
    import shutil

    results = _copy(trained, tmp_path)
    gen = next(results.glob("stage1/gen_faithful/*/*"))
    (gen / "confusion.npz").write_bytes(b"")
    assert audit_run(gen).verdict == "inconsistent"
    assert main(["audit", str(results)]) == 1  # a verdict per run, no traceback
    bench = tmp_path / "bench"
    shutil.copytree(tiny_benchmark, bench)
    base = next(results.glob("stage1/baseline/*/*"))
    (base / "run.yaml").write_text((base / "run.yaml").read_text().replace(str(tiny_benchmark), str(bench)))
    shutil.rmtree(bench / "test")
    moved = audit_run(base)
    assert moved.verdict == "stale" and moved.reasons[-1].startswith("the test split cannot be read now")


def test_two_studies_planning_one_path_differently_claim_nothing_there(trained: Path, tiny_benchmark: Path,
                                                                       tmp_path: Path) -> None:
    results = _copy(trained, tmp_path)
    other = load_study(_study(tmp_path, tiny_benchmark, name="other.yaml", train={"max_iters": 9}))
    store_study(other.model_copy(update={"name": "other"}))
    doc = build_leaderboard(results, "stage1", n_boot=20)
    assert doc["rows"] == [] and all("studies proof and other plan this path with different settings" in i["reason"]
                                     or "studies other and proof" in i["reason"] for i in doc["invalid"])
