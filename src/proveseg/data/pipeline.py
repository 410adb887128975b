"""From a data config to the training loader: sources -> records -> plan -> dataset -> loader.

This is the only way proveseg builds training data, so ``verify-batches``, ``export-samples`` and
the trainer all consume the same code path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from proveseg.config import DataConfig, GeneratedSourceConfig
from proveseg.data.classes import ClassSet, resolve_class_set
from proveseg.data.collate import BatchCollator
from proveseg.data.dataset import SegmentationDataset
from proveseg.data.filecheck import RecordFileError, check_record_files, file_fingerprint
from proveseg.data.labelmap import check_label_map_targets
from proveseg.data.manifest import ManifestError, ManifestReport, validate_manifest
from proveseg.data.plan import BatchPlanSpec, Group, Member, cumulative_counts
from proveseg.data.records import KINDS, NOISE_SOURCE, RecordTable
from proveseg.data.sampler import PlanBatchSampler
from proveseg.data.shmpool import BatchBufferPool, LocalBufferPool, PooledLoader
from proveseg.data.transforms import TransformSpec
from proveseg.readers import SourceConfig, read_source

__all__ = ["LabelPreflightError", "MemberInfo", "TrainingData", "build_training_data", "manifest_failure",
           "preflight_labels"]




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
    file_prints: dict[str, str] = field(default_factory=dict)  # sizes of a sample of each source's files

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

    def loader(self, start: int, stop: int, rank: int = 0, num_workers: int | None = None,
               pin_memory: bool | None = None, device: torch.device | None = None,
               reuse_worker_memory: bool = True) -> Iterable[dict[str, Any]]:
        """Batches ``start..stop-1`` of the plan for ``rank`` (a DataLoader).

        Images arrive uint8 (the consumer normalises on its device, see ``to_model_input``).
        ``pin_memory`` None follows ``data.pin_memory`` (auto: pinned when CUDA is available). With
        ``data.decode_device: cuda`` and a CUDA ``device``, JPEGs are decoded there (``gpudecode``).
        With workers, batches come through reused shared memory (:mod:`proveseg.data.shmpool`):
        clone a batch before handing it to another process, or pass ``reuse_worker_memory=False``.
        """
        cfg = self.config
        workers = cfg.num_workers if num_workers is None else num_workers
        if pin_memory is None:
            pin_memory = cfg.pin_memory == "on" or (cfg.pin_memory == "auto" and torch.cuda.is_available())
        sampler = PlanBatchSampler(self.spec, start, stop, rank)
        options: dict[str, Any] = {"batch_sampler": sampler, "num_workers": workers, "pin_memory": pin_memory,
                                   "persistent_workers": workers > 0,
                                   "prefetch_factor": cfg.prefetch_factor if workers > 0 else None}
        if cfg.decode_device == "cuda" and device is not None and device.type == "cuda":
            if self.records.has_pairs:  # the device decoder ships one view per sample: the pairs would vanish
                raise ValueError("data.decode_device cuda does not load paired samples (image2/label2): "
                                 "use decode_device: cpu for sources with pairs")
            from proveseg.data.gpudecode import DeviceDecodedLoader, EncodedDataset, collate_encoded

            loader = DataLoader(EncodedDataset(self.dataset), collate_fn=collate_encoded, **options)
            return DeviceDecodedLoader(loader, self.dataset.transform, self.dataset.seed, device)
        if workers == 0:
            return DataLoader(self.dataset, collate_fn=BatchCollator(LocalBufferPool()), **options)
        if not reuse_worker_memory:
            return DataLoader(self.dataset, collate_fn=BatchCollator(), **options)
        # a worker holds up to prefetch_factor batches in flight; two more cover the consumer's current one
        pool = BatchBufferPool(workers, options["prefetch_factor"] + 2)
        return PooledLoader(DataLoader(self.dataset, collate_fn=BatchCollator(pool), **options), pool)


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

    Values outside the class set, and ids a source's label map does not cover, raise (naming the
    file) instead of surfacing later as a CUDA device-side assert; so does a label map whose
    targets are not class ids (naming the map). A binary class set whose masks hold only 0 and 255
    is refused, since 255 is the ignore value and the foreground would silently never be learned.
    """
    from proveseg.data.decode import decode_label

    for source in sorted(set(records.source.tolist())):
        rows = np.flatnonzero((records.source == source) & (records.label != ""))
        if not len(rows):
            continue
        label_map = records.label_maps.get(source)
        if label_map is not None:
            check_label_map_targets(label_map, class_set, f"source {source!r}")
        values: set[int] = set()
        for i in rows[np.linspace(0, len(rows) - 1, min(per_source, len(rows))).round().astype(np.int64)]:
            path = str(records.label[i])
            # raises on values outside the class set, and on ids the source's label map does not cover
            values |= set(np.unique(decode_label(path, class_set, label_map=label_map)).tolist())
        if class_set.num_classes <= 2 and values <= {0, 255} and 255 in values:
            raise LabelPreflightError(
                f"source {source!r}: labels such as {records.label[rows[0]]} hold only 0 and 255, but 255 is the "
                f"ignore value and {class_set.name} has {class_set.num_classes} classes: map the foreground to 1")
    if records.label2 is not None:  # a pair's labels too: a bad value would stop training mid-run
        for source in sorted(set(records.source.tolist())):
            rows = np.flatnonzero((records.source == source) & (records.label2 != ""))
            for i in rows[np.linspace(0, len(rows) - 1, min(per_source, len(rows))).round().astype(np.int64)]:
                decode_label(str(records.label2[i]), class_set, label_map=records.label_map_of(i))  # names the file


