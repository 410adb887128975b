"""Scores are tied to the weights that were trained (review of the proof: evaluations pasted between runs,
checkpoints from another run, weights trained with other settings, forged confusion matrices, reordered
or mistyped records)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from proveseg.checkpoint import load_checkpoint, save_checkpoint
from proveseg.cli import main
from proveseg.data.classes import resolve_class_set
from proveseg.evaluate.runner import EvalResult, evaluate_target, read_confusion, write_results
from proveseg.study.audit import audit_run, audit_target
from proveseg.study.leaderboard import build_leaderboard
from tests.reliability.test_proof import _copy, trained  # noqa: F401  (the module-scoped trained study)


def _runs(results: Path) -> tuple[Path, Path]:
    return next(results.glob("stage1/gen_faithful/*/*")), next(results.glob("stage1/baseline/*/*"))


def _resave(path: Path, state: dict) -> None:  # type: ignore[type-arg]
    save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})


def _rewrite_results(run: Path, result: EvalResult) -> None:
    """metrics.json and confusion.npz rewritten from ``result`` with the run's own record fields: consistent files."""
    old = json.loads((run / "metrics.json").read_text())
    keep = ("split", "checkpoint", "weights_sha256", "protocol", "model", "strategy", "selection",
            "selection_metric", "weights")
    write_results(run, result, resolve_class_set("cityscapes19"), 20, old["iteration"], {k: old[k] for k in keep})


def test_metrics_name_the_weights_they_scored(trained: Path) -> None:  # noqa: F811
    gen, _ = _runs(trained)
    metrics = json.loads((gen / "metrics.json").read_text())
    from proveseg.rundir import file_sha256

    assert metrics["weights_sha256"] == file_sha256(gen / "checkpoints/best.pt")
    assert isinstance(load_checkpoint(gen / "checkpoints/best.pt")["sequence_sha256"], str)
    assert audit_run(gen).verdict == "verified"


