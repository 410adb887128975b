"""What ``run`` would hit, found by ``plan``: sources that do not resolve, stages that leave no data,
generators without rows for a dataset, or with rows for a dataset the study does not have (a
misspelled dataset value would otherwise be filtered out of every run). Each problem names its cause and the fix.

Reads each distinct source once (folder listings, the manifest's dataset column), so it costs
seconds, not a run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from difflib import get_close_matches
from pathlib import Path

from proveseg.data.records import SOURCE_DOMAIN
from proveseg.study.matrix import PlannedRun
from proveseg.study.spec import StudyConfig

__all__ = ["study_problems"]


def _domains_of(source: object) -> tuple[list[str], str | None]:
    """The domains a source's records hold (before its own ``domains`` filter), or why it cannot be read."""
    from proveseg.readers import read_source

    try:
        records = read_source(source.model_copy(update={"domains": None, "take": None}),  # type: ignore[attr-defined]
                              labeled=True).records  # every split of a study dataset needs its labels
    except Exception as exc:  # any reader error: named below with its source
        return [], f"{type(exc).__name__}: {exc}"
    return sorted(set(records.domain.tolist())), None


def _manifest_datasets(path: Path) -> tuple[Counter[str], str | None]:
    """The rows per value of the manifest's dataset column, or why it cannot be read."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return Counter(row.get("dataset") or "" for row in csv.DictReader(fh)), None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return Counter(), f"{type(exc).__name__}: {exc}"


def _unknown_datasets(gen: str, manifest: str, counts: Counter[str], study: StudyConfig) -> str | None:
    """A problem for the manifest's rows whose dataset value is no study dataset (no run would use them)."""
    unknown = {v: n for v, n in sorted(counts.items()) if v not in study.datasets}
    if not unknown or len(unknown) == len(counts):  # no row is of a study dataset: "has no row for" names the values
        return None
    lowered = {name.lower(): name for name in study.datasets}
    hints = []
    for value in unknown:
        near = lowered.get(value.strip().lower()) or next(iter(get_close_matches(value, list(study.datasets), 1)), None)
        if near is not None:
            hints.append(f"{value!r} looks like {near!r}")
    listed = ", ".join(f"{v!r} ({n} row{'s' if n != 1 else ''})" for v, n in unknown.items())
    return (f"generators.{gen}: manifest {manifest} has {sum(unknown.values())} row(s) whose dataset is not a study "
            f"dataset: {listed}; no run would use them (study datasets: {', '.join(sorted(study.datasets))})"
            + (f" ({'; '.join(hints)})" if hints else "") + ": fix the dataset column, or remove the rows")


def _clear_day_stages(study: StudyConfig, stages: set[str], dataset: str) -> list[str]:
    """The selected stages that train ``dataset`` on clear_day images only (all but stage2, where it is planned)."""
    return [s for s in sorted(stages - {"stage2"})
            if s in study.stages and dataset in (study.stages[s].datasets or study.datasets)]


def _split_problems(study: StudyConfig, stages: set[str]) -> list[str]:
    problems = []
    for name, ds in study.datasets.items():
        for split_name, split in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
            if split is None:
                continue
            domains, error = _domains_of(split.model_copy(update={"name": split.name or name}))
            if error:
                hint = (f"; a folder without domain subfolders needs `domain: <name>` (e.g. {SOURCE_DOMAIN})"
                        if "no folder at level" in error else "")
                problems.append(f"datasets.{name}.{split_name}: cannot be read ({error}){hint}")
                continue
            wanted = split.domains
            if wanted and not set(wanted) & set(domains):
                problems.append(f"datasets.{name}.{split_name}: keeps domains {wanted}, but its images are in "
                                f"{domains}: fix domains (or the reader's domain option)")
            if split_name == "train" and _clear_day_stages(study, stages, name) and SOURCE_DOMAIN not in domains:
                problems.append(f"datasets.{name}.train: stage-1 and ablation runs train on {SOURCE_DOMAIN} images "
                                f"only, and this split has none (its domains: {domains}); a folder without domain "
                                f"subfolders needs `domain: {SOURCE_DOMAIN}` (or domain_level)")
    return problems


def _generator_problems(study: StudyConfig, runs: Sequence[PlannedRun]) -> list[str]:
    problems = []
    wanted = {(g.name, str(g.manifest), run.dataset) for run in runs for g in run.config.data.generated}
    read: dict[str, tuple[Counter[str], str | None]] = {}
    for gen, manifest, dataset in sorted(wanted):
        if manifest not in read:
            read[manifest] = _manifest_datasets(Path(manifest))
            if read[manifest][1]:
                problems.append(f"generators.{gen}: manifest {manifest} cannot be read ({read[manifest][1]})")
            elif (unknown := _unknown_datasets(gen, manifest, read[manifest][0], study)) is not None:
                problems.append(unknown)
        names, error = read[manifest]
        if error:
            continue
        if dataset not in names:
            problems.append(f"generators.{gen}: manifest {manifest} has no row for dataset {dataset!r} (its dataset "
                            f"column holds {sorted(names)}): the column must equal the study's dataset name")
    return problems


def _generator_label_map_problems(runs: Sequence[PlannedRun]) -> list[str]:
    """A generator's own label map whose targets are not class ids of a dataset it is planned on."""
    from proveseg.data.classes import resolve_class_set
    from proveseg.data.labelmap import LabelMapError, check_label_map_targets, load_label_map

    problems, seen = [], set()
    for run in runs:
        for gen in run.config.data.generated:
            key = (gen.name, str(gen.label_map), run.dataset)
            if gen.label_map is None or key in seen:
                continue
            seen.add(key)
            try:
                check_label_map_targets(load_label_map(gen.label_map, gen.unmapped),
                                        resolve_class_set(run.config.data.class_set),
                                        f"generators.{gen.name} on dataset {run.dataset!r}")
            except LabelMapError as exc:
                problems.append(str(exc))
    return problems


def study_problems(study: StudyConfig, runs: Sequence[PlannedRun]) -> list[str]:
    """Every problem ``run`` would meet with these runs, each naming its cause and fix; [] when none."""
    return (_split_problems(study, {r.stage for r in runs}) + _generator_problems(study, runs)
            + _generator_label_map_problems(runs))
