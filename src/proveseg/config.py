"""Run configuration: YAML in (``yaml.safe_load``), validated by pydantic, resolved YAML out.

Unknown keys are errors, so a typo never silently falls back to a default. Relative paths are
taken from the current working directory (the examples assume the repository root).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from proveseg.data.labelmap import LabelMap, load_label_map, validate_label_map
from proveseg.fields import SEED_LIMIT, Flag, Float, InputPath, Int, Name, Repeat, Seed
from proveseg.readers import SourceConfig

__all__ = [
    "ClassSetSpec",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "GeneratedSourceConfig",
    "NoiseConfig",
    "RunConfig",
    "StrongViewConfig",
    "StudyRunConfig",
    "TransformConfig",
    "dump_config",
    "load_run_config",
    "parse_run_config",
]

OnInvalid = Literal["error", "skip"]
M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file that does not validate; the message names the file and each bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # .inf/.nan: never a setting


def check_source_input(value: Any) -> Any:
    """A source mapping as written, before its reader's schema coerces it: ``name`` and ``root`` must not be empty,
    an integer option (``take_seed``, ``domain_level``) must be a YAML integer, and ``take_seed`` a seed.

    Done here rather than in each reader's schema so that every reader, built-in or registered, gets it.
    """
    if not isinstance(value, Mapping):
        return value
    for key in ("name", "root", "label_map"):
        if key in value and isinstance(value[key], str) and not value[key].strip():
            raise ValueError(f"{key}: empty string" + (" (it would silently mean the working directory)"
                                                     if key != "name" else ""))
    from proveseg.readers import READERS

    schema = READERS.get(value.get("reader", "folder")) if isinstance(value.get("reader", "folder"), str) else None
    for key, info in (schema.model_fields.items() if schema is not None else ()):
        raw = value.get(key)
        if key in value and info.annotation is int and (isinstance(raw, bool) or not isinstance(raw, int)):
            raise ValueError(f"{key}: expected an integer, got {raw!r}")
    seed = value.get("take_seed", 0)
    if isinstance(seed, int) and not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"take_seed: {seed} outside [0, 2**32)")
    return value


# A source as a config writes it (data.real, data.unlabeled, evaluation.val/test, a study's splits)
CheckedSource = Annotated[SourceConfig, BeforeValidator(check_source_input)]


class GeneratedSourceConfig(_Strict):
    """One generator's manifest (../shared/DESIGN.md section 3)."""

    name: Name
    manifest: InputPath
    repeat: Repeat = 1.0
    datasets: list[str] | None = None
    target_domains: list[str] | None = None
    root: InputPath | None = None  # data root that relative paths may not leave (default: marker or manifest folder)
    allow_absolute: Flag = False
    on_invalid: OnInvalid = "error"
    deep: Flag = False
    pair: Literal["columns", "original"] = "columns"  # second image: the image2_path column, or the original
    pair_geometry: Literal["shared", "independent"] = "shared"  # shared: the pair gets the same crop and flip
    # the label_path (and label2_path) ids: as they are, through a CSV/YAML table, or like a source's labels
    # (that source's label_map, else its reader's built-in table: a generator made from Mapillary images)
    label_map: InputPath | None = None
    labels_like: CheckedSource | None = None
    unmapped: Literal["error", "ignore"] = "error"  # an id the map in effect does not cover: fail, or 255

    @model_validator(mode="after")
    def _check_label_map(self) -> GeneratedSourceConfig:
        if self.label_map is not None and self.labels_like is not None:
            raise ValueError("label_map and labels_like both say how the labels are mapped: give one")
        validate_label_map(self.label_map, self.unmapped)
        return self

    def effective_label_map(self) -> LabelMap | None:
        """The table the labels decode through: ``label_map``, else ``labels_like``'s, else None (as they are).

        ``unmapped`` is the policy of whichever table is in effect.
        """
        if self.label_map is not None:
            return load_label_map(self.label_map, self.unmapped)
        like = self.labels_like.effective_label_map() if self.labels_like is not None else None
        if like is None or like.unmapped == self.unmapped:
            return like
        return LabelMap(like.lut, like.origin, self.unmapped)


class NoiseConfig(_Strict):
    """The noise control: the reference generator's entries as uniform noise, labels kept."""

    reference: Name