@dataclass
class _Gathered:
    """What reading the sources collects, in reading order: tables, members, hashes, skips, reports."""

    tables: list[RecordTable] = field(default_factory=list)
    members: list[MemberInfo] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)
    file_prints: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    validation: dict[str, object] = field(default_factory=dict)

    def add(self, group: str, name: str, table: RecordTable, repeat: float) -> Member:
        """Record ``table`` as a member of ``group``; returns the plan's member."""
        self.tables.append(table)
        self.members.append(MemberInfo(group, name, len(table), repeat))
        self.hashes[f"{group}/{name}"] = table.sha256()
        self.file_prints[f"{group}/{name}"] = file_fingerprint(table)
        return Member(name, len(table), repeat)

    def read(self, src: SourceConfig, labeled: bool = False, check_labels: bool = True) -> RecordTable:
        """The source's records (reader, ``domains``, ``take``) whose files pass the header pass (labels too when
        ``check_labels``); its skips, the reader's and the header pass's, are kept by source name.
        ``labeled``: a source without labels is an error (:func:`~proveseg.readers.read_source`)."""
        result = read_source(src, labeled)
        check = check_record_files(result.records, check_labels)
        if check.problems and src.on_invalid == "error":
            raise RecordFileError(check.message(f"source {src.name!r}") + "; fix them or set on_invalid: skip on "
                                  "this source (skips are counted in composition.json)")
        skipped = dict(result.skipped)
        for reason, n in check.by_reason().items():
            skipped[reason] = skipped.get(reason, 0) + n
        if skipped:
            self.skipped[src.name] = skipped
        return check.records


def _real_group(cfg: DataConfig, gathered: _Gathered) -> Group:
    """The labeled real sources."""
    members = [gathered.add("real", src.name, gathered.read(src, labeled=True), src.repeat) for src in cfg.real]
    return Group("real", (1.0 - cfg.unlabeled_share) * cfg.real_gen_ratio, tuple(members))


