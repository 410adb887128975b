"""Run identity comes from run.yaml (exact ratio), self-training runs in a study, and class sets travel whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from proveseg.checkpoint import checkpoint_class_set, load_checkpoint
from proveseg.cli import main
from proveseg.config import dump_config
from proveseg.data.classes import CITYSCAPES19
from proveseg.evaluate.confusion import per_image_confusion
from proveseg.evaluate.runner import EvalResult, write_results
from proveseg.rundir import RunDir
from proveseg.study.leaderboard import build_leaderboard
from proveseg.study.matrix import PlannedRun, expand
from proveseg.study.runkey import RunKey
from proveseg.study.spec import load_study
from proveseg.train.diagnose import run_class_names
from proveseg.train.loop import train


def _study(tmp_path: Path, root: Path, **over: object) -> Path:
    doc = {"name": "s", "results_root": str(tmp_path / "results"),
           "datasets": {"synthetic": {"train": {"root": str(root / "train")}, "test": {"root": str(root / "test"),
                                                                                     "domains": ["fog", "night"]}}},
           "generators": {"faithful": {"manifest": str(root / "generated/faithful/manifest.csv")}},
           "strategies": ["baseline", "gen_faithful"], "models": ["unet_micro"], "seeds": [0], "batch_size": 4,
           "train": {"max_iters": 3, "eval_interval": 100, "checkpoint_interval": 100, "log_interval": 1,
                     "num_threads": 1},
           "evaluation": {"n_boot": 20, "batch_size": 2}, **over}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _finished(run: PlannedRun, error: float, run_yaml: str | None = None) -> None:
    """Results as a finished run of ``run`` would leave them, with predictions wrong on a fraction ``error``."""
    rd = RunDir(run.run_dir)
    rd.create()
    rd.write_text("run.yaml", run_yaml if run_yaml is not None else dump_config(run.config))
    labels = np.random.default_rng(0).integers(0, 5, (12, 16, 16)).astype(np.uint8)
    preds = np.where(np.random.default_rng(int(error * 1000)).random(labels.shape) < error, (labels + 1) % 5, labels)
    write_results(run.run_dir, EvalResult(per_image_confusion(labels, preds.astype(np.uint8), 19),
                                          ["fog"] * 12, [f"img{i}" for i in range(12)]), CITYSCAPES19, n_boot=20)
    total = 1000
    gen = round(total * (1 - run.ratio))
    rd.write_json("composition.json", {
        "requested": {"real_gen_ratio": run.ratio, "batch_size": 8},
        "consumed": {"per_kind": {"real": total - gen, "generated": gen, "noise": 0, "unlabeled": 0},
                     "per_source": {"synthetic": total - gen, "faithful": gen}},
        "matches_request": True, "problems": []})
    rd.set_status("done", "3 iterations")


def test_a_ratio_of_0_125_keeps_its_three_decimals(tiny_benchmark: Path, tmp_path: Path) -> None:
    study = load_study(_study(tmp_path, tiny_benchmark,
                              stages={"ratio-ablation": {"strategies": ["gen_faithful"], "ratios": [0.125, 0.5]}}))
    runs = expand(study)
    assert sorted(r.run_dir.name for r in runs) == ["unet_micro_ratio0p125_s0", "unet_micro_ratio0p50_s0"]
    for run in runs:
        _finished(run, 0.2 if run.ratio == 0.5 else 0.3)
        assert RunKey.from_run_dir(run.run_dir) == RunKey(*(getattr(run, f) for f in
                                                            ("stage", "strategy", "dataset", "model", "ratio", "seed")))
    doc = build_leaderboard(study.results_root, "ratio-ablation", n_boot=20, audit=False)  # hand-written records
    assert doc["invalid"] == []
    assert [p["ratio"] for p in doc["ratio_ablation"]["gen_faithful"]] == [0.5, 0.125]


def test_identity_is_read_from_run_yaml_not_the_folder_name(tiny_benchmark: Path, tmp_path: Path) -> None:
    study = load_study(_study(tmp_path, tiny_benchmark, ratios=[0.25]))
    run = next(r for r in expand(study) if r.strategy == "gen_faithful")
    moved = run.run_dir.parent / "unet_micro_ratio0p50_s0"  # a folder whose name claims another ratio
    _finished(run, 0.2)
    shutil.move(run.run_dir, moved)
    assert RunKey.from_run_dir(moved).ratio == 0.25  # type: ignore[union-attr]


def test_run_yaml_written_by_the_previous_version_still_loads(tiny_benchmark: Path, tmp_path: Path) -> None:
    """proveseg 0.1.0 wrote every reader's options into each source; such run directories stay on the leaderboard."""
    study = load_study(_study(tmp_path, tiny_benchmark))
    old_fields = {"split": "train", "images": "images", "labels": "labels", "label_suffix": "", "label_ext": ".png",
                  "domain": None, "domain_level": 0, "take": None, "take_seed": 0}
    for run in expand(study):
        doc = yaml.safe_load(dump_config(run.config))
        del doc["study"]  # nor did it record the study
        doc["data"]["class_set"] = "cityscapes19"
        for src in [*doc["data"]["real"], *doc["evaluation"]["test"]]:
            src.update({k: v for k, v in old_fields.items() if k not in src or k in ("split", "domain")})
            src.pop("reader")
        _finished(run, 0.2 if run.strategy == "baseline" else 0.1, yaml.safe_dump(doc, sort_keys=False))
    doc = build_leaderboard(study.results_root, "stage1", n_boot=20, audit=False)  # hand-written records
    assert doc["invalid"] == [] and [r["strategy"] for r in doc["rows"]] == ["gen_faithful", "baseline"]


