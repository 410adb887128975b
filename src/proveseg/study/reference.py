"""The study is the reference: what each run under a results root should be, and how a run differs from it.

``proveseg run`` stores a copy of every study it runs in ``<results_root>/.studies/<name>.yaml``
(the demo's ``study.yaml`` counts too). The leaderboard and ``plan`` re-expand those studies and
compare each run's ``run.yaml`` with the config the study plans at that path, field by field; a
run nobody planned, or one that differs, is not evidence. Within a cell, runs must share every
setting except those their strategies vary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from proveseg.config import ConfigError, RunConfig, dump_config, load_run_config
from proveseg.configdiff import config_differences
from proveseg.study.spec import StudyConfig, load_study

__all__ = ["StudyReference", "run_differences", "store_study", "study_files"]

STUDY_COPIES = ".studies"


def run_differences(run_dir: Path, expected: RunConfig) -> list[str]:
    """How the ``run.yaml`` in ``run_dir`` differs from ``expected`` ([] when there is none yet)."""
    path = run_dir / "run.yaml"
    if not path.exists():
        return []
    try:
        return config_differences(load_run_config(path), expected)
    except ConfigError as exc:
        return [f"run.yaml does not validate: {exc}".replace("\n", " ")]


def study_files(results_root: Path) -> list[Path]:
    """The study copies stored under a results root (``.studies/*.yaml``, and a ``study.yaml`` beside them)."""
    files = sorted((results_root / STUDY_COPIES).glob("*.yaml"))
    own = results_root / "study.yaml"
    return [*files, own] if own.exists() else files


def store_study(study: StudyConfig) -> Path:
    """Keep the study a run is started from beside its results (rewritten when the study changes)."""
    path = study.results_root / STUDY_COPIES / f"{study.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dump_config(study)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        from proveseg.atomic import atomic_write_text

        atomic_write_text(path, text)
    return path


@dataclass
class StudyReference:
    """The runs the studies of a results root plan, by resolved run directory."""

    planned: dict[Path, tuple[str, RunConfig]] = field(default_factory=dict)
    studies: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    conflicts: dict[Path, str] = field(default_factory=dict)

    @classmethod
    def load(cls, results_root: Path, paths: Iterable[Path] | None = None) -> StudyReference:
        """Expand the given study files (default: the copies stored under ``results_root``)."""
        from proveseg.study.matrix import expand

        ref = cls()
        root = results_root.resolve()
        for path in paths if paths is not None else study_files(results_root):
            try:
                study = load_study(path)
            except ConfigError as exc:
                ref.errors.append(str(exc).splitlines()[0])
                continue
            if study.results_root.resolve() != root:  # a copy moved with its results: plan where they are now
                study = study.model_copy(update={"results_root": results_root})
            try:
                runs = expand(study, apply_top_k=False)
            except (ValueError, KeyError) as exc:
                ref.errors.append(f"{path}: {exc}")
                continue
            ref.studies.append(study.name)
            for run in runs:
                ref._add(run.run_dir.resolve(), study.name, run.config)
        return ref

    def _add(self, run_dir: Path, name: str, cfg: RunConfig) -> None:
        """Plan a path; two studies that plan one path differently make it nobody's (and say so)."""
        other = self.planned.get(run_dir)
        if other is not None and other[0] != name and config_differences(cfg, other[1]):
            self.conflicts[run_dir] = f"studies {other[0]} and {name} plan this path with different settings"
        self.planned[run_dir] = (name, cfg)

    def __bool__(self) -> bool:
        return bool(self.studies)

    def check(self, run_dir: Path, cfg: RunConfig | None) -> str | None:
        """Why the run at ``run_dir`` is not what its study planned there, else None."""
        if run_dir.resolve() in self.conflicts:
            return self.conflicts[run_dir.resolve()]
        entry = self.planned.get(run_dir.resolve())
        if entry is None:
            return f"not a run of study {', '.join(self.studies)}: nothing is planned at this path"
        name, expected = entry
        if cfg is None:
            return f"no run.yaml to check against study {name}"
        diffs = config_differences(cfg, expected)
        if diffs:
            return f"run.yaml differs from study {name}: " + "; ".join(diffs[:4]) + (
                f" (+{len(diffs) - 4} more)" if len(diffs) > 4 else "")
        return None
