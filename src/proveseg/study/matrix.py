"""Expand a study into runs: one :class:`RunConfig` per (stage, strategy, dataset, model, ratio, seed).

Run directories follow the contract ``<results_root>/<stage>/<strategy>/<dataset>/<model>_ratio0p50_s0``.
stage1 and the ablations train on the ``clear_day`` real images only; stage2 on every domain.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from proveseg.config import (
    DataConfig,
    EvalConfig,
    GeneratedSourceConfig,
    NoiseConfig,
    RealSourceConfig,
    RunConfig,
)
from proveseg.data.records import SOURCE_DOMAIN
from proveseg.rundir import RunDir
from proveseg.study.spec import SplitSpec, StudyConfig

__all__ = ["DEFAULT_ABLATION_RATIOS", "PlannedRun", "RunKey", "expand", "run_dir_name", "strategy_type", "totals"]

DEFAULT_ABLATION_RATIOS = (1.0, 0.75, 0.5, 0.25, 0.125, 0.0)


_RUN_DIR_NAME = re.compile(r"^(?P<model>.+)_ratio(?P<ratio>\d+p\d+)_s(?P<seed>-?\d+)$")


@dataclass(frozen=True)
class RunKey:
    """Where a run sits in a study: ``<root>/<stage>/<strategy>/<dataset>/<model>_ratioXpXX_sN``."""

    stage: str
    strategy: str
    dataset: str
    model: str
    ratio: float
    seed: int

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> RunKey | None:
        """The key a run directory's path spells (the ratio as written, two decimals), else None."""
        match = _RUN_DIR_NAME.match(run_dir.name)
        if match is None or len(run_dir.parts) < 4:
            return None
        stage, strategy, dataset = run_dir.parts[-4:-1]
        return cls(stage, strategy, dataset, match["model"], float(match["ratio"].replace("p", ".")),
                   int(match["seed"]))


@dataclass(frozen=True)
class PlannedRun(RunKey):
    run_dir: Path
    config: RunConfig

    @property
    def status(self) -> str:
        return RunDir(self.run_dir).status()[0]

    def as_dict(self) -> dict[str, object]:
        return {"stage": self.stage, "strategy": self.strategy, "dataset": self.dataset, "model": self.model,
                "ratio": self.ratio, "seed": self.seed, "run_dir": str(self.run_dir), "status": self.status}


def strategy_type(strategy: str) -> str:
    """Gen, Noise, Std or Base (the leaderboard's type column)."""
    if strategy == "baseline":
        return "Base"
    if strategy == "gen_random_noise":
        return "Noise"
    return "Gen" if strategy.startswith("gen_") else "Std"


def run_dir_name(model: str, ratio: float, seed: int) -> str:
    """``<model>_ratioXpXX_sN``, the name ``RunKey.from_run_dir`` reads back."""
    return f"{model}_ratio{ratio:.2f}".replace(".", "p") + f"_s{seed}"


def _source(name: str, split: SplitSpec, domains: list[str] | None) -> RealSourceConfig:
    return RealSourceConfig(name=name, reader=split.reader, root=split.root, split=split.split,
                            domains=domains if domains is not None else split.domains,
                            on_invalid=split.on_invalid, domain=split.domain)


