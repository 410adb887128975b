"""Expand a study into runs: one :class:`RunConfig` per (stage, strategy, dataset, model, ratio, seed).

Run directories follow the contract ``<results_root>/<stage>/<strategy>/<dataset>/<model>_ratio0p50_s0``
(the ratio as written, never rounded: ``ratio0p125``). stage1 and the ablations train on the
``clear_day`` real images only; stage2 on every domain. What a strategy adds to the real-only
run (generated data, noise, an augmentation, unlabeled data and a teacher) is the strategy's
own business (``proveseg.strategies``); the run's identity is written into its ``run.yaml``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from proveseg.config import DataConfig, EvalConfig, RunConfig, StudyRunConfig
from proveseg.data.records import SOURCE_DOMAIN
from proveseg.readers import SourceBase
from proveseg.rundir import RunDir, RunLock
from proveseg.strategies import BASELINE, NOISE_CONTROL, RunData, generator_strategy, parse_strategy
from proveseg.study.runkey import RunKey, run_dir_name
from proveseg.study.spec import StudyConfig, split_source

__all__ = ["DEFAULT_ABLATION_RATIOS", "PlannedRun", "RunKey", "Stage2Pending", "expand", "run_config", "run_dir_name",
           "totals"]

DEFAULT_ABLATION_RATIOS = (1.0, 0.75, 0.5, 0.25, 0.125, 0.0)


@dataclass(frozen=True)
class PlannedRun(RunKey):
    run_dir: Path
    config: RunConfig

    @property
    def status(self) -> str:
        """todo, done, failed; running (another process holds it now); interrupted (its trainer died);
        changed (its run.yaml differs from what the study plans now: --force, or a new seed)."""
        from proveseg.study.reference import run_differences

        rd = RunDir(self.run_dir)
        state = rd.status()[0]
        if RunLock(self.run_dir).held_elsewhere():
            return "running"
        if (state == "done" or rd.last.exists()) and run_differences(self.run_dir, self.config):
            return "changed"
        return "interrupted" if state == "running" else state

    def as_dict(self) -> dict[str, object]:
        return {"stage": self.stage, "strategy": self.strategy, "dataset": self.dataset, "model": self.model,
                "ratio": self.ratio, "seed": self.seed, "run_dir": str(self.run_dir), "status": self.status}


def run_config(study: StudyConfig, key: RunKey, run_dir: Path) -> RunConfig:
    """The resolved config of one run: the study's real-only run, then what its strategy adds."""
    ds = study.datasets[key.dataset]
    only_clear = [SOURCE_DOMAIN] if key.stage != "stage2" else None
    real = [split_source(key.dataset, ds.train, only_clear).model_copy(update={"repeat": ds.repeat})]
    data = DataConfig(class_set=ds.class_set, real=real, real_gen_ratio=key.ratio, batch_size=study.batch_size,
                      seed=key.seed, num_workers=study.num_workers, transforms=study.transforms)
    base = RunData(data, study.train.model_copy(update={"seed": key.seed}))
    strategy = parse_strategy(key.strategy)
    configured = _budgeted(study, key, strategy.configure(study, key.dataset, base))
    evaluation = EvalConfig.model_validate({
        **study.evaluation.model_dump(), "val": [split_source(key.dataset, ds.val)] if ds.val else [],
        "test": [split_source(key.dataset, ds.test)]})
    return RunConfig(name=f"{key.stage}/{key.strategy}/{key.dataset}/{run_dir.name}", strategy=key.strategy,
                     study=StudyRunConfig(study=study.name, stage=key.stage, dataset=key.dataset, budget=study.budget),
                     output_dir=run_dir, data=_generated_labels(study, key.dataset, configured.data),
                     model=_model(study, key.model), train=configured.train, evaluation=evaluation)


def _maps_labels(split: SourceBase) -> bool:
    """Whether a split's label files hold ids of their own: a ``label_map``, or a reader with a built-in table."""
    return split.label_map is not None or type(split).builtin_label_map is not SourceBase.builtin_label_map


def _generated_labels(study: StudyConfig, dataset: str, data: DataConfig) -> DataConfig:
    """Generated rows reuse their originals' labels: unless a generator names its own ``label_map``, its rows
    decode like ``dataset``'s real images, through its train split's map (``labels_like``: the split, written
    into run.yaml, so the audit re-derives the same records). Datasets without a map leave the sources as they are.
    """
    train = study.datasets[dataset].train
    if not data.generated or not _maps_labels(train):
        return data
    like = split_source(dataset, train)
    generated = []
    for gen in data.generated:
        spec = study.generators.get(gen.name)
        if gen.label_map is None and gen.labels_like is None:
            unmapped = spec.unmapped if spec is not None and spec.unmapped is not None else train.unmapped
            gen = gen.model_copy(update={"labels_like": like, "unmapped": unmapped})
        generated.append(gen)
    return data.model_copy(update={"generated": generated})


