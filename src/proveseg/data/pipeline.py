"""From a data config to the training loader: sources -> records -> plan -> dataset -> loader.

This is the only way proveseg builds training data, so ``verify-batches``, ``export-samples`` and
the trainer all consume the same code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import DataLoader, default_collate

from proveseg.config import DataConfig, RealSourceConfig
from proveseg.data.classes import ClassSet, resolve_class_set
from proveseg.data.dataset import SegmentationDataset
from proveseg.data.manifest import ManifestError, ManifestReport, validate_manifest
from proveseg.data.plan import BatchPlanSpec, Group, Member, cumulative_counts
from proveseg.data.readers import read_dataset
from proveseg.data.records import KINDS, RecordTable
from proveseg.data.sampler import PlanBatchSampler
from proveseg.data.transforms import TransformSpec

__all__ = ["LabelPreflightError", "MemberInfo", "TrainingData", "build_training_data", "manifest_failure",
           "preflight_labels"]

NOISE_SOURCE = "random_noise"


@dataclass(frozen=True)
class MemberInfo:
    group: str
    name: str
    samples: int
    repeats: float

    @property
    def effective(self) -> float:
        return self.samples * self.repeats


@dataclass
class TrainingData:
    """Everything the loader needs, plus what the audit must record about it."""

    config: DataConfig
    class_set: ClassSet
    records: RecordTable
    spec: BatchPlanSpec
    dataset: SegmentationDataset
    members: list[MemberInfo]
    hashes: dict[str, str]
    validation: dict[str, object]
    skipped: dict[str, dict[str, int]]

    def group_sizes(self) -> dict[str, int]:
        return {g.name: g.size for g in self.spec.groups}

    def expected_composition(self, start: int, stop: int) -> np.ndarray:
        """Per-batch requested counts by kind (batches x KINDS) for one rank."""
        counts = np.diff(cumulative_counts(self.spec, np.arange(start, stop + 1)), axis=0)
        out = np.zeros((stop - start, len(KINDS)), np.int64)
        for g, group in enumerate(self.spec.groups):
            out[:, KINDS.index(group.name)] += counts[:, g]
        return out

    def requested(self) -> dict[str, object]:
        """The request half of ``composition.json``."""
        return {
            "batch_size": self.spec.batch_size,
            "world_size": self.spec.world_size,
            "real_gen_ratio": self.config.real_gen_ratio,
            "seed": self.spec.seed,
            "groups": {g.name: {"share": g.share, "samples": g.size,
                                "per_batch": list(self.spec.counts_per_batch()[i])}
                       for i, g in enumerate(self.spec.groups)},
            "members": [{"group": m.group, "name": m.name, "samples": m.samples, "repeats": m.repeats,
                         "effective": m.effective} for m in self.members],
            "skipped": self.skipped,
        }

    def loader(self, start: int, stop: int, rank: int = 0, num_workers: int | None = None) -> DataLoader:
        """DataLoader over batches ``start..stop-1`` of the plan for ``rank``."""
        workers = self.config.num_workers if num_workers is None else num_workers
        sampler = PlanBatchSampler(self.spec, start, stop, rank)
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=workers, collate_fn=default_collate,
                          persistent_workers=False)


def manifest_failure(report: ManifestReport) -> str:
    """One message naming the manifest, counts by reason and the first rejected rows."""
    reasons = report.rejected_by_reason()
    first = "; ".join(f"row {row}: {reason} ({detail})" for row, reason, detail in report.rejected_rows[:3])
    summary = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    return (f"{report.path}: {report.n_invalid} invalid row(s) [{summary}]; {first}. "
            "Fix them or set on_invalid: skip (skips are counted in composition.json)")


class LabelPreflightError(ValueError):
    """Label files that would train the wrong thing (or crash a CUDA kernel), found before training."""


def preflight_labels(records: RecordTable, class_set: ClassSet, per_source: int = 8) -> None:
    """Decode a few labels of every source, evenly spread, before any training step.

    Values outside the class set raise (naming the file) instead of surfacing later as a CUDA
    device-side assert; a binary class set whose masks hold only 0 and 255 is refused, since 255 is
    the ignore value and the foreground would silently never be learned.
    """
    from proveseg.data.decode import decode_label

    for source in sorted(set(records.source.tolist())):
        rows = np.flatnonzero((records.source == source) & (records.label != ""))
        if not len(rows):
            continue
        values: set[int] = set()
        for i in rows[np.linspace(0, len(rows) - 1, min(per_source, len(rows))).round().astype(np.int64)]:
            path = str(records.label[i])
            values |= set(np.unique(decode_label(path, class_set)).tolist())  # raises on values outside
        if class_set.num_classes <= 2 and values <= {0, 255} and 255 in values:
            raise LabelPreflightError(
                f"source {source!r}: labels such as {records.label[rows[0]]} hold only 0 and 255, but 255 is the "
                f"ignore value and {class_set.name} has {class_set.num_classes} classes: map the foreground to 1")


def build_training_data(cfg: DataConfig, world_size: int = 1) -> TrainingData:
    """Read every source, validate manifests, and build the plan and dataset."""
    class_set = resolve_class_set(cfg.class_set)
    tables: list[RecordTable] = []
    members: list[MemberInfo] = []
    hashes: dict[str, str] = {}
    skipped: dict[str, dict[str, int]] = {}
    validation: dict[str, object] = {}

    def add(group: str, name: str, table: RecordTable, repeat: float) -> Member:
        tables.append(table)
        members.append(MemberInfo(group, name, len(table), repeat))
        hashes[f"{group}/{name}"] = table.sha256()
        return Member(name, len(table), repeat)

    def read(src: RealSourceConfig) -> RecordTable:
        result = read_dataset(src.reader, src.root, src.name, src.on_invalid, **src.reader_options())
        table = result.records
        if src.domains is not None:
            table = table.take(np.isin(table.domain, src.domains))
        if src.take is not None:
            order = np.random.default_rng([src.take_seed, 0x7A4E]).permutation(len(table))
            lo, hi = (round(f * len(table)) for f in src.take)
            table = table.take(np.sort(order[lo:hi]))
        if result.skipped:
            skipped[src.name] = dict(result.skipped)
        return table

    labeled_share = 1.0 - cfg.unlabeled_share
    real_members = [add("real", src.name, read(src), src.repeat) for src in cfg.real]
    groups = [Group("real", labeled_share * cfg.real_gen_ratio, tuple(real_members))]
    other_share = labeled_share * (1.0 - cfg.real_gen_ratio)
    used = [g for g in cfg.generated if cfg.noise is None or g.name == cfg.noise.reference]
    if other_share > 0 or cfg.noise is not None:
        gen_members = []
        for gen in used:
            report = validate_manifest(gen.manifest, gen.name, datasets=gen.datasets,
                                       target_domains=gen.target_domains, deep=gen.deep, class_set=class_set,
                                       root=gen.root, allow_absolute=gen.allow_absolute)
            validation[gen.name] = report.as_dict()["datasets"]
            if report.n_invalid:
                if gen.on_invalid == "error":
                    raise ManifestError(manifest_failure(report))
                skipped[gen.name] = report.rejected_by_reason()
            table = report.records
            if cfg.noise is not None:
                table = RecordTable.from_columns({
                    "image": table.origin, "label": table.label, "dataset": table.dataset, "domain": table.domain,
                    "kind": "noise", "source": NOISE_SOURCE, "origin": table.origin}, n=len(table))
                gen_members.append(add("noise", NOISE_SOURCE, table, gen.repeat))
            else:
                gen_members.append(add("generated", gen.name, table, gen.repeat))
        groups.append(Group("noise" if cfg.noise is not None else "generated", other_share, tuple(gen_members)))
    if cfg.unlabeled_share > 0 or cfg.unlabeled:
        unlabeled_members = []
        for src in cfg.unlabeled:
            src_table = read(src)
            unlabeled = RecordTable.from_columns({
                "image": src_table.image, "label": "", "dataset": src_table.dataset, "domain": src_table.domain,
                "kind": "unlabeled", "source": src.name, "origin": ""}, n=len(src_table))
            unlabeled_members.append(add("unlabeled", src.name, unlabeled, src.repeat))
        groups.append(Group("unlabeled", cfg.unlabeled_share, tuple(unlabeled_members)))
    spec = BatchPlanSpec(tuple(groups), cfg.batch_size, cfg.seed, world_size)
    records = RecordTable.concat(tables)
    preflight_labels(records, class_set)
    t = cfg.transforms
    transform = TransformSpec(resize=t.resize, scale=t.scale, crop=t.crop, hflip=t.hflip, jitter=t.jitter)
    dataset = SegmentationDataset(records, class_set, transform, cfg.seed)
    return TrainingData(cfg, class_set, records, spec, dataset, members, hashes, validation, skipped)