def test_an_evaluation_pasted_from_another_run_is_inconsistent(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    results = _copy(trained, tmp_path)
    gen, base = _runs(results)
    for name in ("metrics.json", "confusion.npz"):
        shutil.copy(base / name, gen / name)
    result = audit_run(gen)
    assert result.verdict == "inconsistent"
    assert any("weights_sha256 differs" in r for r in result.reasons)
    assert any("strategy 'baseline', the run is 'gen_faithful'" in r for r in result.reasons)


def test_a_checkpoint_from_another_run_scored_with_evaluate_is_inconsistent(
        trained: Path, tmp_path: Path) -> None:  # noqa: F811
    results = _copy(trained, tmp_path)
    gen, base = _runs(results)
    shutil.copy(base / "checkpoints/best.pt", gen / "checkpoints/best.pt")
    evaluate_target(gen)  # the official command: metrics.json now names the pasted weights by their hash
    result = audit_run(gen)
    assert result.verdict == "inconsistent"
    assert any(r.startswith("checkpoints/best.pt was trained with other settings than run.yaml") and "strategy" in r
               for r in result.reasons)


def test_weights_trained_with_other_settings_are_inconsistent(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    results = _copy(trained, tmp_path)
    gen, _ = _runs(results)
    state = load_checkpoint(gen / "checkpoints/best.pt")
    assert "lr: 0.001" in state["config"]
    state["config"] = state["config"].replace("lr: 0.001", "lr: 0.01")  # trained otherwise, run.yaml put back
    _resave(gen / "checkpoints/best.pt", state)
    evaluate_target(gen)
    result = audit_run(gen)
    assert result.verdict == "inconsistent"
    assert any("train.optimizer.lr: 0.001 in run.yaml, 0.01 found" in r for r in result.reasons)


def test_weights_of_another_batch_sequence_are_inconsistent(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    results = _copy(trained, tmp_path)
    gen, base = _runs(results)
    state = load_checkpoint(gen / "checkpoints/best.pt")
    state["sequence_sha256"] = load_checkpoint(base / "checkpoints/best.pt")["sequence_sha256"]
    _resave(gen / "checkpoints/best.pt", state)
    evaluate_target(gen)
    result = audit_run(gen)
    assert result.verdict == "inconsistent"
    assert any("another batch sequence" in r for r in result.reasons)


def test_scores_without_named_weights_are_unverifiable_until_evaluated_again(
        trained: Path, tmp_path: Path) -> None:  # noqa: F811
    results = _copy(trained, tmp_path)
    gen, _ = _runs(results)
    metrics = json.loads((gen / "metrics.json").read_text())
    del metrics["weights_sha256"]  # as written by an older proveseg
    (gen / "metrics.json").write_text(json.dumps(metrics))
    result = audit_run(gen)
    assert result.verdict == "unverifiable" and "proveseg evaluate RUN" in result.reasons[0]
    assert main(["evaluate", str(gen)]) == 0
    assert audit_run(gen).verdict == "verified"


def test_a_forged_confusion_matrix_is_caught_by_rescoring(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    results = _copy(trained, tmp_path)
    gen, _ = _runs(results)
    recorded = read_confusion(gen / "confusion.npz")
    perfect = np.zeros_like(recorded.per_image)
    for i, m in enumerate(recorded.per_image):
        np.fill_diagonal(perfect[i], m.sum(axis=1))  # every labelled pixel "predicted right"
    _rewrite_results(gen, EvalResult(perfect, recorded.domains, recorded.images))
    assert audit_run(gen).verdict == "verified"  # the files agree with each other: only the weights can tell
    rescored = audit_run(gen, rescore_on="cpu")
    assert rescored.verdict == "inconsistent" and "re-scoring checkpoints/best.pt" in rescored.reasons[0]
    doc = audit_target(results, rescore_on="cpu")
    assert doc["rescored"] and doc["counts"] == {"verified": 1, "stale": 0, "inconsistent": 1, "unverifiable": 0}
    assert main(["audit", str(results), "--reevaluate", "--device", "cpu"]) == 1


def test_reordered_test_images_rank_the_same(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    results = _copy(trained, tmp_path)
    gen, _ = _runs(results)
    before = build_leaderboard(results, "stage1", n_boot=20)
    recorded = read_confusion(gen / "confusion.npz")
    _rewrite_results(gen, EvalResult(recorded.per_image[::-1].copy(), recorded.domains[::-1], recorded.images[::-1]))
    after = build_leaderboard(results, "stage1", n_boot=20)
    assert after["invalid"] == [] and len(after["rows"]) == 2
    for a, b in zip(before["rows"], after["rows"], strict=True):
        assert a["strategy"] == b["strategy"] and a["gain_ci95"] == b["gain_ci95"]


def test_mistyped_records_are_invalid_rows_without_the_audit(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    results = _copy(trained, tmp_path)
    gen, base = _runs(results)
    metrics = json.loads((gen / "metrics.json").read_text())
    metrics["mIoU"] = "0.99"
    (gen / "metrics.json").write_text(json.dumps(metrics))
    comp = json.loads((base / "composition.json").read_text())
    comp["requested"] = []
    (base / "composition.json").write_text(json.dumps(comp))
    doc = build_leaderboard(results, "stage1", n_boot=20, audit=False)
    reasons = sorted(i["reason"] for i in doc["invalid"])
    assert reasons == ["composition.json: field requested is a list, not an object",
                       "metrics.json: field mIoU is '0.99', not a number"]
    out = tmp_path / "report.html"
    assert main(["report", str(results), "--stage", "stage1", "--no-audit", "--out", str(out)]) == 0
    assert "unreadable composition.json" in out.read_text()


def test_an_unreadable_status_file_is_one_verdict(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    results = _copy(trained, tmp_path)
    gen, _ = _runs(results)
    (gen / "status").write_bytes(b"\xff\xfe done")
    doc = audit_target(results)
    verdicts = {Path(r["run_dir"]).parent.parent.name: r["verdict"] for r in doc["runs"]}
    assert verdicts == {"gen_faithful": "unverifiable", "baseline": "verified"}


def test_a_removed_planned_run_is_listed_as_missing(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    results = _copy(trained, tmp_path)
    gen, _ = _runs(results)
    shutil.rmtree(gen)  # a seed that "did not work out", deleted
    doc = build_leaderboard(results, "stage1", n_boot=20)
    assert doc["missing"] == [str(gen.resolve())]
    assert any(w.startswith("1 run(s) the study plans have no run directory") for w in doc["warnings"])


def test_an_edited_training_log_is_inconsistent(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    results = _copy(trained, tmp_path)
    gen, _ = _runs(results)
    lines = [json.loads(line) for line in (gen / "log.jsonl").read_text().splitlines()]
    assert lines and all("loss" in r for r in lines if "eval" not in r)
    for r in lines:
        if "loss" in r:
            r["loss"] = 0.01  # a prettier curve for the report
    (gen / "log.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))
    result = audit_run(gen)
    assert result.verdict == "inconsistent" and any(r.startswith("log.jsonl is not the log") for r in result.reasons)


def test_a_metrics_json_claiming_a_foreign_trainer_is_still_bound_to_best_pt(
        trained: Path, tmp_path: Path) -> None:  # noqa: F811
    results = _copy(trained, tmp_path)
    gen, base = _runs(results)
    for name in ("metrics.json", "confusion.npz"):
        shutil.copy(base / name, gen / name)
    metrics = json.loads((gen / "metrics.json").read_text())
    metrics.update(strategy="gen_faithful", trainer="mmengine 0.10.7")  # disguised as a foreign trainer's run
    (gen / "metrics.json").write_text(json.dumps(metrics))
    result = audit_run(gen)
    assert result.verdict == "inconsistent" and any("weights_sha256 differs" in r for r in result.reasons)


def test_weights_of_another_iteration_than_the_result_are_inconsistent(
        trained: Path, tmp_path: Path) -> None:  # noqa: F811
    from proveseg.config import load_run_config
    from proveseg.data.pipeline import build_training_data
    from proveseg.study.audit import rederive_consumption

    results = _copy(trained, tmp_path)
    gen, _ = _runs(results)
    cfg = load_run_config(gen / "run.yaml")
    state = load_checkpoint(gen / "checkpoints/best.pt")
    assert state["iteration"] == cfg.train.max_iters == 3 and not cfg.evaluation.val
    # an earlier checkpoint, honestly labelled, picked because it scored better on the test set
    earlier = rederive_consumption(build_training_data(cfg.data), 3, sequence_at=2)["sequence_at"]
    state.update(iteration=2, sequence_sha256=earlier)
    _resave(gen / "checkpoints/best.pt", state)
    evaluate_target(gen)
    result = audit_run(gen)
    assert result.verdict == "inconsistent"
    assert any("best.pt is of iteration 2, but the run's weights are those of iteration 3 (no evaluation.val: "
               "the final weights)" in r for r in result.reasons)
    assert not any("another batch sequence" in r for r in result.reasons)  # its sequence label is honest


def test_scores_of_another_test_protocol_do_not_pass(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    import pytest

    results = _copy(trained, tmp_path)
    gen, _ = _runs(results)
    other = tmp_path / "other.yaml"
    other.write_text((gen / "run.yaml").read_text().replace("flip: false", "flip: true"))
    assert "flip: true" in other.read_text()
    with pytest.raises(ValueError, match="evaluation settings differ"):
        evaluate_target(gen, data_config=other)
    assert evaluate_target(gen, data_config=other, out_dir=tmp_path / "elsewhere")["protocol"]["flip"] is True
    shutil.copy(other, gen / "run.yaml")  # run.yaml now claims the flip its scores were not taken with
    result = audit_run(gen)
    assert result.verdict == "inconsistent" and any("scored with evaluation" in r for r in result.reasons)


def test_a_dropped_log_hash_is_inconsistent(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    results = _copy(trained, tmp_path)
    gen, _ = _runs(results)
    comp = json.loads((gen / "composition.json").read_text())
    del comp["log_sha256"]
    (gen / "composition.json").write_text(json.dumps(comp))
    result = audit_run(gen)
    assert result.verdict == "inconsistent" and any("does not record log_sha256" in r for r in result.reasons)


def test_evaluating_a_run_again_keeps_what_training_wrote(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    results = _copy(trained, tmp_path)
    gen, _ = _runs(results)
    before = json.loads((gen / "metrics.json").read_text())
    assert main(["evaluate", str(gen)]) == 0
    after = json.loads((gen / "metrics.json").read_text())
    for key in ("strategy", "selection", "selection_metric", "weights", "weights_sha256", "protocol", "mIoU"):
        assert after[key] == before[key], key
    doc = build_leaderboard(results, "stage1", n_boot=20)
    assert doc["invalid"] == [] and not any("chose their weights differently" in w for w in doc["warnings"])