Size = tuple[Annotated[Int, Field(ge=1)], Annotated[Int, Field(ge=1)]]  # (H, W) in pixels
Probability = Annotated[Float, Field(ge=0, le=1)]
ClassId = Annotated[Int, Field(ge=0, le=254)]


class TransformConfig(_Strict):
    resize: Size | None = None
    scale: tuple[Float, Float] | None = None
    crop: Size | None = None
    hflip: Flag = True
    jitter: Float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> TransformConfig:
        if self.scale is not None and not (0 < self.scale[0] <= self.scale[1] < 100):
            raise ValueError(f"scale {list(self.scale)}: expected [min, max] with 0 < min <= max")
        return self


class ClassSetSpec(_Strict):
    """A class set written out whole, so a run, a checkpoint or a metrics file never depends on a lookup.

    Ids are the positions 0..N-1 of ``names``; ``ignore_index`` marks pixels without a class.
    """

    name: Name
    names: list[Name]
    ids: list[Int]
    palette: list[tuple[Int, Int, Int]]
    ignore_index: Literal[255] = 255  # proveseg's confusion matrices and losses reserve 255

    @model_validator(mode="after")
    def _check(self) -> ClassSetSpec:
        if self.ids != list(range(len(self.names))):
            raise ValueError(f"class set {self.name!r}: ids must be 0..{len(self.names) - 1} in order")
        if len(self.palette) != len(self.names):
            raise ValueError(f"class set {self.name!r}: {len(self.names)} names but {len(self.palette)} colours")
        return self


class DataConfig(_Strict):
    """Training data: sources, the real/generated ratio and the batch."""

    class_set: str | ClassSetSpec = "cityscapes19"  # a built-in name, a class table file, or the set itself
    real: list[CheckedSource] = Field(default_factory=list)
    generated: list[GeneratedSourceConfig] = Field(default_factory=list)
    noise: NoiseConfig | None = None
    unlabeled: list[CheckedSource] = Field(default_factory=list)  # labels ignored (group "unlabeled")
    unlabeled_share: Float = Field(0.0, ge=0, lt=1)  # share of every batch taken from ``unlabeled``
    real_gen_ratio: Float = Field(1.0, ge=0, le=1)
    batch_size: Int = Field(8, ge=1)
    seed: Seed = 0  # the batch plan and every sample's augmentation draw
    num_workers: Int = Field(0, ge=0)
    prefetch_factor: Int = Field(2, ge=1)  # batches each loader worker prepares ahead
    pin_memory: Literal["auto", "on", "off"] = "auto"  # auto: pinned when the run trains on CUDA
    decode_device: Literal["cpu", "cuda"] = "cpu"  # cuda: JPEG images decoded by nvJPEG on the training GPU
    transforms: TransformConfig = TransformConfig()

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        names = [s.name for s in self.real] + [g.name for g in self.generated] + [u.name for u in self.unlabeled]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique, repeated: {dupes}")
        if self.unlabeled_share > 0 and self.batch_size * (1 - self.unlabeled_share) < 1:
            raise ValueError(f"batch_size {self.batch_size} with unlabeled_share {self.unlabeled_share} leaves no "
                             "labeled sample in a batch")
        if self.noise is not None and self.noise.reference not in {g.name for g in self.generated}:
            raise ValueError(f"noise.reference {self.noise.reference!r} is not one of the generated sources "
                             f"{[g.name for g in self.generated]}")
        return self


class EvalConfig(_Strict):
    """Validation / test sets and how to run inference on them."""

    val: list[CheckedSource] = Field(default_factory=list)
    test: list[CheckedSource] = Field(default_factory=list)
    mode: Literal["whole", "slide"] = "whole"
    crop: Size | None = None  # slide window
    stride: Size | None = None  # slide step
    flip: Flag = False
    batch_size: Int = Field(4, ge=1)
    n_boot: Int = Field(1000, ge=10)  # bootstrap resamples for the 95% interval

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        if self.mode == "slide" and (self.crop is None or self.stride is None):
            raise ValueError("mode slide needs crop and stride")
        return self


class ModelConfig(_Strict):
    name: str = "unet_tiny"  # a key of proveseg.models.MODELS
    encoder_weights: Literal["imagenet"] | None = None  # imagenet downloads through smp / the HF hub when asked
    weights: InputPath | None = None  # a local .pth/.pt/.bin/.safetensors file loaded after the build (never downloads)

    @field_validator("weights")
    @classmethod
    def _weights_file(cls, value: Path | None) -> Path | None:
        suffixes = (".pth", ".pt", ".bin", ".safetensors")
        if value is not None and value.suffix not in suffixes:
            raise ValueError(f"weights file {value} must end in one of {', '.join(suffixes)}")
        if value is not None and not value.is_file():
            raise ValueError(f"weights file {value} does not exist (relative paths start at {Path.cwd()})")
        return value


