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

__all__ = ["STRATEGY_KINDS", "RunData", "Strategy", "StrategyKind", "parse_strategy", "prove_shares",
           "strategy_type"]

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

    def required_sources(self, arg: str, data: DataConfig) -> list[str]:
        """Sources whose samples must appear in the consumption when their group has a share."""
        return []


class Baseline(StrategyKind):
    """Real labeled images only."""

    type, exact, pattern = "Base", "baseline", "baseline"

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

    type, exact, pattern, uses_ratio = "Noise", "gen_random_noise", "gen_random_noise", True

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

    def required_sources(self, arg: str, data: DataConfig) -> list[str]:
        return [NOISE_SOURCE]


class Generator(StrategyKind):
    """Real images plus one generator's images at an exact per-batch ratio."""

    type, prefix, pattern, uses_ratio = "Gen", "gen_", "gen_<generator>", True

    def check(self, arg: str, study: StudyConfig) -> str | None:
        if arg not in study.generators:
            return f"no generator {arg!r}; known: {sorted(study.generators)}"
        return None

    def configure(self, arg: str, study: StudyConfig, dataset: str, base: RunData) -> RunData:
        data = base.data.model_copy(update={"generated": [study.generators[arg].source(arg, dataset)]})
        return RunData(data, base.train)

    def shares(self, data: DataConfig) -> dict[str, float]:
        return {"real": data.real_gen_ratio, "generated": 1.0 - data.real_gen_ratio}

    def required_sources(self, arg: str, data: DataConfig) -> list[str]:
        return [arg]


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
        return RunData(base.data.model_copy(update={"transforms": study.augmentations[arg]}), base.train)


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

    def required_sources(self, arg: str, data: DataConfig) -> list[str]:
        return [src.name for src in data.unlabeled][:1] if data.unlabeled_share > 0 else []


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

    def plan_problem(self, data: DataConfig) -> str | None:
        """Why a run config cannot produce this strategy's mix (checked before any training), else None."""
        shares = self.shares(data)
        has = {"real": bool(data.real), "generated": bool(data.generated) and data.noise is None,
               "noise": data.noise is not None, "unlabeled": bool(data.unlabeled)}
        for group, share in shares.items():
            if share > 0 and not has[group]:
                return f"strategy {self.name!r} needs {group} data for its share {share:g}; the config has none"
        if self.type in ("Base", "Std") and data.real_gen_ratio != 1.0:
            return f"strategy {self.name!r} ({self.type}) trains on real data only, but real_gen_ratio is " \
                   f"{data.real_gen_ratio:g}"
        if self.type in ("Base", "Std", "Gen", "Noise") and data.unlabeled_share > 0:
            return f"strategy {self.name!r} ({self.type}) plans no unlabeled data, but unlabeled_share is " \
                   f"{data.unlabeled_share:g}"
        if self.type == "Gen" and shares["generated"] > 0 and not any(g.name == self.arg for g in data.generated):
            return f"strategy {self.name!r} needs the generated source {self.arg!r}; the config has " \
                   f"{[g.name for g in data.generated]}"
        return None

    def prove(self, data: DataConfig, consumed: Mapping[str, Any]) -> str | None:
        """The proof rule: why ``consumed`` (composition.json's section) is not this strategy's mix, else None."""
        why = prove_shares(self.shares(data), consumed.get("per_kind", {}))
        if why:
            return why
        shares = self.shares(data)
        per_source = consumed.get("per_source", {})
        for source in self.kind.required_sources(self.arg, data):
            if any(v > 0 for k, v in shares.items() if k != "real") and not per_source.get(source, 0):
                return f"no sample of source {source!r} consumed"
        return None


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
