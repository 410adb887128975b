"""Data strategies: one entry per kind, and the only place that parses a strategy name.

A kind knows how its names look, the leaderboard type of its runs, how a study turns it into a
run's data and training settings, which share of every batch each data group must take, and
therefore the proof rule a run's ``composition.json`` must satisfy. The matrix, the leaderboard,
the formatting and the trainer all ask :func:`parse_strategy`.

Adding a strategy kind is one class here plus one line in :data:`STRATEGY_KINDS` (and, when it
needs its own study section, one field in ``study/spec.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from proveseg.config import DataConfig, TrainConfig
from proveseg.data.records import KINDS, NOISE_SOURCE

if TYPE_CHECKING:  # the study schema imports this module to validate strategy names
    from proveseg.study.spec import StudyConfig

__all__ = [
    "BASELINE",
    "NOISE_CONTROL",
    "STRATEGY_KINDS",
    "RunData",
    "Strategy",
    "StrategyKind",
    "generator_strategy",
    "parse_strategy",
    "prove_shares",
    "strategy_type",
]

BASELINE = "baseline"  # the reference every other strategy's gain is measured against
NOISE_CONTROL = "gen_random_noise"


def generator_strategy(generator: str) -> str:
    """The strategy that adds ``generator``'s images: ``gen_<generator>``."""
    return f"gen_{generator}"


@dataclass(frozen=True)
class RunData:
    """What a strategy sets in a run: its data config and its training config."""

    data: DataConfig
    train: TrainConfig


class StrategyKind:
    """One kind of strategy. Subclasses set the class attributes and override what differs."""

    type: ClassVar[str]  # the leaderboard's type column
    exact: ClassVar[str | None] = None  # a kind with a single name (``baseline``)
    prefix: ClassVar[str | None] = None  # a kind named ``<prefix><argument>`` (``gen_<generator>``)
    uses_ratio: ClassVar[bool] = False  # runs vary over the study's real/generated ratios
    generated: ClassVar[bool] = False  # trains on generated images (ratio ablation, the unused-data warnings)
    noise_control: ClassVar[bool] = False  # the noise control of the noise ablation
    pattern: ClassVar[str]  # how the name looks, for error messages

    def matches(self, name: str) -> str | None:
        """The argument of ``name`` (``''`` for an exact kind), or None when the name is not of this kind."""
        if self.exact is not None:
            return "" if name == self.exact else None
        assert self.prefix is not None
        rest = name.removeprefix(self.prefix)
        return rest if name.startswith(self.prefix) and rest else None

    def check(self, arg: str, study: StudyConfig) -> str | None:
        """Why the study cannot run this strategy (a missing generator, ...), else None."""
        return None

    def configure(self, arg: str, study: StudyConfig, dataset: str, base: RunData) -> RunData:
        """The run's data and training settings, from the study's real-only ``base``."""
        return base

    def shares(self, data: DataConfig) -> dict[str, float]:
        """The share of every batch each data group must take (the groups its runs plan)."""
        return {"real": 1.0 - data.unlabeled_share, "unlabeled": data.unlabeled_share}

    def required_sources(self, arg: str, data: DataConfig) -> list[tuple[str, str]]:
        """(group, source) pairs: the source must be in the config, and consumed when its group has a share."""
        return []

    def config_problem(self, arg: str, data: DataConfig) -> str | None:
        """A kind's own pre-flight rule beyond shares and sources, else None."""
        return None


class Baseline(StrategyKind):
    """Real labeled images only."""

    type, exact, pattern = "Base", BASELINE, BASELINE

    def shares(self, data: DataConfig) -> dict[str, float]:
        return {"real": 1.0}


class Custom(StrategyKind):
    """A hand-written run config (``proveseg train``): the shares are whatever its data config asks for."""

    type, exact, pattern = "Custom", "custom", "custom"

    def check(self, arg: str, study: StudyConfig) -> str | None:
        return "custom is the strategy of hand-written run configs; a study names what its runs train on"

    def shares(self, data: DataConfig) -> dict[str, float]:
        labeled = 1.0 - data.unlabeled_share
        other = "noise" if data.noise is not None else "generated"
        return {"real": labeled * data.real_gen_ratio, other: labeled * (1.0 - data.real_gen_ratio),
                "unlabeled": data.unlabeled_share}


