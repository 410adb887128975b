"""Bad configs fail at load, every source is checked before iteration 1, broken records never abort a whole
results root, and no fault leaves a run that cannot be resumed (tests/data/test_bad_inputs.py: bad data files)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from proveseg.cli import main
from proveseg.config import ConfigError, RunConfig, parse_run_config
from proveseg.rundir import RunDir, read_log_lines
from proveseg.study.leaderboard import build_leaderboard
from proveseg.study.report import write_report
from proveseg.study.spec import load_study
from proveseg.train.loop import Preempted, train
from tests.study.test_leaderboard import fake_run
from tests.train.conftest import make_config

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize(("text", "message"), [
    ("name: a\nname: b\ndata: {}\n", "key 'name' appears twice in one mapping (lines 1 and 2)"),
    ("data: {real: [{name: x, root: r, repeat: .inf}]}\n", "repeat: Input should be a finite number"),
    ("data: {real: [{name: x, root: r, repeat: 1e300}]}\n", "repeat: Input should be less than or equal to 1000000"),
    ("data: {transforms: {crop: [0, 0]}}\n", "crop.0: Input should be greater than or equal to 1"),
    ("data: {transforms: {scale: [-1, -1]}}\n", "scale [-1.0, -1.0]: expected [min, max] with 0 < min <= max"),
    ("data: {}\ntrain: {schedule: {min_lr: 1}}\n", "schedule.min_lr 1 is above optimizer.lr 0.001"),
    ("data: {real_gen_ratio: 0.9999999}\ntrain: {max_iters: 10}\n",
     "the generated group's share 1e-07 of batches of 8 rounds to no sample in the run's 10 batches"),
    ("data: {}\ntrain: {best_metric: dice}\n", "'dice' is not a metric"),
    ("data: {}\nevaluation: {mode: slide, crop: [0, 4], stride: [2, 2]}\n", "crop.0: Input should be greater"),
    ("data: {real: [{name: x, root: r, take: [0.5, 0.2]}]}\n", "take [0.5, 0.2]: expected [start, end)"),
    ("data: {real: [{name: x, root: r, domains: []}]}\n", "domains is an empty list: it keeps nothing"),
    ("data: {}\ntrain: {device: gpu7}\n", "train.device: String should match pattern"),
    ("data: {}\ntrain: {optimizer: {lr: .inf}}\n", "train.optimizer.lr: Input should be a finite number"),
    ("data: {}\ntrain: {grad_clip: .inf}\n", "train.grad_clip: Input should be a finite number"),
    ("data: {unlabeled: [{name: u, root: r}], unlabeled_share: 0.5}\ntrain: {selftrain: {threshold: 2.0}}\n",
     "threshold.constrained-float: Input should be less than or equal to 1"),
    # seeds are numpy seeds: 0 <= seed < 2**32, YAML integers only
    ("data: {seed: -1}\n", "data.seed: Input should be greater than or equal to 0"),
    ("data: {}\ntrain: {seed: 100000000000000000000}\n", "train.seed: Input should be less than 4294967296"),
    ("data: {}\ntrain: {seed: 1e20}\n", "train.seed: Input should be a valid integer"),
    ("data: {real: [{name: x, root: r, take: [0, 0.5], take_seed: -3}]}\n", "take_seed: -3 outside"),
    # no lax coercion: a wrong-typed value is a typo
    ("data: {seed: true}\n", "data.seed: Input should be a valid integer"),
    ("data: {seed: '4'}\n", "data.seed: Input should be a valid integer"),
    ("data: {num_workers: 2.0}\n", "data.num_workers: Input should be a valid integer"),
    ("data: {transforms: {hflip: 'no'}}\n", "data.transforms.hflip: Input should be a valid boolean"),
    ("data: {transforms: {hflip: 0}}\n", "data.transforms.hflip: Input should be a valid boolean"),
    ("data: {real_gen_ratio: '1'}\n", "data.real_gen_ratio: Input should be a valid number"),
    ("data: {real: [{name: x, root: r, domain_level: true}]}\n", "domain_level: expected an integer, got True"),
    ("data: {real: [{name: x, root: r, take_seed: false}]}\n", "take_seed: expected an integer, got False"),
    ("data: {generated: [{name: g, manifest: m.csv, deep: 1}]}\n", "data.generated.0.deep: Input should be a valid"),
    # empty strings
    ("data: {real: [{name: '', root: r}]}\n", "data.real.0: Value error, name: empty string"),
    ("data: {real: [{name: x, root: ''}]}\n", "data.real.0: Value error, root: empty string"),
    ("data: {}\nevaluation: {test: [{name: x, root: ' '}]}\n", "evaluation.test.0: Value error, root: empty"),
    ("data: {generated: [{name: '', manifest: m.csv}]}\n", "data.generated.0.name: String should have at least 1"),
    ("data: {generated: [{name: g, manifest: ''}]}\n", "data.generated.0.manifest: Value error, empty path"),
])
def test_a_bad_config_fails_at_load_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")
                       .replace("(", r"\(").replace(")", r"\)")):
        parse_run_config(text)


def test_strict_fields_still_take_yaml_numbers_as_written() -> None:
    cfg = parse_run_config("data: {real_gen_ratio: 1, seed: 4294967295, transforms: {jitter: 0, hflip: false}}\n"
                           "train: {optimizer: {lr: 1e-3, weight_decay: 0}, grad_clip: 1}\n")
    assert cfg.data.real_gen_ratio == 1.0 and isinstance(cfg.data.real_gen_ratio, float)
    assert cfg.train.optimizer.lr == 0.001 and cfg.train.grad_clip == 1.0 and cfg.data.seed == 2**32 - 1
    assert cfg.data.transforms.hflip is False
    assert parse_run_config(yaml.safe_dump(cfg.model_dump(mode="json"))) == cfg  # a resolved config reads back


def test_a_study_with_an_unknown_model_or_a_file_as_results_root_fails_at_load(tmp_path: Path) -> None:
    doc = {"name": "s", "results_root": str(tmp_path / "r"), "strategies": ["baseline"], "models": ["unet_tinny"],
           "datasets": {"d": {"train": {"root": "t"}, "test": {"root": "t"}}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"models \['unet_tinny'\] are not in the registry; valid: pspnet_r50"):
        load_study(path)
    (tmp_path / "r").write_text("a file")
    path.write_text(yaml.safe_dump({**doc, "models": ["unet_micro"]}))
    with pytest.raises(ConfigError, match=r"results_root .* is a file, not a folder"):
        load_study(path)


def _cfg(tiny_benchmark: Path, out: Path, **train: object) -> RunConfig:
    return make_config(tiny_benchmark, out, **{"max_iters": 4, "eval_interval": 100, "checkpoint_interval": 1, **train})


def test_a_typo_in_the_test_path_fails_before_training_and_the_fix_resumes(tiny_benchmark: Path,
                                                                        tmp_path: Path) -> None:
    cfg = _cfg(tiny_benchmark, tmp_path / "run")
    typo = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={
        "test": [cfg.evaluation.test[0].model_copy(update={"root": tiny_benchmark / "tset"})]})})
    with pytest.raises(Exception, match="tset"):
        train(typo)
    assert not (cfg.output_dir / "log.jsonl").exists()  # not one step was spent
    # a run interrupted with the typo fixed later: the test set is read only after training, so it may resume
    with pytest.raises(Preempted):
        train(cfg, stop_after=2)
    moved = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"n_boot": 60})})
    assert train(moved, resume=True).iterations == 4


def test_a_model_that_cannot_train_on_the_batch_fails_before_training(tiny_benchmark: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_benchmark, tmp_path / "run")
    one = cfg.model_copy(update={"model": cfg.model.model_copy(update={"name": "deeplabv3plus_r50"}),
                                 "data": cfg.data.model_copy(update={"batch_size": 1, "real_gen_ratio": 1.0,
                                                                     "generated": []}),
                                 "strategy": "baseline"})
    with pytest.raises(ConfigError, match="model 'deeplabv3plus_r50' cannot train on a per-rank batch of 1"):
        train(one)
    assert not (cfg.output_dir / "log.jsonl").exists()


def test_output_dir_that_is_a_file_is_a_clear_error(tiny_benchmark: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run").write_text("not a folder")
    cfg = _cfg(tiny_benchmark, tmp_path / "run")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    assert main(["train", str(path)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_broken_records_are_one_invalid_row_each_and_the_rest_ranks(tmp_path: Path) -> None:
    for seed in (0, 1):
        fake_run(tmp_path, "stage1", "baseline", seed, 0.30)
        fake_run(tmp_path, "stage1", "gen_good", seed, 0.10)
    bad = {name: fake_run(tmp_path, "stage1", name, 0, 0.2) for name in ("gen_trunc", "gen_zero", "gen_list")}
    text = (bad["gen_trunc"] / "metrics.json").read_text()
    (bad["gen_trunc"] / "metrics.json").write_text(text[: len(text) // 2])
    (bad["gen_zero"] / "confusion.npz").write_bytes(b"")
    (bad["gen_list"] / "composition.json").write_text("[1, 2]")
    doc = build_leaderboard(tmp_path, "stage1", n_boot=50, audit=False)
    reasons = {Path(i["run_dir"]).parts[-3]: i["reason"] for i in doc["invalid"]}
    assert reasons["gen_trunc"].startswith("metrics.json is unreadable (JSONDecodeError")
    assert reasons["gen_zero"].startswith("confusion.npz is unreadable")
    assert reasons["gen_list"] == "composition.json is not a proveseg record (needs an object with consumed, requested)"
    assert {r["strategy"] for r in doc["rows"]} == {"baseline", "gen_good"}
    assert (write_report(tmp_path, tmp_path / "r.html", "stage1", audit=False)).exists()


def test_a_torn_last_log_line_neither_blocks_resume_nor_the_report(tiny_benchmark: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_benchmark, tmp_path / "run")
    with pytest.raises(Preempted):
        train(cfg, stop_after=2)
    with (cfg.output_dir / "log.jsonl").open("a") as fh:
        fh.write('{"iteration": 3, "loss": 0.5, "l')  # a full disk cut this append
    assert len(read_log_lines(cfg.output_dir / "log.jsonl")) == 2
    assert train(cfg, resume=True).iterations == 4
    assert [r["iteration"] for r in read_log_lines(cfg.output_dir / "log.jsonl") if "loss" in r] == [1, 2, 3, 4]
    assert main(["diagnose", str(cfg.output_dir), "--json"]) == 0


def test_a_restart_without_a_checkpoint_drops_the_discarded_attempts_log_and_stale_temp_files(
        tiny_benchmark: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_benchmark, tmp_path / "run", checkpoint_interval=100)
    run = RunDir(cfg.output_dir)
    run.create()
    run.log({"iteration": 1, "loss": 9.0})  # a killed attempt before its first checkpoint
    run.set_status("failed", "killed")
    (run.checkpoints / ".last.pt.abc.tmp").write_bytes(b"half a checkpoint")
    (run.root / ".composition.json.x.tmp").write_text("{")
    train(cfg, resume=True)  # no last.pt: starts over
    assert next(r["loss"] for r in read_log_lines(run.log_path) if "loss" in r) != 9.0
    assert len([r for r in read_log_lines(run.log_path) if "loss" in r]) == 4
    assert not list(run.root.glob(".*.tmp")) and not list(run.checkpoints.glob(".*.tmp"))


def test_non_finite_numbers_are_written_as_null(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.create()
    run.log({"iteration": 1, "loss": math.nan, "st": math.inf})
    run.write_json("composition.json", {"x": [1.0, -math.inf]})
    assert json.loads((tmp_path / "log.jsonl").read_text(), parse_constant=lambda c: pytest.fail(c)) == {
        "iteration": 1, "loss": None, "st": None}
    assert "Infinity" not in (tmp_path / "composition.json").read_text()


def test_ctrl_c_stops_training_at_a_step_boundary_with_last_pt(tiny_benchmark: Path, tmp_path: Path) -> None:
    cfg = make_config(tiny_benchmark, tmp_path / "run", max_iters=2000, eval_interval=10_000, checkpoint_interval=1000)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    proc = subprocess.Popen([sys.executable, "-m", "proveseg.cli", "train", str(path)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (cfg.output_dir / "log.jsonl").exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3 and "Traceback" not in err
    assert RunDir(cfg.output_dir).last.exists() and RunDir(cfg.output_dir).status()[1].startswith("preempted")


def test_an_image_that_cannot_be_read_mid_training_is_a_clear_error(tiny_benchmark: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import proveseg.train.loop as loop

    root = tmp_path / "bench"
    shutil.copytree(tiny_benchmark, root)
    victim = sorted((root / "test/images/fog").glob("*.jpg"))[0]  # read only when the run is tested
    good = victim.read_bytes()
    cfg = make_config(root, tmp_path / "run", max_iters=3, eval_interval=100)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    victim.write_bytes(b"not a jpeg at all")  # broken before the run: the header pass refuses it, nothing trains
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and victim.name in err and "evaluation.test" in err and "unreadable_image" in err
    assert RunDir(cfg.output_dir).status()[0] == "todo" and not RunDir(cfg.output_dir).log_path.exists()
    victim.write_bytes(good)
    open_run_dir = loop._open_run_dir

    def open_then_break(*args: object) -> None:  # as if the file were replaced while the run trained
        open_run_dir(*args)  # type: ignore[arg-type]
        victim.write_bytes(b"not a jpeg at all")

    monkeypatch.setattr(loop, "_open_run_dir", open_then_break)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and victim.name in err
    state, reason = RunDir(cfg.output_dir).status()
    assert state == "failed" and victim.name in reason


def test_yaml_merge_keys_may_override_and_tiny_repeats_are_refused() -> None:
    from proveseg.config import parse_yaml_model
    from proveseg.study.spec import StudyConfig

    merged = ("name: s\nstrategies: [baseline]\n"
              "datasets:\n  d:\n    train: &split {root: data/train, domains: [clear_day]}\n"
              "    test: {<<: *split, root: data/test}\n")  # the merged key `root` is overridden: legitimate
    study = parse_yaml_model(merged, "study.yaml", StudyConfig)
    assert str(study.datasets["d"].test.root) == "data/test" and study.datasets["d"].test.domains == ["clear_day"]
    with pytest.raises(ConfigError, match=r"repeat: Input should be greater than or equal to 0\.000001"):
        parse_run_config("data: {real: [{name: x, root: r, repeat: 1e-20}]}\n")


def test_a_failing_train_on_a_finished_run_leaves_it_done(tiny_benchmark: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_benchmark, tmp_path / "run", max_iters=2)
    train(cfg)
    broken = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={
        "test": [cfg.evaluation.test[0].model_copy(update={"root": tmp_path / "gone"})]})})
    with pytest.raises(Exception, match="already holds a run"):
        train(broken)
    with pytest.raises(Exception, match="gone"):
        train(broken, resume=True)  # resuming a finished run with a missing test set: refused, nothing touched
    assert RunDir(cfg.output_dir).status()[0] == "done"


def test_validation_images_that_are_test_images_are_refused(tiny_benchmark: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_benchmark, tmp_path / "run")
    same = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"val": cfg.evaluation.test})})
    with pytest.raises(ConfigError, match=r"image\(s\) are in both evaluation.val and evaluation.test"):
        train(same)


def test_a_results_root_with_several_stages_is_ranked_one_stage_at_a_time(tmp_path: Path) -> None:
    for stage in ("stage1", "stage2"):
        fake_run(tmp_path, stage, "baseline", 0, 0.3)
        fake_run(tmp_path, stage, "gen_good", 0, 0.1)
    with pytest.raises(ValueError, match="holds stages stage1, stage2: rank one at a time with --stage"):
        build_leaderboard(tmp_path, None, n_boot=20, audit=False)
    assert build_leaderboard(tmp_path, "stage2", n_boot=20, audit=False)["invalid"] == []