def _config(study: StudyConfig, stage: str, strategy: str, dataset: str, model: str, ratio: float, seed: int,
            run_dir: Path) -> RunConfig:
    ds = study.datasets[dataset]
    only_clear = [SOURCE_DOMAIN] if stage != "stage2" else None
    real = [_source(dataset, ds.train, only_clear).model_copy(update={"repeat": ds.repeat})]
    generated: list[GeneratedSourceConfig] = []
    noise = None
    transforms = study.transforms
    if strategy == "gen_random_noise":
        assert study.noise_reference is not None
        gen = study.generators[study.noise_reference]
        generated = [GeneratedSourceConfig(name=study.noise_reference, manifest=gen.manifest, repeat=gen.repeat,
                                           datasets=[dataset], on_invalid=gen.on_invalid, root=gen.root)]
        noise = NoiseConfig(reference=study.noise_reference)
    elif strategy.startswith("gen_"):
        name = strategy.removeprefix("gen_")
        gen = study.generators[name]
        generated = [GeneratedSourceConfig(name=name, manifest=gen.manifest, repeat=gen.repeat, datasets=[dataset],
                                           on_invalid=gen.on_invalid, root=gen.root)]
    elif strategy.startswith("std_"):
        transforms = study.augmentations[strategy.removeprefix("std_")]
    data = DataConfig(class_set=ds.class_set, real=real, generated=generated, noise=noise, real_gen_ratio=ratio,
                      batch_size=study.batch_size, seed=seed, num_workers=study.num_workers, transforms=transforms)
    evaluation = EvalConfig.model_validate({
        **study.evaluation.model_dump(), "val": [_source(dataset, ds.val, None)] if ds.val else [],
        "test": [_source(dataset, ds.test, None)]})
    return RunConfig(name=f"{stage}/{strategy}/{dataset}/{run_dir.name}", strategy=strategy, output_dir=run_dir,
                     data=data, model={"name": model}, train=study.train.model_copy(update={"seed": seed}),
                     evaluation=evaluation)


def _stage_runs(study: StudyConfig, stage: str) -> list[tuple[str, float]]:
    spec = study.stages[stage]
    if stage == "noise-ablation":
        ref = study.noise_reference
        strategies = spec.strategies or ["baseline", f"gen_{ref}", "gen_random_noise"]
        ratios = spec.ratios or study.ratios
    elif stage == "ratio-ablation":
        strategies = spec.strategies or [s for s in study.strategies if strategy_type(s) == "Gen"]
        ratios = spec.ratios or list(DEFAULT_ABLATION_RATIOS)
    else:
        strategies = spec.strategies or study.strategies
        ratios = spec.ratios or study.ratios
    out = []
    for strategy in strategies:
        if strategy_type(strategy) in ("Base", "Std"):
            out.append((strategy, 1.0))
        else:
            out += [(strategy, r) for r in ratios]
    return out


def stage2_strategies(study: StudyConfig) -> list[str] | None:
    """stage2 with ``top_k``: the K best strategies of the stage-1 leaderboard, plus the baseline."""
    spec = study.stages.get("stage2")
    if spec is None or spec.top_k is None:
        return None
    from proveseg.study.leaderboard import build_leaderboard

    rows = build_leaderboard(study.results_root, "stage1", n_boot=10)["rows"]
    ranked = [r["strategy"] for r in rows if r["strategy"] != "baseline"]
    if not ranked:
        raise ValueError(f"stage2 top_k={spec.top_k} needs proven stage1 runs under {study.results_root}/stage1")
    return ["baseline", *ranked[: spec.top_k]]


def expand(study: StudyConfig, stages: Sequence[str] | None = None, strategies: Sequence[str] | None = None,
           datasets: Sequence[str] | None = None, models: Sequence[str] | None = None) -> list[PlannedRun]:
    """Every run of the selected stages, filtered by strategy, dataset and model."""
    runs = []
    top_k = {"stage2": keep} if "stage2" in (stages or study.stages) and (keep := stage2_strategies(study)) else {}
    for stage in stages or list(study.stages):
        if stage not in study.stages:
            raise KeyError(f"stage {stage!r} is not in the study; valid: {', '.join(study.stages)}")
        for strategy, ratio in _stage_runs(study, stage):
            if strategies and strategy not in strategies:
                continue
            if stage in top_k and strategy not in top_k[stage]:
                continue
            for dataset in study.datasets:
                if datasets and dataset not in datasets:
                    continue
                for model in study.models:
                    if models and model not in models:
                        continue
                    for seed in study.seeds:
                        run_dir = study.results_root / stage / strategy / dataset / run_dir_name(model, ratio, seed)
                        runs.append(PlannedRun(stage, strategy, dataset, model, ratio, seed, run_dir,
                                               _config(study, stage, strategy, dataset, model, ratio, seed, run_dir)))
    return runs


def totals(runs: Sequence[PlannedRun]) -> dict[str, int]:
    return dict(Counter(r.strategy for r in runs))
