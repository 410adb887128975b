"""The documentation a new user starts from: README yaml blocks, examples/ and docs/contracts.md stay true."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from proveseg.config import EvalConfig, RunConfig, TrainConfig, parse_yaml_model
from proveseg.data import manifest
from proveseg.data.audit import ConsumptionAudit
from proveseg.data.records import RecordTable
from proveseg.study.matrix import expand
from proveseg.study.spec import SlurmSpec, StudyConfig, load_study

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONTRACTS = ROOT / "docs" / "contracts.md"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _yaml_blocks() -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def _without_placeholders(text: str) -> str:
    """Literal ``...`` placeholders dropped: ``{...}`` becomes ``{}``, ``{a: 1, ...}`` becomes ``{a: 1}``."""
    return re.sub(r",\s*\.\.\.\s*}", "}", text).replace("...", "")


def _is_study(data: dict) -> bool:
    return "strategies" in data and "datasets" in data


BLOCKS = _yaml_blocks()


def test_readme_has_yaml_blocks() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_yaml_block(index: int) -> None:
    text = BLOCKS[index]
    source = f"README.md yaml block {index + 1}"
    data = yaml.safe_load(_without_placeholders(text))
    assert isinstance(data, dict), source
    if "..." not in text and "data" in data:  # a full run config
        parse_yaml_model(text, source, RunConfig)
    elif _is_study(data):  # a full study (placeholders inside a section only)
        parse_yaml_model(_without_placeholders(text), source, StudyConfig)
    elif set(data) == {"train"}:
        TrainConfig.model_validate(data["train"])
    elif set(data) == {"evaluation"}:
        EvalConfig.model_validate(data["evaluation"])
    elif set(data) == {"slurm"}:
        SlurmSpec.model_validate(data["slurm"])


def _block(first_key: str, value: str) -> dict:
    for text in BLOCKS:
        data = yaml.safe_load(_without_placeholders(text))
        if data.get(first_key) == value:
            return data
    raise AssertionError(f"no README yaml block with {first_key}: {value}")


def test_readme_run_config_block_lists_every_data_field() -> None:
    data = _block("name", "run")
    assert set(data["data"]) == set(RunConfig.model_fields["data"].annotation.model_fields)


def test_readme_training_block_is_a_full_run_config() -> None:
    """The Training block with the Run config block's data and the Metrics block's evaluation validates,
    and lists every RunConfig and TrainConfig field."""
    training = _block("name", "gen_faithful-s0")
    training["data"] = _block("name", "run")["data"]
    training["evaluation"] = next(yaml.safe_load(t)["evaluation"] for t in BLOCKS
                                  if set(yaml.safe_load(_without_placeholders(t))) == {"evaluation"})
    cfg = RunConfig.model_validate(training)
    assert cfg.strategy == "gen_faithful"
    assert set(training) | set(_block("name", "run")) == set(RunConfig.model_fields)  # `study` is in the first
    assert set(training["train"]) == set(TrainConfig.model_fields)


def test_readme_study_block_plans_runs() -> None:
    text = next(t for t in BLOCKS if _is_study(yaml.safe_load(_without_placeholders(t))))
    assert "..." not in text  # it pastes as is: no placeholder a user would have to fill in
    study = parse_yaml_model(text, "README.md study", StudyConfig)
    assert expand(study, ["stage1"])


def test_readme_links_contracts_not_design() -> None:
    text = README.read_text(encoding="utf-8")
    assert "DESIGN" not in text
    anchors = re.findall(r"docs/contracts\.md#([a-z0-9-]+)", text)
    assert anchors
    headings = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", CONTRACTS.read_text(encoding="utf-8"), re.M)}
    assert set(anchors) <= headings, set(anchors) - headings


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert "synthetic-study.yaml" in names
    assert len(names) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path: Path) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if _is_study(data):
        study = load_study(path)
        runs = expand(study, apply_top_k=False)  # stage2 top_k: its candidates before stage 1 runs
        assert runs
        assert {r.strategy for r in runs} == set(study.strategies)
    else:
        from proveseg.config import load_run_config

        load_run_config(path)


def test_synthetic_study_example() -> None:
    study = load_study(ROOT / "examples" / "synthetic-study.yaml")
    runs = expand(study)
    strategies = {r.strategy for r in runs}
    assert "baseline" in strategies and "gen_random_noise" in strategies
    assert sum(s.startswith("gen_") and s != "gen_random_noise" for s in strategies) == 2
    assert len({r.seed for r in runs}) == 2
    assert {r.stage for r in runs} == {"stage1"}
    assert study.models == ["unet_micro"]
    for spec in study.generators.values():
        assert str(spec.manifest).startswith("data/synthetic/generated/")
    for ds in study.datasets.values():
        assert str(ds.train.root).startswith("data/synthetic/")


def _contracts() -> str:
    return CONTRACTS.read_text(encoding="utf-8")


def test_contracts_name_every_manifest_reason_and_column() -> None:
    text = _contracts()
    missing = [r for r in (*manifest.REASONS, *manifest.MANIFEST_COLUMNS) if f"`{r}`" not in text]
    assert not missing


def test_contracts_name_every_composition_key() -> None:
    records = RecordTable.from_columns({"image": ["a.jpg", "b.jpg"], "label": ["a.png", "b.png"],
                                        "dataset": "synthetic", "domain": "clear_day", "kind": "real",
                                        "source": "synthetic"})
    audit = ConsumptionAudit(len(records))
    audit.update({"kind": ["real", "real"], "source": ["synthetic"] * 2, "domain": ["clear_day"] * 2,
                  "index": np.array([0, 1])})
    doc = audit.to_dict(records, {"batch_size": 2}, {"real/synthetic": "0" * 64})
    text = _contracts()
    keys = [*doc, "strategy", *doc["consumed"], "sequence_sha256", "iterations"]
    missing = [k for k in keys if f"`{k}`" not in text]
    assert not missing
