"""Study YAML: datasets, generators, strategies, models, ratios, seeds, schedule and stages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from proveseg.config import (
    EvalConfig,
    GeneratedSourceConfig,
    ModelConfig,
    SelfTrainConfig,
    StrongViewConfig,
    TrainConfig,
    TransformConfig,
    check_source_input,
    load_yaml_model,
)
from proveseg.fields import Float, FolderName, InputPath, Int, Name, Repeat, Seed, folder_name_problem
from proveseg.readers import SourceConfig
from proveseg.strategies import parse_strategy
from proveseg.study.runkey import ratio_text

__all__ = ["STAGES", "AugmentationSpec", "DatasetSpec", "GeneratorSpec", "ModelOptions", "SelfTrainSpec", "SlurmSpec",
           "StudyConfig",
           "load_study", "split_source"]

STAGES = ("stage1", "stage2", "ratio-ablation", "noise-ablation")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # .inf/.nan: never a setting


def _name_optional(value: Any) -> Any:
    """A split may leave ``name`` out, or give it as ``""`` (how a stored study copy dumps it): the run names the
    source after the dataset's key."""
    if isinstance(value, Mapping) and value.get("name") == "":
        value = {k: v for k, v in value.items() if k != "name"}
    value = check_source_input(value)
    return {"name": "", **value} if isinstance(value, Mapping) else value


# Where one split of a dataset lives: a ``data.real`` entry, so exactly its reader's options, ``name`` optional.
SplitSpec = Annotated[SourceConfig, BeforeValidator(_name_optional)]


def split_source(name: str, split: SourceConfig, domains: list[str] | None = None) -> SourceConfig:
    """The run's source for a study split: the split with its reader's options, named ``name`` unless the split
    names itself, keeping ``domains`` when given (else the split's own)."""
    return split.model_copy(update={"name": split.name or name,
                                    "domains": domains if domains is not None else split.domains})


_SPLITS = ("train", "val", "test")
_DATASET_KEYS = frozenset({"class_set", "repeat", *_SPLITS})


def _expand_preset(value: Any) -> Any:
    """A preset ``{reader: bdd10k, root: ..., <reader options>}`` as explicit train/val/test splits.

    Each split is the reader's default for it (:meth:`SourceBase.default_splits`) under the preset's
    reader, root and options; a ``train``/``val``/``test`` entry given beside them is merged over the
    default (``val: null`` drops a split). A mapping without ``reader`` is left as it is.
    """
    if not isinstance(value, Mapping) or "reader" not in value:
        return value
    from proveseg.readers import READERS

    reader = value["reader"]
    schema = READERS.get(reader) if isinstance(reader, str) else None
    if schema is None:
        raise ValueError(f"unknown reader {reader!r}; valid: {', '.join(READERS)}")
    defaults = schema.default_splits()
    if defaults is None:
        raise ValueError(f"reader {reader!r} has no default splits: give train and test (each with reader and "
                         "root), or use a reader that knows its dataset's splits")
    shared = {k: v for k, v in value.items() if k not in _DATASET_KEYS}
    out: dict[str, Any] = {k: value[k] for k in ("class_set", "repeat") if k in value}
    for split in _SPLITS:
        base, given = defaults.get(split), value.get(split, {})
        if (split in value and given is None) or (base is None and split not in value):
            out[split] = None
            continue
        if not isinstance(given, Mapping):
            raise ValueError(f"{split}: expected a mapping of {reader} options to merge over the preset, or null")
        out[split] = {**shared, **(base or {}), **given}
    return out


class DatasetSpec(_Strict):
    """A dataset's splits; validation and test must be different images (checked again per run at training).

    Written out (``train``/``val``/``test``, each a source) or as a preset: ``{reader: bdd10k, root: ...}``
    takes the splits the reader names as its dataset's published ones (see :func:`_expand_preset`).
    """

    class_set: Name = "cityscapes19"
    train: SplitSpec
    val: SplitSpec | None = None
    test: SplitSpec
    repeat: Repeat = 1.0

    _preset = model_validator(mode="before")(_expand_preset)

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        if self.val is not None and self.val.model_dump(exclude={"name"}) == self.test.model_dump(exclude={"name"}):
            raise ValueError("val and test are the same split: best.pt would be chosen on the test images")
        from proveseg.data.classes import resolve_class_set
        from proveseg.data.labelmap import check_label_map_targets, load_label_map

        maps = {split.label_map: split.unmapped for split in (self.train, self.val, self.test)
                if split is not None and split.label_map is not None}
        if maps:
            class_set = resolve_class_set(self.class_set)
            for path, unmapped in maps.items():
                check_label_map_targets(load_label_map(path, unmapped), class_set, "label_map")
        return self