class OptimizerConfig(_Strict):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: Float = Field(1e-3, gt=0)
    weight_decay: Float = Field(0.01, ge=0)
    momentum: Float = Field(0.9, ge=0, lt=1)  # sgd


class ScheduleConfig(_Strict):
    warmup_iters: Int = Field(0, ge=0)  # linear warm-up from 0
    policy: Literal["poly", "cosine", "constant"] = "poly"
    power: Float = Field(0.9, gt=0)  # poly
    min_lr: Float = Field(0.0, ge=0)


class LossConfig(_Strict):
    ce_weight: Float = Field(1.0, ge=0)  # cross-entropy, ignore 255
    dice_weight: Float = Field(0.0, ge=0)  # smp DiceLoss (multiclass, ignore 255)


class EarlyStoppingConfig(_Strict):
    patience: Int = Field(5, ge=1)  # evaluations without improvement
    min_iters: Int = Field(0, ge=0)  # never stop before this iteration


class EMAConfig(_Strict):
    decay: Float = Field(0.999, gt=0, lt=1)


class SelfTrainConfig(_Strict):
    """FixMatch/UniMatch-style self-training: an EMA teacher labels weak views, the student learns
    the confident pixels on strong views (photometric jitter + CutMix)."""

    teacher_decay: Float = Field(0.99, gt=0, lt=1)
    # global, class-wise ({class id: threshold}, others 0.9), or adaptive; thresholds are probabilities
    threshold: Probability | dict[ClassId, Probability] | Literal["adaptive"] = 0.9
    adaptive_quantile: Float = Field(0.5, gt=0, lt=1)  # adaptive: per-class quantile of teacher confidence
    adaptive_floor: Float = Field(0.5, ge=0, lt=1)  # adaptive thresholds never go below this
    adaptive_momentum: Float = Field(0.9, ge=0, lt=1)
    st_weight: Float = Field(1.0, ge=0)
    st_warmup_iters: Int = Field(0, ge=0)  # st_weight ramps linearly from 0
    strong_jitter: Float = Field(0.4, ge=0, le=1)
    cutmix: Flag = True


class StrongViewConfig(_Strict):
    """Self-training's strong view applied to labeled images: the control that separates "pseudo-labels help"
    from "strong augmentation helps" (use the self-training entry's strong_jitter and cutmix)."""

    jitter: Float = Field(0.4, ge=0, le=1)
    cutmix: Flag = True
    share: Float = Field(1.0, gt=0, le=1)  # of every batch (its last images): self-training's unlabeled share


