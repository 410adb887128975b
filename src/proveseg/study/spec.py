"""Study YAML: datasets, generators, strategies, models, ratios, seeds, schedule and stages."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from proveseg.config import EvalConfig, TrainConfig, TransformConfig, load_yaml_model

__all__ = ["STAGES", "DatasetSpec", "GeneratorSpec", "SlurmSpec", "StudyConfig", "load_study"]

STAGES = ("stage1", "stage2", "ratio-ablation", "noise-ablation")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitSpec(_Strict):
    """Where one split of a dataset lives (a reader and its options, as in ``data.real`` entries)."""

    reader: Literal["folder", "cityscapes", "acdc", "csv"] = "folder"
    root: Path
    split: str = "train"
    domains: list[str] | None = None
    on_invalid: Literal["error", "skip"] = "error"
    domain: str | None = None


class DatasetSpec(_Strict):
    class_set: str = "cityscapes19"
    train: SplitSpec
    val: SplitSpec | None = None
    test: SplitSpec
    repeat: float = Field(1.0, gt=0)


class GeneratorSpec(_Strict):
    manifest: Path
    repeat: float = Field(1.0, gt=0)
    on_invalid: Literal["error", "skip"] = "error"
    root: Path | None = None


class StageSpec(_Strict):
    strategies: list[str] | None = None  # default: the study's strategies
    ratios: list[float] | None = None  # default: the study's ratios
    top_k: int | None = Field(None, ge=1)  # stage2: only the best K strategies of stage1 (+ baseline)


class SlurmSpec(_Strict):
    partition: str | None = None
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(2, ge=1)
    mem_gb: int = Field(8, ge=1)
    timeout_min: int = Field(60, ge=1)
    array_parallelism: int = Field(8, ge=1)


class StudyConfig(_Strict):
    """A matrix of runs: strategy x dataset x model x ratio x seed, per stage."""

    name: str
    results_root: Path = Path("results")
    datasets: dict[str, DatasetSpec]
    generators: dict[str, GeneratorSpec] = Field(default_factory=dict)
    strategies: list[str]
    noise_reference: str | None = None  # the generator whose entries gen_random_noise replaces
    augmentations: dict[str, TransformConfig] = Field(default_factory=dict)  # std_<name>: real data + these
    models: list[str] = Field(default_factory=lambda: ["unet_tiny"])
    ratios: list[float] = Field(default_factory=lambda: [0.5])
    seeds: list[int] = Field(default_factory=lambda: [0])
    batch_size: int = Field(8, ge=1)
    num_workers: int = Field(0, ge=0)
    transforms: TransformConfig = TransformConfig()
    train: TrainConfig = TrainConfig()
    evaluation: EvalConfig = EvalConfig()
    stages: dict[str, StageSpec] = Field(default_factory=lambda: {"stage1": StageSpec()})
    slurm: SlurmSpec = SlurmSpec()

    @model_validator(mode="after")
    def _check(self) -> StudyConfig:
        unknown = sorted(set(self.stages) - set(STAGES))
        if unknown:
            raise ValueError(f"stages {unknown} do not exist; valid: {', '.join(STAGES)}")
        for r in [*self.ratios, *(x for s in self.stages.values() for x in (s.ratios or []))]:
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"ratio {r} outside [0, 1]")
        for strategy in {*self.strategies, *(x for s in self.stages.values() for x in (s.strategies or []))}:
            kind, _, rest = strategy.partition("_")
            if strategy == "baseline":
                continue
            if strategy == "gen_random_noise":
                if self.noise_reference not in self.generators:
                    raise ValueError(f"gen_random_noise needs noise_reference naming one of {sorted(self.generators)}")
            elif kind == "gen":
                if rest not in self.generators:
                    raise ValueError(f"strategy {strategy!r}: no generator {rest!r}; known: {sorted(self.generators)}")
            elif kind == "std":
                if rest not in self.augmentations:
                    raise ValueError(f"strategy {strategy!r}: no augmentation {rest!r}; known: "
                                     f"{sorted(self.augmentations)}")
            else:
                raise ValueError(f"strategy {strategy!r}: expected baseline, gen_<generator>, gen_random_noise or "
                                 "std_<augmentation>")
        if self.batch_size < 2 and any(r not in (0.0, 1.0) for r in self.ratios):
            raise ValueError(f"batch_size {self.batch_size} cannot hold both real and generated samples")
        return self


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML; errors name the file and every bad field."""
    return load_yaml_model(path, StudyConfig)