class GeneratorSpec(_Strict):
    """A generator's manifest. Its rows reuse their originals' labels, so by default the rows of dataset D decode
    through D's train split's label map (see :func:`proveseg.study.matrix.run_config`); ``label_map`` overrides."""

    manifest: InputPath
    repeat: Repeat = 1.0
    on_invalid: Literal["error", "skip"] = "error"
    root: InputPath | None = None
    pair: Literal["columns", "original"] = "columns"  # as GeneratedSourceConfig.pair
    pair_geometry: Literal["shared", "independent"] = "shared"
    label_map: InputPath | None = None  # CSV/YAML table of the label_path ids (default: the dataset's own map)
    unmapped: Literal["error", "ignore"] | None = None  # default: the dataset's train split's (error without a map)

    @model_validator(mode="after")
    def _check_label_map(self) -> GeneratorSpec:
        if self.label_map is not None:
            from proveseg.data.labelmap import LabelMapError, load_label_map

            try:
                load_label_map(self.label_map)
            except LabelMapError as exc:
                raise ValueError(f"label_map: {exc}") from None
        return self

    def source(self, name: str, dataset: str) -> GeneratedSourceConfig:
        """This generator's manifest as a run's generated source, restricted to ``dataset``'s rows."""
        return GeneratedSourceConfig(name=name, manifest=self.manifest, repeat=self.repeat, datasets=[dataset],
                                     on_invalid=self.on_invalid, root=self.root, pair=self.pair,
                                     pair_geometry=self.pair_geometry, label_map=self.label_map,
                                     unmapped=self.unmapped or "error")


class AugmentationSpec(TransformConfig):
    """A ``std_<name>`` strategy: real data with these transforms, and optionally self-training's strong view."""

    strong_view: StrongViewConfig | None = None  # makes std_<name> the control of a self-training strategy

    def transforms(self) -> TransformConfig:
        return TransformConfig.model_validate(self.model_dump(exclude={"strong_view"}))


class SelfTrainSpec(_Strict):
    """A self-training strategy ``selftrain_<name>``: its unlabeled images, their share of every batch, the teacher."""

    unlabeled: SplitSpec | None = None  # default: the dataset's own train split, every domain, labels ignored
    unlabeled_share: Float = Field(0.5, gt=0, lt=1)
    teacher: SelfTrainConfig = SelfTrainConfig()
    control: str | None = None  # an augmentation whose strong_view equals the teacher's: std_<control> is the control

    def unlabeled_source(self, study: StudyConfig, dataset: str) -> SourceConfig:
        """The run's unlabeled source (named ``<dataset>-unlabeled`` unless the split names itself)."""
        if self.unlabeled is not None:
            return split_source(f"{dataset}-unlabeled", self.unlabeled)
        return study.datasets[dataset].train.model_copy(update={"name": f"{dataset}-unlabeled"})


class StageSpec(_Strict):
    # each list: left out (null) = the study's own; an empty list would plan nothing, so it is refused
    strategies: list[str] | None = Field(None, min_length=1)  # default: the study's strategies
    ratios: list[Float] | None = Field(None, min_length=1)  # default: the study's ratios
    top_k: Int | None = Field(None, ge=1)  # stage2: only the best K strategies of stage1 (+ baseline)
    datasets: list[str] | None = Field(None, min_length=1)  # default: every dataset (stage1: clear_day images)
    models: list[str] | None = Field(None, min_length=1)  # default: the study's models (an ablation on one model)


class ModelOptions(_Strict):
    """Pretrained weights for one of the study's models (every run of that model starts from them)."""

    encoder_weights: Literal["imagenet"] | None = None  # downloaded by smp / the HF hub when a run builds the model
    weights: InputPath | None = None  # a local .pth/.safetensors file (relative paths start at the working directory)