class TrainConfig(_Strict):
    max_iters: Int = Field(1000, ge=1)
    eval_interval: Int = Field(200, ge=1)
    checkpoint_interval: Int = Field(200, ge=1)  # last.pt every N iterations
    log_interval: Int = Field(10, ge=1)
    grad_accum: Int = Field(1, ge=1)  # batches per optimizer step
    grad_clip: Float | None = Field(None, gt=0)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    loss: LossConfig = LossConfig()
    best_metric: str = "mIoU"  # a name of evaluate.metrics.SCALAR_METRICS, or domain_mean_mIoU

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.schedule.min_lr > self.optimizer.lr:
            raise ValueError(f"schedule.min_lr {self.schedule.min_lr:g} is above optimizer.lr {self.optimizer.lr:g}")
        if self.schedule.warmup_iters >= self.max_iters:
            raise ValueError(f"schedule.warmup_iters {self.schedule.warmup_iters} leaves no step after the warm-up "
                             f"(max_iters {self.max_iters})")
        return self

    @field_validator("best_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        from proveseg.evaluate.metrics import SCALAR_METRICS  # numpy only: loading a config never imports torch

        valid = [*SCALAR_METRICS, "domain_mean_mIoU"]
        if value not in valid:
            raise ValueError(f"{value!r} is not a metric; valid: {', '.join(valid)}")
        return value
    early_stopping: EarlyStoppingConfig | None = None
    ema: EMAConfig | None = None
    selftrain: SelfTrainConfig | None = None  # needs data.unlabeled and data.unlabeled_share > 0
    strong_view: StrongViewConfig | None = None  # labeled batches get the strong view too (a std_* control)
    amp: Literal["none", "bf16", "fp16"] = "none"  # bf16 on CUDA or CPU; fp16 (with a loss scaler) CUDA only
    channels_last: Flag = False
    compile: Flag = False
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")  # auto | cpu | cuda | cuda:N
    seed: Seed = 0  # model initialisation and torch RNG
    num_threads: Int | None = Field(None, ge=1)  # torch CPU threads
    tensorboard: Flag = False  # also write log.jsonl's scalars as TensorBoard events in <run_dir>/tensorboard


class StudyRunConfig(_Strict):
    """Where a study placed a run (written by the study's matrix; absent from hand-written configs)."""

    study: str
    stage: str
    dataset: str
    budget: Literal["iterations", "real_samples"] = "iterations"  # what the study held equal across strategies


class RunConfig(_Strict):
    """One training run: data, model, schedule, evaluation, and where it writes."""

    @model_validator(mode="after")
    def _every_share_is_drawn(self) -> RunConfig:
        d, batches = self.data, self.train.max_iters * self.train.grad_accum
        labeled = 1.0 - d.unlabeled_share
        other = "noise" if d.noise else "generated"
        shares = {"real": labeled * d.real_gen_ratio, other: labeled * (1 - d.real_gen_ratio),
                  "unlabeled": d.unlabeled_share}
        for group, share in shares.items():
            if share > 0 and share * d.batch_size * batches < 1:
                raise ValueError(f"the {group} group's share {share:g} of batches of {d.batch_size} rounds to no "
                                 f"sample in the run's {batches} batches: raise it or set it to 0")
        return self

    @model_validator(mode="after")
    def _model_trains_on_the_batch(self) -> RunConfig:
        if self.data.batch_size < 2:  # only then can a model refuse it: the registry (and torch) is imported only here
            from proveseg.models.registry import batch_problem

            problem = batch_problem(self.model.name, self.data.batch_size)
            if problem:
                raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _selftrain_needs_unlabeled(self) -> RunConfig:
        if self.train.selftrain is not None and (not self.data.unlabeled or self.data.unlabeled_share <= 0):
            raise ValueError("train.selftrain needs data.unlabeled sources and data.unlabeled_share > 0")
        if self.train.selftrain is not None and self.train.strong_view is not None:
            raise ValueError("train.strong_view is self-training's control (labeled images only): not with "
                             "train.selftrain")
        if self.train.selftrain is None and self.data.unlabeled_share > 0:
            raise ValueError("data.unlabeled_share > 0 needs train.selftrain (unlabeled images have no loss otherwise)")
        return self

    name: Name = "run"
    strategy: str = "custom"  # a strategy name (proveseg.strategies); its proof rule is checked at the end
    study: StudyRunConfig | None = None
    output_dir: InputPath = Path("results/run")
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluation: EvalConfig = EvalConfig()


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then overrides: legitimate, merged below
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (lines {seen[key]} and {line})",
                    key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads ``1e-3`` as a string: only ``1.0e-3`` is a float there. Configs write ``lr: 1e-3``, and
# float fields are strict (a quoted ``'0.5'`` is refused), so exponent floats without a dot resolve as YAML 1.2 does.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def parse_yaml_model(text: str, source: str, model: type[M]) -> M:
    """Validate YAML text against a pydantic model; ConfigError names ``source`` and every bad field.

    Safe loading only: tags such as ``!!python/object`` are rejected, never constructed; a key given
    twice in one mapping is an error (plain YAML keeps the last one silently).
    """
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {exc.error_count()} invalid field(s)"]
        lines += [f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def load_yaml_model(path: str | Path, model: type[M]) -> M:
    """Read a YAML file and validate it (see :func:`parse_yaml_model`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start})") from None
    return parse_yaml_model(text, str(path), model)


def parse_run_config(text: str, source: str = "<config>") -> RunConfig:
    """Validate run-config YAML text (e.g. the copy stored in a checkpoint)."""
    return parse_yaml_model(text, source, RunConfig)


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a run config; raises ConfigError naming the file and fields."""
    return load_yaml_model(path, RunConfig)


def dump_config(config: BaseModel) -> str:
    """Fully resolved YAML (every default written out)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
