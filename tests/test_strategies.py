"""Strategy kinds: parsing, leaderboard types, planned groups and the proof rule."""

from __future__ import annotations

import pytest

from proveseg.config import DataConfig
from proveseg.strategies import STRATEGY_KINDS, parse_strategy, prove_shares, strategy_type


@pytest.mark.parametrize(("name", "kind", "arg"), [
    ("baseline", "Base", ""), ("gen_cyclegan", "Gen", "cyclegan"), ("gen_random_noise", "Noise", ""),
    ("std_photometric", "Std", "photometric"), ("selftrain_acdc", "ST", "acdc"), ("selftrain", "ST", "default"),
    ("custom", "Custom", ""),
])
def test_every_kind_parses_from_its_name(name: str, kind: str, arg: str) -> None:
    strategy = parse_strategy(name)
    assert (strategy.type, strategy.arg) == (kind, arg) and strategy_type(name) == kind


def test_an_unknown_name_lists_every_kind() -> None:
    with pytest.raises(ValueError, match="expected one of baseline, custom, gen_random_noise, gen_<generator>") as err:
        parse_strategy("fancy")
    assert all(k.pattern in str(err.value) for k in STRATEGY_KINDS.values())
    assert strategy_type("gen_") == "?"  # a prefix without its argument is no strategy


def test_shares_are_what_the_runs_plan() -> None:
    data = DataConfig(real_gen_ratio=0.75)
    assert parse_strategy("gen_a").shares(data) == {"real": 0.75, "generated": 0.25, "noise": 0.0, "unlabeled": 0.0}
    assert parse_strategy("gen_random_noise").shares(data)["noise"] == 0.25
    assert parse_strategy("baseline").shares(data) == {"real": 1.0, "generated": 0.0, "noise": 0.0, "unlabeled": 0.0}
    st = DataConfig(unlabeled_share=0.5)
    assert parse_strategy("selftrain_x").shares(st) == {"real": 0.5, "generated": 0.0, "noise": 0.0, "unlabeled": 0.5}


def test_the_proof_rule_holds_each_share_to_one_sample() -> None:
    shares = {"real": 0.5, "generated": 0.5}
    assert prove_shares(shares, {"real": 400, "generated": 400}) is None
    assert prove_shares(shares, {"real": 401, "generated": 399}) is None  # error diffusion's bound: one sample
    assert prove_shares(shares, {"real": 402, "generated": 398}) == "requested 50.0% generated, consumed 49.8% (398 " \
                                                                     "of 800)"
    assert prove_shares(shares, {"real": 800, "generated": 0}).startswith("requested 50.0% generated, consumed 0.0%")
    assert prove_shares({"real": 1.0}, {"real": 790, "noise": 10}) == "requested no noise samples, consumed 10"
    assert prove_shares({"real": 1.0}, {}) == "consumed no samples"


def test_a_generator_run_must_consume_its_own_generator() -> None:
    data = DataConfig(real_gen_ratio=0.5)
    consumed = {"per_kind": {"real": 400, "generated": 400}, "per_source": {"real": 400, "other": 400}}
    assert parse_strategy("gen_a").prove(data, consumed) == "no sample of source 'a' consumed"
    consumed["per_source"] = {"real": 400, "a": 400}
    assert parse_strategy("gen_a").prove(data, consumed) is None
    assert parse_strategy("baseline").prove(data, consumed) == "requested no generated samples, consumed 400"


def test_a_run_config_that_cannot_produce_the_strategy_is_refused() -> None:
    real = [{"name": "r", "root": "x"}]
    gen = [{"name": "a", "manifest": "m.csv"}]
    assert "needs generated data" in parse_strategy("gen_a").plan_problem(
        DataConfig.model_validate({"real": real, "real_gen_ratio": 0.5}))
    assert "needs the generated source 'a'" in parse_strategy("gen_a").plan_problem(
        DataConfig.model_validate({"real": real, "generated": [{"name": "b", "manifest": "m.csv"}],
                                   "real_gen_ratio": 0.5}))
    assert parse_strategy("gen_a").plan_problem(DataConfig.model_validate(
        {"real": real, "generated": gen, "real_gen_ratio": 0.5})) is None
    assert parse_strategy("baseline").plan_problem(
        DataConfig.model_validate({"real": real, "generated": gen, "real_gen_ratio": 0.5})) == \
        "strategy 'baseline' (Base) trains on 1 real, but the config asks for 0.5 real, 0.5 generated"
    unlabeled = [{"name": "u", "root": "y"}]
    st_with_generated = DataConfig.model_validate({"real": real, "generated": gen, "unlabeled": unlabeled,
                                                   "unlabeled_share": 0.5, "real_gen_ratio": 0.5})
    assert parse_strategy("selftrain_x").plan_problem(st_with_generated) == (
        "strategy 'selftrain_x' (ST) trains on 0.5 real, 0.5 unlabeled, but the config asks for 0.25 real, "
        "0.25 generated, 0.5 unlabeled")  # refused before training, not after it
    assert parse_strategy("selftrain_x").plan_problem(DataConfig.model_validate(
        {"real": real, "unlabeled": unlabeled})) == "self-training needs data.unlabeled_share > 0"
    assert "plans" not in str(parse_strategy("gen_a").plan_problem(DataConfig.model_validate(
        {"real": real, "generated": gen, "real_gen_ratio": 1.0})))  # a ratio-ablation point at 1.0 is fine
    assert "needs noise data" in parse_strategy("gen_random_noise").plan_problem(
        DataConfig.model_validate({"real": real, "generated": gen, "real_gen_ratio": 0.5}))


def test_required_sources_belong_to_their_group() -> None:
    """A generator strategy at ratio 1.0 (the ablation's end point) needs no sample of its generator."""
    data = DataConfig.model_validate({"real": [{"name": "r", "root": "x"}], "real_gen_ratio": 1.0,
                                      "generated": [{"name": "a", "manifest": "m.csv"}]})
    assert parse_strategy("gen_a").prove(data, {"per_kind": {"real": 80}, "per_source": {"r": 80}}) is None


def test_selftrain_and_selftrain_default_are_one_strategy() -> None:
    assert parse_strategy("selftrain").canonical == parse_strategy("selftrain_default").canonical