class SlurmSpec(_Strict):
    """How each run of the study runs as a Slurm job: ``nodes`` x ``tasks_per_node`` ranks (one per GPU)."""

    partition: str | None = None
    nodes: Int = Field(1, ge=1)
    gpus_per_node: Int = Field(0, ge=0)
    tasks_per_node: Int | None = Field(None, ge=1)  # default: gpus_per_node (1 without GPUs); CPU ranks use gloo
    cpus_per_task: Int = Field(2, ge=1)
    mem_gb: Int = Field(8, ge=1)  # per node
    timeout_min: Int = Field(60, ge=1)  # per allocation: a longer run checkpoints and continues in the next one
    signal_delay_s: Int = Field(90, ge=10)  # SIGUSR2 this long before the time limit: checkpoint and requeue
    max_timeouts: Int = Field(10, ge=0)  # allocations a run may outlive by its time limit (preemptions: no limit)
    array_parallelism: Int = Field(8, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SlurmSpec:
        if self.gpus_per_node and self.tasks_per_node not in (None, self.gpus_per_node):
            raise ValueError(f"slurm.tasks_per_node {self.tasks_per_node} != gpus_per_node {self.gpus_per_node}: "
                             "each rank trains on one GPU")
        if self.signal_delay_s >= self.timeout_min * 60:
            raise ValueError(f"slurm.signal_delay_s {self.signal_delay_s} is not shorter than the time limit "
                             f"(timeout_min {self.timeout_min} = {self.timeout_min * 60} s): no time would be left to "
                             "train before the checkpoint signal")
        return self

    @property
    def ranks_per_node(self) -> int:
        return self.tasks_per_node or self.gpus_per_node or 1

    @property
    def world_size(self) -> int:
        """Ranks of one run: nodes x tasks per node."""
        return self.nodes * self.ranks_per_node


class StudyConfig(_Strict):
    """A matrix of runs: strategy x dataset x model x ratio x seed, per stage."""

    name: Name
    results_root: InputPath = Path("results")
    # keys become folders of run directories (<stage>/<strategy>/<dataset>/), strategy names embed the others
    datasets: dict[FolderName, DatasetSpec]
    generators: dict[FolderName, GeneratorSpec] = Field(default_factory=dict)
    strategies: list[str] = Field(min_length=1)
    noise_reference: str | None = None  # the generator whose entries gen_random_noise replaces
    augmentations: dict[FolderName, AugmentationSpec] = Field(default_factory=dict)  # std_<name>: real + these
    selftrain: dict[FolderName, SelfTrainSpec] = Field(default_factory=dict)  # selftrain_<name> (plain: default)
    models: list[str] = Field(default_factory=lambda: ["unet_tiny"], min_length=1)
    model_options: dict[str, ModelOptions] = Field(default_factory=dict)  # per model: encoder_weights / weights
    ratios: list[Float] = Field(default_factory=lambda: [0.5], min_length=1)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)  # left out: [0]; empty: refused
    batch_size: Int = Field(8, ge=1)
    num_workers: Int = Field(0, ge=0)
    transforms: TransformConfig = TransformConfig()
    train: TrainConfig = TrainConfig()
    evaluation: EvalConfig = EvalConfig()
    stages: dict[str, StageSpec] = Field(default_factory=lambda: {"stage1": StageSpec()})
    # iterations: every run trains train.max_iters steps (mixed runs see fewer real images than the baseline);
    # real_samples: a run whose batches are part real trains until it consumed the baseline's real samples
    budget: Literal["iterations", "real_samples"] = "iterations"
    slurm: SlurmSpec = SlurmSpec()

    def _generated_ratios(self) -> set[float]:
        """Every ratio a run of a ratio-using strategy is planned at, in any stage (the ablation's defaults too)."""
        from proveseg.study.matrix import DEFAULT_ABLATION_RATIOS

        ratios = set(self.ratios)
        for stage, spec in self.stages.items():
            ratios |= set(spec.ratios or (DEFAULT_ABLATION_RATIOS if stage == "ratio-ablation" else self.ratios))
        return ratios

    @model_validator(mode="after")
    def _check(self) -> StudyConfig:
        unknown = sorted(set(self.stages) - set(STAGES))
        if unknown:
            raise ValueError(f"stages {unknown} do not exist; valid: {', '.join(STAGES)}")
        _check_stage_subsets(self)
        _check_model_options(self)
        for r in [*self.ratios, *(x for s in self.stages.values() for x in (s.ratios or []))]:
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"ratio {r} outside [0, 1]")
        _check_strategies(self)
        for name, spec in self.selftrain.items():
            why = _control_problem(name, spec, self)
            if why:
                raise ValueError(why)
        from proveseg.models.registry import MODELS  # a typo here would otherwise fail each run after planning

        unknown_models = [m for m in self.models if m not in MODELS]
        if unknown_models:
            raise ValueError(f"models {unknown_models} are not in the registry; valid: {', '.join(MODELS)}")
        if self.results_root.exists() and not self.results_root.is_dir():
            raise ValueError(f"results_root {self.results_root} is a file, not a folder")
        if self.budget == "real_samples" and 0.0 in self._generated_ratios():
            raise ValueError("budget real_samples cannot equalise a run at ratio 0 (it consumes no real sample): drop "
                             "ratio 0 (the ratio ablation's default includes it) or use budget: iterations")
        canonical = [parse_strategy(x).canonical for x in self.strategies]  # selftrain = selftrain_default
        _no_repeats({"strategies": canonical, "models": self.models, "ratios": self.ratios, "seeds": self.seeds,
                     **{f"stages.{k}.{f}": v for k, s in self.stages.items()
                        for f, v in (("strategies", s.strategies), ("ratios", s.ratios)) if v}})
        if self.batch_size < 2 and any(r not in (0.0, 1.0) for r in self.ratios):
            raise ValueError(f"batch_size {self.batch_size} cannot hold both real and generated samples")
        return self