def _model(study: StudyConfig, name: str) -> dict[str, object]:
    """The run's model: its name, and the study's pretrained weights for it when given."""
    options = study.model_options.get(name)
    return {"name": name, **(options.model_dump(exclude_none=True) if options else {})}


def _budgeted(study: StudyConfig, key: RunKey, run: RunData) -> RunData:
    """Under ``budget: real_samples`` a run whose batches are part real trains longer, until it consumed as many
    real samples as the baseline does in ``train.max_iters`` steps."""
    if study.budget == "iterations":
        return run
    real_share = parse_strategy(key.strategy).shares(run.data)["real"]
    if real_share <= 0:
        raise ValueError(f"{key.strategy} at ratio {key.ratio:g} consumes no real sample: budget real_samples cannot "
                         "equalise it (drop ratio 0 from the study, or use budget: iterations)")
    iters = math.ceil(run.train.max_iters / real_share - 1e-9)
    return RunData(run.data, run.train.model_copy(update={"max_iters": iters}))


def _stage_runs(study: StudyConfig, stage: str) -> list[tuple[str, float]]:
    spec = study.stages[stage]
    if stage == "noise-ablation":
        assert study.noise_reference is not None  # the study's validation requires it for this stage
        strategies = spec.strategies or [BASELINE, generator_strategy(study.noise_reference), NOISE_CONTROL]
        ratios = spec.ratios or study.ratios
    elif stage == "ratio-ablation":
        strategies = spec.strategies or [s for s in study.strategies if parse_strategy(s).generated]
        ratios = spec.ratios or list(DEFAULT_ABLATION_RATIOS)
    else:
        strategies = spec.strategies or study.strategies
        ratios = spec.ratios or study.ratios
    out = []
    for strategy in strategies:
        out += [(strategy, r) for r in ratios] if parse_strategy(strategy).uses_ratio else [(strategy, 1.0)]
    return out


class Stage2Pending(ValueError):
    """stage2 keeps the top K stage-1 strategies, and stage 1 has no proven run yet."""


def stage2_strategies(study: StudyConfig) -> list[str] | None:
    """stage2 with ``top_k``: the K best strategies of the stage-1 leaderboard, plus the baseline."""
    spec = study.stages.get("stage2")
    if spec is None or spec.top_k is None:
        return None
    from proveseg.study.leaderboard import build_leaderboard  # the leaderboard reads runs; it never plans them

    rows = build_leaderboard(study.results_root, "stage1", n_boot=10)["rows"] if study.results_root.is_dir() else []
    ranked = [r["strategy"] for r in rows if r["strategy"] != BASELINE]
    if not ranked:
        raise Stage2Pending(f"stage2 top_k={spec.top_k} needs proven stage1 runs under {study.results_root}/stage1: "
                            "run --stage stage1 first")
    return [BASELINE, *ranked[: spec.top_k]]


def _keys(study: StudyConfig, stage: str, strategies: Sequence[str] | None, datasets: Sequence[str] | None,
          models: Sequence[str] | None) -> list[RunKey]:
    keys = []
    spec = study.stages[stage]
    stage_datasets = [d for d in spec.datasets or study.datasets if not datasets or d in datasets]
    stage_models = [m for m in spec.models or study.models if not models or m in models]
    for strategy, ratio in _stage_runs(study, stage):
        if strategies and strategy not in strategies:
            continue
        keys += [RunKey(stage, strategy, dataset, model, ratio, seed)
                 for dataset in stage_datasets for model in stage_models for seed in study.seeds]
    return keys


def expand(study: StudyConfig, stages: Sequence[str] | None = None, strategies: Sequence[str] | None = None,
           datasets: Sequence[str] | None = None, models: Sequence[str] | None = None,
           apply_top_k: bool = True) -> list[PlannedRun]:
    """Every run of the selected stages, filtered by strategy, dataset and model.

    ``apply_top_k=False`` plans stage2 for every strategy (the reference the leaderboard checks runs
    against), without reading the stage-1 leaderboard.
    """
    for stage in stages or []:
        if stage not in study.stages:
            raise KeyError(f"stage {stage!r} is not in the study; valid: {', '.join(study.stages)}")
    runs = []
    keep = stage2_strategies(study) if apply_top_k and "stage2" in (stages or study.stages) else None
    for stage in stages or list(study.stages):
        for key in _keys(study, stage, strategies, datasets, models):
            if stage == "stage2" and keep is not None and key.strategy not in keep:
                continue
            run_dir = study.results_root / stage / key.strategy / key.dataset / run_dir_name(key.model, key.ratio,
                                                                                              key.seed)
            runs.append(PlannedRun(key.stage, key.strategy, key.dataset, key.model, key.ratio, key.seed, run_dir,
                                   run_config(study, key, run_dir)))
    return runs


def totals(runs: Sequence[PlannedRun]) -> dict[str, int]:
    return dict(Counter(r.strategy for r in runs))