class RandomNoise(StrategyKind):
    """The noise control: the reference generator's entries as uniform noise, labels kept."""

    type, exact, pattern, uses_ratio, noise_control = "Noise", NOISE_CONTROL, NOISE_CONTROL, True, True

    def check(self, arg: str, study: StudyConfig) -> str | None:
        if study.noise_reference not in study.generators:
            return f"gen_random_noise needs noise_reference naming one of {sorted(study.generators)}"
        return None

    def configure(self, arg: str, study: StudyConfig, dataset: str, base: RunData) -> RunData:
        from proveseg.config import NoiseConfig

        assert study.noise_reference is not None
        generated = [study.generators[study.noise_reference].source(study.noise_reference, dataset)]
        data = base.data.model_copy(update={"generated": generated,
                                            "noise": NoiseConfig(reference=study.noise_reference)})
        return RunData(data, base.train)

    def shares(self, data: DataConfig) -> dict[str, float]:
        return {"real": data.real_gen_ratio, "noise": 1.0 - data.real_gen_ratio}

    def required_sources(self, arg: str, data: DataConfig) -> list[tuple[str, str]]:
        return [("noise", NOISE_SOURCE)]


class Generator(StrategyKind):
    """Real images plus one generator's images at an exact per-batch ratio."""

    type, prefix, pattern, uses_ratio, generated = "Gen", "gen_", "gen_<generator>", True, True

    def check(self, arg: str, study: StudyConfig) -> str | None:
        if arg not in study.generators:
            return f"no generator {arg!r}; known: {sorted(study.generators)}"
        return None

    def configure(self, arg: str, study: StudyConfig, dataset: str, base: RunData) -> RunData:
        data = base.data.model_copy(update={"generated": [study.generators[arg].source(arg, dataset)]})
        return RunData(data, base.train)

    def shares(self, data: DataConfig) -> dict[str, float]:
        return {"real": data.real_gen_ratio, "generated": 1.0 - data.real_gen_ratio}

    def required_sources(self, arg: str, data: DataConfig) -> list[tuple[str, str]]:
        return [("generated", arg)]


class StandardAugmentation(StrategyKind):
    """Real images only, with the study's augmentation ``<name>`` instead of the default transforms."""

    type, prefix, pattern = "Std", "std_", "std_<augmentation>"

    def shares(self, data: DataConfig) -> dict[str, float]:
        return {"real": 1.0}

    def check(self, arg: str, study: StudyConfig) -> str | None:
        if arg not in study.augmentations:
            return f"no augmentation {arg!r}; known: {sorted(study.augmentations)}"
        return None

    def configure(self, arg: str, study: StudyConfig, dataset: str, base: RunData) -> RunData:
        aug = study.augmentations[arg]
        return RunData(base.data.model_copy(update={"transforms": aug.transforms()}),
                       base.train.model_copy(update={"strong_view": aug.strong_view}))


class SelfTraining(StrategyKind):
    """Labeled images plus unlabeled images pseudo-labeled by an EMA teacher.

    ``selftrain_<name>`` uses the study's ``selftrain.<name>`` entry; plain ``selftrain`` uses ``selftrain.default``.
    """

    type, prefix, pattern = "ST", "selftrain_", "selftrain or selftrain_<name>"

    def matches(self, name: str) -> str | None:
        return "default" if name == "selftrain" else super().matches(name)

    def check(self, arg: str, study: StudyConfig) -> str | None:
        if arg not in study.selftrain:
            return f"no selftrain entry {arg!r}; known: {sorted(study.selftrain)}"
        return None

    def configure(self, arg: str, study: StudyConfig, dataset: str, base: RunData) -> RunData:
        spec = study.selftrain[arg]
        data = base.data.model_copy(update={"unlabeled": [spec.unlabeled_source(study, dataset)],
                                            "unlabeled_share": spec.unlabeled_share})
        return RunData(data, base.train.model_copy(update={"selftrain": spec.teacher}))

    def required_sources(self, arg: str, data: DataConfig) -> list[tuple[str, str]]:
        return [("unlabeled", src.name) for src in data.unlabeled]

    def config_problem(self, arg: str, data: DataConfig) -> str | None:
        return None if data.unlabeled_share > 0 else "self-training needs data.unlabeled_share > 0"


# Exact names first: ``gen_random_noise`` is not the generator ``random_noise``.
STRATEGY_KINDS: dict[str, StrategyKind] = {
    "baseline": Baseline(),
    "custom": Custom(),
    "gen_random_noise": RandomNoise(),
    "gen": Generator(),
    "std": StandardAugmentation(),
    "selftrain": SelfTraining(),
}