def _check_strategies(study: StudyConfig) -> None:
    """Every strategy named anywhere is known, runnable in this study, and a single folder name."""
    for strategy in sorted({*study.strategies, *(x for s in study.stages.values() for x in (s.strategies or []))}):
        problem = folder_name_problem(strategy)  # it names a folder of every run directory it plans
        if problem:
            raise ValueError(f"strategy {problem}")
        why = parse_strategy(strategy).check(study)  # an unknown name raises, listing the valid forms
        if why:
            raise ValueError(why)


def _check_model_options(study: StudyConfig) -> None:
    """Options of a model the study does not train are a typo; a weights file must exist (checked as a run's)."""
    for name, options in study.model_options.items():
        if name not in study.models:
            raise ValueError(f"model_options.{name}: not one of the study's models ({', '.join(study.models)})")
        try:
            ModelConfig(name=name, **options.model_dump())
        except ValidationError as exc:
            raise ValueError(f"model_options.{name}: {exc.errors()[0]['msg']}") from None


def _check_stage_subsets(study: StudyConfig) -> None:
    """A stage's own ``datasets`` / ``models`` must be the study's."""
    for stage, spec in study.stages.items():
        for what, names, known in (("datasets", spec.datasets, list(study.datasets)), ("models", spec.models,
                                                                                        study.models)):
            missing = [n for n in names or [] if n not in known]
            if missing:
                raise ValueError(f"stages.{stage}.{what} {missing} are not the study's {what}; "
                                 f"valid: {', '.join(known)}")


def _control_problem(name: str, spec: SelfTrainSpec, study: StudyConfig) -> str | None:
    """A self-training entry's control must exist, apply the teacher's strong view, and be run beside it."""
    planned_st = f"selftrain_{name}" in {parse_strategy(s).canonical for s in study.strategies}
    if spec.control is None:
        return (f"selftrain.{name} needs a control: an augmentation whose strong_view is the teacher's, planned as "
                "std_<control>, so that 'pseudo-labels help' is told apart from 'strong augmentation helps'"
                if planned_st else None)
    aug = study.augmentations.get(spec.control)
    if aug is None:
        return f"selftrain.{name}.control {spec.control!r}: no such augmentation; known: {sorted(study.augmentations)}"
    wanted = StrongViewConfig(jitter=spec.teacher.strong_jitter, cutmix=spec.teacher.cutmix,
                              share=spec.unlabeled_share)
    if aug.strong_view != wanted:
        return (f"selftrain.{name}.control {spec.control!r}: its strong_view {aug.strong_view} is not the teacher's "
                f"({wanted}): the control must apply the same strong augmentation")
    planned = {parse_strategy(s).canonical for s in study.strategies}
    if planned_st and f"std_{spec.control}" not in planned:
        return f"selftrain_{name} is planned without its control std_{spec.control}: add it to strategies"
    return None


def _no_repeats(lists: Mapping[str, Sequence[object]]) -> None:
    """A value listed twice would plan one run directory twice; ratios that name the same folder count as repeats."""
    for field, values in lists.items():
        keys = [ratio_text(float(v)) if "ratios" in field else v for v in values]  # type: ignore[arg-type]
        twice = sorted({str(v) for v, k in zip(values, keys, strict=True) if keys.count(k) > 1})
        if twice:
            raise ValueError(f"{field} lists {', '.join(twice)} more than once (each would be the same runs)")


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML; errors name the file and every bad field."""
    return load_yaml_model(path, StudyConfig)