def _manifest_records(gen: GeneratedSourceConfig, class_set: ClassSet, gathered: _Gathered) -> RecordTable:
    """A generator's validated manifest rows, decoded through its label map; invalid rows raise or are counted,
    per ``on_invalid``."""
    label_map = gen.effective_label_map()
    report = validate_manifest(gen.manifest, gen.name, datasets=gen.datasets, target_domains=gen.target_domains,
                               deep=gen.deep, class_set=class_set, root=gen.root, allow_absolute=gen.allow_absolute,
                               pair=gen.pair, pair_geometry=gen.pair_geometry, label_map=label_map)
    gathered.validation[gen.name] = report.as_dict()["datasets"]
    if report.n_invalid:
        if gen.on_invalid == "error":
            raise ManifestError(manifest_failure(report))
        gathered.skipped[gen.name] = report.rejected_by_reason()
    return report.records.with_label_map(gen.name, label_map)


def _as_noise(table: RecordTable, generator: str) -> RecordTable:
    """The noise control's rows: the reference generator's entries (origin image, label kept) as kind noise;
    their labels decode through the generator's label map."""
    noise = RecordTable.from_columns({
        "image": table.origin, "label": table.label, "dataset": table.dataset, "domain": table.domain,
        "kind": "noise", "source": NOISE_SOURCE, "origin": table.origin}, n=len(table))
    return noise.with_label_map(NOISE_SOURCE, table.label_maps.get(generator))


def _generated_group(cfg: DataConfig, class_set: ClassSet, gathered: _Gathered) -> Group | None:
    """The generated sources, or the noise control in their place; None when neither has a share."""
    share = (1.0 - cfg.unlabeled_share) * (1.0 - cfg.real_gen_ratio)
    if share <= 0 and cfg.noise is None:
        return None
    members = []
    for gen in cfg.generated:
        if cfg.noise is not None and gen.name != cfg.noise.reference:
            continue
        table = _manifest_records(gen, class_set, gathered)
        if cfg.noise is not None:
            members.append(gathered.add("noise", NOISE_SOURCE, _as_noise(table, gen.name), gen.repeat))
        else:
            members.append(gathered.add("generated", gen.name, table, gen.repeat))
    return Group("noise" if cfg.noise is not None else "generated", share, tuple(members))


def _unlabeled_group(cfg: DataConfig, gathered: _Gathered) -> Group | None:
    """The unlabeled sources (their labels dropped); None when there are none and no share."""
    if cfg.unlabeled_share <= 0 and not cfg.unlabeled:
        return None
    members = []
    for src in cfg.unlabeled:
        table = gathered.read(src, check_labels=False)
        pairs: dict[str, np.ndarray | str] = {}  # an unlabeled source keeps its pairs (their labels dropped too)
        if table.image2 is not None and table.pair_geometry is not None:
            pairs = {"image2": table.image2, "label2": "", "pair_geometry": table.pair_geometry}
        unlabeled = RecordTable.from_columns({
            "image": table.image, "label": "", "dataset": table.dataset, "domain": table.domain,
            "kind": "unlabeled", "source": src.name, "origin": "", **pairs}, n=len(table))
        members.append(gathered.add("unlabeled", src.name, unlabeled, src.repeat))
    return Group("unlabeled", cfg.unlabeled_share, tuple(members))


def build_training_data(cfg: DataConfig, world_size: int = 1) -> TrainingData:
    """Read every source, validate manifests, and build the plan and dataset."""
    class_set = resolve_class_set(cfg.class_set)
    gathered = _Gathered()
    groups = [_real_group(cfg, gathered)]  # read in this order: records concatenate in it
    generated = _generated_group(cfg, class_set, gathered)
    unlabeled = _unlabeled_group(cfg, gathered)
    groups += [g for g in (generated, unlabeled) if g is not None]
    spec = BatchPlanSpec(tuple(groups), cfg.batch_size, cfg.seed, world_size)
    records = RecordTable.concat(gathered.tables)
    preflight_labels(records, class_set)
    t = cfg.transforms
    transform = TransformSpec(resize=t.resize, scale=t.scale, crop=t.crop, hflip=t.hflip, jitter=t.jitter,
                              to_float=False)
    dataset = SegmentationDataset(records, class_set, transform, cfg.seed)
    return TrainingData(cfg, class_set, records, spec, dataset, gathered.members, gathered.hashes,
                        gathered.validation, gathered.skipped, gathered.file_prints)