@dataclass(frozen=True)
class Strategy:
    """A parsed strategy name: its kind and argument (generator, augmentation, ...)."""

    name: str
    kind: StrategyKind
    arg: str

    @property
    def type(self) -> str:
        return self.kind.type

    @property
    def uses_ratio(self) -> bool:
        return self.kind.uses_ratio

    def check(self, study: StudyConfig) -> str | None:
        why = self.kind.check(self.arg, study)
        return f"strategy {self.name!r}: {why}" if why else None

    def configure(self, study: StudyConfig, dataset: str, base: RunData) -> RunData:
        return self.kind.configure(self.arg, study, dataset, base)

    def shares(self, data: DataConfig) -> dict[str, float]:
        """Requested share per data group (every group of ``KINDS``; 0 for groups the strategy does not plan)."""
        planned = self.kind.shares(data)
        return {k: float(planned.get(k, 0.0)) for k in KINDS}

    @property
    def generated(self) -> bool:
        return self.kind.generated

    @property
    def canonical(self) -> str:
        """One spelling per strategy (``selftrain`` and ``selftrain_default`` are the same runs)."""
        return self.kind.exact if self.kind.exact is not None else f"{self.kind.prefix}{self.arg}"

    @property
    def noise_control(self) -> bool:
        return self.kind.noise_control

    def plan_problem(self, data: DataConfig) -> str | None:
        """Why a run config cannot produce this strategy's mix (checked before any training), else None.

        The shares the config asks for must be the strategy's, every group with a share needs
        sources, and every source the strategy names must be in the config.
        """
        shares = self.shares(data)
        has = {"real": bool(data.real), "generated": bool(data.generated) and data.noise is None,
               "noise": data.noise is not None, "unlabeled": bool(data.unlabeled)}
        for group, share in shares.items():
            if share > 0 and not has[group]:
                return f"strategy {self.name!r} needs {group} data for its share {share:g}; the config has none"
        asked = STRATEGY_KINDS["custom"].shares(data)
        if any(abs(asked.get(g, 0.0) - shares[g]) > 1e-12 for g in KINDS):
            return (f"strategy {self.name!r} ({self.type}) trains on {_mix(shares)}, but the config asks for "
                    f"{_mix(asked)}")
        names = {"generated": [g.name for g in data.generated], "unlabeled": [u.name for u in data.unlabeled]}
        for group, source in self.kind.required_sources(self.arg, data):
            if group in names and source not in names[group]:
                return f"strategy {self.name!r} needs the {group} source {source!r}; the config has {names[group]}"
        return self.kind.config_problem(self.arg, data)

    def prove(self, data: DataConfig, consumed: Mapping[str, Any]) -> str | None:
        """The proof rule: why ``consumed`` (composition.json's section) is not this strategy's mix, else None."""
        shares = self.shares(data)
        why = prove_shares(shares, consumed.get("per_kind", {}))
        if why:
            return why
        per_source = consumed.get("per_source", {})
        for group, source in self.kind.required_sources(self.arg, data):
            if shares.get(group, 0.0) > 0 and not per_source.get(source, 0):
                return f"no sample of source {source!r} consumed"
        return None


def _mix(shares: Mapping[str, float]) -> str:
    return ", ".join(f"{v:.4g} {k}" for k, v in shares.items() if v) or "nothing"


def prove_shares(shares: Mapping[str, float], per_kind: Mapping[str, int]) -> str | None:
    """Each group's consumed share equals its requested share within one sample (error diffusion's bound).

    A group with share 0 must not have been consumed at all; one with a positive share must have been.
    """
    total = sum(int(v) for v in per_kind.values())
    if total == 0:
        return "consumed no samples"
    for kind in sorted(KINDS, key=lambda k: k == "real"):  # name the extra group, not the real share it displaced
        got, want = int(per_kind.get(kind, 0)), float(shares.get(kind, 0.0))
        if want == 0 and got:
            return f"requested no {kind} samples, consumed {got}"
        if want > 0 and (got == 0 or abs(got / total - want) > 1.0 / total):
            return f"requested {want:.1%} {kind}, consumed {got / total:.1%} ({got} of {total})"
    return None


def parse_strategy(name: str) -> Strategy:
    """The strategy called ``name``; an unknown form lists the valid ones."""
    for kind in STRATEGY_KINDS.values():
        arg = kind.matches(name)
        if arg is not None:
            return Strategy(name, kind, arg)
    raise ValueError(f"strategy {name!r}: expected one of "
                     + ", ".join(k.pattern for k in STRATEGY_KINDS.values()))


def strategy_type(name: str) -> str:
    """The leaderboard type of ``name`` (Base, Gen, Noise, Std, ST); ``?`` for a name of no known kind."""
    try:
        return parse_strategy(name).type
    except ValueError:
        return "?"
