"""Study validation and matrix expansion (plan)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from proveseg.cli import main
from proveseg.config import ConfigError
from proveseg.study.matrix import RunKey, expand, run_dir_name
from proveseg.study.spec import load_study


def _study(tmp_path: Path, **over: object) -> Path:
    doc = {"name": "s", "results_root": str(tmp_path / "results"),
           "datasets": {"bdd": {"train": {"root": "d/train"}, "test": {"root": "d/test"}},
                        "idd": {"train": {"root": "e/train"}, "test": {"root": "e/test"}}},
           "generators": {"cyclegan": {"manifest": "m.csv"}},
           "strategies": ["baseline", "gen_cyclegan", "gen_random_noise"], "noise_reference": "cyclegan",
           "models": ["unet_tiny", "unet_micro"], "seeds": [0, 1, 2, 3], "ratios": [0.5],
           "stages": {"stage1": {}, "noise-ablation": {"strategies": ["gen_random_noise", "baseline"]}}, **over}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_plan_lists_the_matrix_with_totals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _study(tmp_path)
    assert main(["plan", str(path), "--stage", "noise-ablation"]) == 1  # the matrix, and what run would hit
    out = capsys.readouterr().out
    assert "32 jobs: 16 gen_random_noise + 16 baseline" in out
    assert "PROBLEM datasets.bdd.train: cannot be read (ReaderError: d/train/images: image folder not found)" in out
    assert main(["plan", str(path), "--json", "--strategies", "gen_cyclegan", "--datasets", "bdd"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["problems"][-1].startswith("generators.cyclegan: manifest m.csv cannot be read")
    assert doc["totals"] == {"gen_cyclegan": 8}
    run = doc["runs"][0]
    assert set(run) == {"stage", "strategy", "dataset", "model", "ratio", "seed", "run_dir", "status"}
    assert main(["run", str(path)]) == 2 and "the study cannot run" in capsys.readouterr().err
    assert run["status"] == "todo"
    assert run["run_dir"].endswith("stage1/gen_cyclegan/bdd/unet_tiny_ratio0p50_s0")
    assert not (tmp_path / "results").exists()  # a dry run starts nothing


def test_run_configs_follow_the_strategy(tmp_path: Path) -> None:
    runs = {(r.stage, r.strategy, r.dataset, r.model, r.seed): r for r in expand(load_study(_study(tmp_path)))}
    base = runs[("stage1", "baseline", "bdd", "unet_tiny", 0)].config
    assert base.data.real_gen_ratio == 1.0 and base.data.generated == [] and base.data.real[0].domains == ["clear_day"]
    noise = runs[("stage1", "gen_random_noise", "idd", "unet_micro", 3)].config
    assert noise.data.noise is not None and noise.data.noise.reference == "cyclegan"
    assert noise.data.generated[0].datasets == ["idd"] and noise.train.seed == 3 and noise.data.seed == 3
    assert run_dir_name("unet_tiny", 0.125, 2) == "unet_tiny_ratio0p125_s2"
    assert run_dir_name("unet_tiny", 0.5, 2) == "unet_tiny_ratio0p50_s2"
    for run in runs.values():  # the leaderboard reads back what the matrix wrote
        key = RunKey.from_run_dir(run.run_dir)
        assert key == RunKey(run.stage, run.strategy, run.dataset, run.model, run.ratio, run.seed)
    assert RunKey.from_run_dir(tmp_path / "a/b/c/not_a_run") is None


@pytest.mark.parametrize(("over", "field"), [
    ({"stratgies": []}, "stratgies"),
    ({"ratios": [1.5]}, "ratio 1.5 outside"),
    ({"stages": {"stage3": {}}}, "stages ['stage3'] do not exist"),
    ({"strategies": ["gen_stargan"]}, "no generator 'stargan'"),
    ({"strategies": ["fancy"]}, "expected one of baseline, custom, gen_random_noise, gen_<generator>"),
    ({"strategies": ["custom"]}, "custom is the strategy of hand-written run configs"),
    ({"strategies": ["selftrain_x"]}, "no selftrain entry 'x'"),
    ({"seeds": [0, 0]}, "seeds lists 0 more than once"),
    ({"ratios": [0.12, 0.125, 0.1249, 0.5, 0.5]}, "ratios lists 0.5 more than once"),
    ({"ratios": [0.1, 0.1000000000001]}, "ratios lists 0.1, 0.1000000000001 more than once"),
    ({"batch_size": 1}, "cannot hold both"),
    # an empty list is not "all": it is refused, naming the field (a key left out keeps meaning all / the default)
    ({"stages": {"stage1": {"datasets": []}}}, "stages.stage1.datasets: List should have at least 1 item"),
    ({"stages": {"stage1": {"strategies": []}}}, "stages.stage1.strategies: List should have at least 1 item"),
    ({"stages": {"stage1": {"ratios": []}}}, "stages.stage1.ratios: List should have at least 1 item"),
    ({"stages": {"stage1": {"models": []}}}, "stages.stage1.models: List should have at least 1 item"),
    ({"seeds": []}, "seeds: List should have at least 1 item"),
    ({"models": []}, "models: List should have at least 1 item"),
    # names that become folders of run directories
    ({"datasets": {"..": {"train": {"root": "d"}, "test": {"root": "t"}}}}, "name '..' starts with a dot"),
    ({"datasets": {"a/b": {"train": {"root": "d"}, "test": {"root": "t"}}}}, "name 'a/b' contains '/'"),
    ({"datasets": {"a\\b": {"train": {"root": "d"}, "test": {"root": "t"}}}}, "contains '\\\\\\\\'"),
    ({"datasets": {"": {"train": {"root": "d"}, "test": {"root": "t"}}}}, "datasets..*name is empty"),
    ({"datasets": {"a\tb": {"train": {"root": "d"}, "test": {"root": "t"}}}}, "contains '\\\\t'"),
    ({"generators": {"f/../../x": {"manifest": "m.csv"}}, "strategies": ["baseline", "gen_f/../../x"],
      "noise_reference": None}, "generators.f/../../x.*contains '/'"),
    ({"augmentations": {".hidden": {}}}, "augmentations..hidden.*starts with a dot"),
    # seeds: numpy's range, YAML integers only
    ({"seeds": [-1]}, "seeds.0: Input should be greater than or equal to 0"),
    ({"seeds": [2**32]}, "seeds.0: Input should be less than 4294967296"),
    ({"seeds": [True]}, "seeds.0: Input should be a valid integer"),
    ({"train": {"seed": -1}}, "train.seed: Input should be greater than or equal to 0"),
    ({"batch_size": True}, "batch_size: Input should be a valid integer"),
    ({"transforms": {"hflip": "no"}}, "transforms.hflip: Input should be a valid boolean"),
    ({"datasets": {"bdd": {"train": {"root": "d", "domain_level": True}, "test": {"root": "t"}}}},
     "datasets.bdd.train: Value error, domain_level: expected an integer, got True"),
    # slurm: the checkpoint signal inside the allocation, resources positive
    ({"slurm": {"timeout_min": 1, "signal_delay_s": 600}}, "slurm.signal_delay_s 600 is not shorter than the time"),
    ({"slurm": {"timeout_min": 10, "signal_delay_s": 600}}, "signal_delay_s 600 is not shorter"),
    ({"slurm": {"mem_gb": 0}}, "slurm.mem_gb: Input should be greater than or equal to 1"),
    ({"slurm": {"cpus_per_task": 0}}, "slurm.cpus_per_task: Input should be greater than or equal to 1"),
    ({"slurm": {"nodes": True}}, "slurm.nodes: Input should be a valid integer"),
    # empty strings
    ({"datasets": {"bdd": {"train": {"root": "d", "name": " "}, "test": {"root": "t"}}}},
     "datasets.bdd.train: Value error, name: empty string"),
    ({"datasets": {"bdd": {"train": {"root": ""}, "test": {"root": "t"}}}},
     "datasets.bdd.train: Value error, root: empty string"),
    ({"generators": {"cyclegan": {"manifest": ""}}}, "generators.cyclegan.manifest: Value error, empty path"),
    ({"name": ""}, "name: String should have at least 1 character"),
])
def test_study_validation_names_the_field(tmp_path: Path, over: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_study(_study(tmp_path, **over))


def test_left_out_lists_still_mean_all_and_yaml_exponents_are_numbers(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(_study(tmp_path, stages={"stage1": {}}).read_text()
                    + "train: {optimizer: {lr: 1e-3}, seed: 7}\nslurm: {timeout_min: 2, signal_delay_s: 119}\n")
    study = load_study(path)
    assert study.train.optimizer.lr == 0.001 and study.slurm.signal_delay_s == 119
    runs = expand(study)
    assert {r.dataset for r in runs} == {"bdd", "idd"} and {r.model for r in runs} == {"unet_tiny", "unet_micro"}
    assert {r.seed for r in runs} == {0, 1, 2, 3} and len(runs) == 3 * 2 * 2 * 4  # strategy x dataset x model x seed


def test_stage2_top_k_keeps_the_best_stage1_strategies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from proveseg.study import leaderboard
    from proveseg.study.audit import AuditResult
    from tests.study.test_leaderboard import fake_run

    # hand-written stage-1 records: nothing to re-derive, so the audit is taken as passed here
    monkeypatch.setattr(leaderboard, "audit_run", lambda run_dir: AuditResult(run_dir, "verified"))
    path = _study(tmp_path, datasets={"synthetic": {"train": {"root": "d/train"}, "test": {"root": "d/test"}}},
                  generators={g: {"manifest": "m.csv"} for g in ("a", "b", "c")}, noise_reference="a",
                  strategies=["baseline", "gen_a", "gen_b", "gen_c"], models=["unet_micro"], seeds=[0],
                  stages={"stage1": {}, "stage2": {"top_k": 2}})
    study = load_study(path)
    with pytest.raises(ValueError, match="needs proven stage1 runs"):
        expand(study, ["stage2"])
    for name, error in (("baseline", 0.3), ("gen_a", 0.35), ("gen_b", 0.1), ("gen_c", 0.2)):
        fake_run(tmp_path / "results", "stage1", name, 0, error)
    assert sorted(r.strategy for r in expand(study, ["stage2"])) == ["baseline", "gen_b", "gen_c"]


def test_plan_names_the_cause_of_what_run_would_hit(tiny_benchmark: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A folder without domain subfolders, a stage-1 split without clear-day images, a manifest of another dataset."""
    flat = tmp_path / "flat"
    for sub in ("images", "labels"):
        (flat / sub).mkdir(parents=True)
        for f in (tiny_benchmark / "train" / sub / "fog").iterdir():
            (flat / sub / f.name).write_bytes(f.read_bytes())
    doc = {"name": "s", "results_root": str(tmp_path / "r"), "strategies": ["baseline", "gen_faithful"],
           "models": ["unet_micro"],
           "generators": {"faithful": {"manifest": str(tiny_benchmark / "generated/faithful/manifest.csv")}},
           "datasets": {"mine": {"train": {"root": str(flat), "domain": "fog"},
                                 "val": {"root": str(flat)},
                                 "test": {"root": str(tiny_benchmark / "test")}}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["plan", str(path), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert len(problems) == 3, problems
    assert problems[0].startswith("datasets.mine.train: stage-1 and ablation runs train on clear_day images only, "
                                  "and this split has none (its domains: ['fog'])")
    assert problems[1].startswith("datasets.mine.val: cannot be read (ReaderError:") and \
        "needs `domain: <name>`" in problems[1]
    assert problems[2].endswith("has no row for dataset 'mine' (its dataset column holds ['synthetic']): the column "
                                "must equal the study's dataset name")
    assert main(["run", str(path)]) == 2 and not (tmp_path / "r").exists()  # refused before anything started


def test_a_stage_names_its_own_datasets_and_models(tmp_path: Path) -> None:
    stages = {"stage1": {"datasets": ["bdd"]}, "stage2": {},
              "ratio-ablation": {"strategies": ["gen_cyclegan"], "ratios": [0.5, 0.25], "models": ["unet_micro"]}}
    runs = expand(load_study(_study(tmp_path, stages=stages, seeds=[0])))
    per_stage = {s: {(r.dataset, r.model) for r in runs if r.stage == s} for s in stages}
    assert per_stage["stage1"] == {("bdd", "unet_tiny"), ("bdd", "unet_micro")}
    assert per_stage["stage2"] == {(d, m) for d in ("bdd", "idd") for m in ("unet_tiny", "unet_micro")}
    assert per_stage["ratio-ablation"] == {("bdd", "unet_micro"), ("idd", "unet_micro")}
    with pytest.raises(ConfigError, match=r"stages.stage1.datasets \['acdc'\] are not the study's datasets"):
        load_study(_study(tmp_path, stages={"stage1": {"datasets": ["acdc"]}}))


def test_model_options_give_a_studys_models_their_pretrained_weights(tmp_path: Path) -> None:
    weights = tmp_path / "micro.pth"
    weights.write_bytes(b"")
    options = {"unet_micro": {"weights": str(weights)}, "unet_tiny": {"encoder_weights": "imagenet"}}
    runs = expand(load_study(_study(tmp_path, model_options=options, seeds=[0])))
    assert {(r.model, r.config.model.encoder_weights, r.config.model.weights) for r in runs} == {
        ("unet_micro", None, weights), ("unet_tiny", "imagenet", None)}
    for over, message in (({"fpn_r18": {"encoder_weights": "imagenet"}}, "model_options.fpn_r18: not one of"),
                          ({"unet_micro": {"weights": str(tmp_path / "no.pth")}}, "no.pth does not exist")):
        with pytest.raises(ConfigError, match=message):
            load_study(_study(tmp_path, model_options=over))