def test_a_self_training_strategy_runs_in_a_study(tiny_benchmark: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = _study(tmp_path, tiny_benchmark, strategies=["baseline", "selftrain_adverse", "std_strong"],
                  augmentations={"strong": {"strong_view": {"jitter": 0.4, "cutmix": True, "share": 0.5}}},
                  selftrain={"adverse": {"unlabeled": {"root": str(tiny_benchmark / "train"),
                                                       "domains": ["fog", "night", "rainy"]},
                                         "unlabeled_share": 0.5, "teacher": {"threshold": 0.0}, "control": "strong"}})
    assert main(["plan", str(path), "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["totals"] == {"baseline": 1, "selftrain_adverse": 1, "std_strong": 1}
    runs = expand(load_study(path))
    st = next(r for r in runs if r.strategy == "selftrain_adverse").config
    assert st.data.unlabeled_share == 0.5 and st.data.unlabeled[0].domains == ["fog", "night", "rainy"]
    assert st.train.selftrain is not None and st.train.selftrain.threshold == 0.0
    assert st.data.real[0].domains == ["clear_day"]  # stage 1: the labeled part stays clear-day
    for run in runs:
        train(run.config)
    comp = json.loads((next(r for r in runs if r.strategy == "selftrain_adverse").run_dir / "composition.json")
                      .read_text())
    assert comp["strategy"] == {"name": "selftrain_adverse", "type": "ST",
                                "shares": {"real": 0.5, "generated": 0.0, "noise": 0.0, "unlabeled": 0.5}}
    assert comp["consumed"]["per_kind"] == {"real": 6, "generated": 0, "noise": 0, "unlabeled": 6}
    doc = build_leaderboard(tmp_path / "results", "stage1", n_boot=20)
    assert doc["invalid"] == []
    row = next(r for r in doc["rows"] if r["strategy"] == "selftrain_adverse")
    assert row["type"] == "ST" and row["gain_ci95"] is not None and row["n_runs"] == 1


def test_a_custom_class_table_travels_with_the_run(tiny_benchmark: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A class table file is written whole into run.yaml, best.pt and metrics.json: deleting it loses nothing."""
    table = tmp_path / "mytable.csv"
    names = [f"{n}-x" for n in CITYSCAPES19.names]
    table.write_text("id,name,r,g,b\n" + "".join(f"{i},{n},{r},{g},{b}\n" for i, (n, (r, g, b))
                                                 in enumerate(zip(names, CITYSCAPES19.palette, strict=True))))
    path = _study(tmp_path, tiny_benchmark, strategies=["gen_faithful"])
    doc = yaml.safe_load(path.read_text())
    doc["datasets"]["synthetic"]["class_set"] = str(table)
    path.write_text(yaml.safe_dump(doc))
    run = expand(load_study(path))[0]
    train(run.config)
    table.unlink()  # from here on, only what the run recorded
    best = run.run_dir / "checkpoints/best.pt"
    assert list(checkpoint_class_set(load_checkpoint(best), best).names) == names
    assert run_class_names(run.run_dir) == names
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert sorted(metrics["per_class"]) == sorted(names) and metrics["classes"]["names"] == names
    manifest = tiny_benchmark / "generated/faithful/manifest.csv"
    assert main(["consistency", str(manifest), "--model", str(best), "--limit", "2", "--json", "--device", "cpu"]) == 0
    assert "faithful" in json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(run.run_dir), "--device", "cpu", "--json"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["per_class"]) == sorted(names)
